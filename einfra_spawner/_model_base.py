"""The shared parts of the profile file models: the strict base model, the checked string and
quantity types, and the helpers the option models use. Private: :mod:`einfra_spawner.models` is
the public surface.

Each rule is defined once, here, and used by the profile models and the pod settings alike
(:mod:`.pod_fields` builds the pod settings' types from these checks), so this module sits below
both and imports nothing of the package but names and quantities.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    model_validator,
)

from .names import DNS1123_LABEL, is_label_value
from .quantities import parse_cpu, parse_memory

#: The GPU choice id that means "no GPU".
NO_GPU = "none"
#: Where a profile's shared memory (``shm``) is mounted.
SHM_PATH = "/dev/shm"  # noqa: S108  # a mount point in the container, not a temporary file

_SLUG = DNS1123_LABEL  # a slug is a DNS-1123 label, at most 40 characters
_CHOICE_ID = re.compile(r"[a-z0-9]([-a-z0-9._]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GROUP = re.compile(r"[^\s/][^/]{0,254}")
_EXTENDED_RESOURCE = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)
_LABEL_KEY_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ABS_PATH = re.compile(r"/[^\x00]*")

_QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {
            "type": "string",
            "pattern": r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$",
        },
    ]
}


def _check(test: Callable[[str], object], what: str) -> Any:
    """An annotation that refuses a string ``test`` rejects, saying it "must be ``what``"."""

    def run(value: Any) -> Any:
        if isinstance(value, str) and not test(value):
            raise ValueError(f"must be {what}")
        return value

    return BeforeValidator(run)


def _full(pattern: re.Pattern[str], what: str, max_len: int) -> Any:
    """An annotation that refuses a string longer than ``max_len`` or not matching ``pattern``."""
    return _check(lambda text: len(text) <= max_len and pattern.fullmatch(text) is not None, what)


def is_dns_subdomain(text: str) -> bool:
    """A DNS-1123 subdomain: the names of secrets, service accounts and priority classes."""
    return len(text) <= 253 and _DNS_SUBDOMAIN.fullmatch(text) is not None


def _label_key_problem(key: str) -> str | None:
    """What keeps ``key`` from being a Kubernetes qualified name, ``[prefix/]name`` (the rule of
    label and annotation keys); ``None``: nothing."""
    prefix, slash, name = key.rpartition("/")
    if not (0 < len(name) <= 63 and _LABEL_KEY_NAME.fullmatch(name)):
        return f"label key {key!r} is not valid"
    # A slash needs a prefix before it: "/name" is not a key.
    if slash and not is_dns_subdomain(prefix):
        return f"label key prefix {prefix!r} is not a DNS subdomain"
    return None


def is_qualified_name(text: str) -> bool:
    """A Kubernetes qualified name (label and annotation keys): ``[prefix/]name``."""
    return _label_key_problem(text) is None


def _quantity(parse: Any, what: str) -> Any:
    def check(value: Any) -> int:
        try:
            return int(parse(value))
        except ValueError as exc:
            raise ValueError(f"must be {what} ({exc})") from None

    return BeforeValidator(check)


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: the schema is a dict
class FreshJsonSchema:
    """Like pydantic's ``WithJsonSchema``, but a new copy of the schema for every field: some
    pydantic releases (2.10) write a field's default into the object they are given, which would
    then show up under every other field of the same type."""

    schema: dict[str, Any]

    def __get_pydantic_json_schema__(self, _core_schema: Any, _handler: Any) -> dict[str, Any]:
        return copy.deepcopy(self.schema)


Slug = Annotated[
    StrictStr,
    _full(_SLUG, "a lower-case DNS label: a-z, 0-9 and '-', at most 40 characters", 40),
    Field(json_schema_extra={"pattern": f"^{_SLUG.pattern}$", "maxLength": 40}),
]
ChoiceId = Annotated[
    StrictStr,
    _full(_CHOICE_ID, "a lower-case id: a-z, 0-9, '-', '.' and '_', at most 40 characters", 40),
    Field(json_schema_extra={"pattern": "^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$", "maxLength": 40}),
]
GroupName = Annotated[
    StrictStr, _full(_GROUP, "a JupyterHub group name (no '/', at most 255 characters)", 255)
]
Groups = tuple[GroupName, ...]
Text = Annotated[StrictStr, Field(max_length=500)]
AbsPath = Annotated[
    StrictStr, _full(_ABS_PATH, "an absolute path starting with '/'", 4096), Field(min_length=1)
]
EnvName = Annotated[StrictStr, _full(_ENV_NAME, "an environment variable name", 255)]
Millicores = Annotated[
    int,
    _quantity(parse_cpu, "a CPU count such as 2, 0.5 or '500m'"),
    FreshJsonSchema(_QUANTITY_SCHEMA),
]
Bytes = Annotated[
    int,
    _quantity(parse_memory, "a size such as '8Gi' or '512Mi'"),
    FreshJsonSchema(_QUANTITY_SCHEMA),
]
Price = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)]


def _check_label_key(key: str) -> str:
    problem = _label_key_problem(key)
    if problem is not None:
        raise ValueError(problem)
    return key


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        _check_label_key(key)
        if not is_label_value(value):
            raise ValueError(f"label value {value!r} of {key!r} is not valid")
    return labels


class StrictModel(BaseModel):
    """Base of every file model, the pod settings' included: unknown keys are refused; frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class _Strict(StrictModel):
    """Base of the profile file models (the pod settings excepted): a scalar may stand for the
    whole."""

    #: A JSON Schema for the scalar short form that ``_from_scalar`` accepts, if any.
    scalar_schema: ClassVar[dict[str, Any] | None] = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return cls._from_scalar(data)

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return data


def _ids_unique(items: tuple[Any, ...], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"{what} id {item.id!r} is given twice")
        seen.add(item.id)


def _default_is_open(option: Any, what: str) -> None:
    """The default of an option must exist and be open to everyone admitted to the profile."""
    # Emptiness is checked here rather than with min_length, which pydantic also reports when an
    # element is invalid, doubling the message.
    if not option.choices:
        raise ValueError(f"at least one {what} choice is needed")
    ids = [c.id for c in option.choices]
    if option.default is not None and option.default not in ids:
        raise ValueError(f"default {option.default!r} is not one of the {what} choices: {ids}")
    default = option.default_choice()
    if default.groups:
        raise ValueError(
            f"the default {what} {default.id!r} is limited to groups {list(default.groups)}; "
            "a default must be open to everyone admitted to the profile"
        )
