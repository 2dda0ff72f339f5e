"""The checked value types of the pod settings: names, label keys, per-server text, quantities.

Shared by :mod:`.pod_settings` and :mod:`.pod_affinity`; each type is a pydantic annotation that
full-matches its pattern and says, on failure, what is allowed. ``{user}`` and ``{server}`` are
the only placeholders (:func:`fill_placeholders` replaces them as plain text). Pure.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from .names import is_dns1123_label, is_label_value
from .quantities import parse_cpu, parse_memory

__all__ = [
    "CONTAINER_NAME",
    "OUR_LABEL_KEYS",
    "OUR_PREFIX",
    "Bytes",
    "Command",
    "ContainerName",
    "EnvName",
    "LabelValue",
    "Millicores",
    "PerServerPath",
    "PerServerText",
    "PortName",
    "PullPolicy",
    "QualifiedName",
    "ResourceName",
    "StrictModel",
    "Weight",
    "check",
    "fill_placeholders",
    "is_dns_subdomain",
    "is_qualified_name",
]

#: The prefix of our own labels and annotations; pod settings may not use it.
OUR_PREFIX = "einfra-spawner/"
#: The other labels the renderer sets on every pod; pod settings may not set them either.
OUR_LABEL_KEYS = frozenset(
    {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/managed-by",
    }
)
#: The name of the notebook container in the rendered pod.
CONTAINER_NAME = "notebook"

_PLACEHOLDER = re.compile(r"\{(user|server)\}")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


# --- the checks, as pydantic annotations ------------------------------------------------------


def check(test: Any, what: str) -> Any:
    """An annotation that refuses a string ``test`` rejects, saying it "must be ``what``"."""

    def run(value: Any) -> Any:
        if isinstance(value, str) and not test(value):
            raise ValueError(f"must be {what}")
        return value

    return BeforeValidator(run)


def is_dns_subdomain(text: str) -> bool:
    """A DNS-1123 subdomain: the names of secrets, service accounts and priority classes."""
    return len(text) <= 253 and _DNS_SUBDOMAIN.fullmatch(text) is not None


def is_qualified_name(text: str) -> bool:
    """A Kubernetes qualified name (label and annotation keys): ``[prefix/]name``."""
    prefix, slash, name = text.rpartition("/")
    if slash and not (prefix and is_dns_subdomain(prefix)):
        return False
    return 0 < len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None


def _placeholders_only(value: str) -> str:
    rest = _PLACEHOLDER.sub("", value)
    if "{" in rest or "}" in rest:
        raise ValueError(
            "only {user} and {server} may stand in braces (they are replaced by the user's and the "
            "server's DNS-safe labels); no other brace is allowed"
        )
    return value


def fill_placeholders(text: str, user_label: str, server_label: str) -> str:
    """``text`` with ``{user}`` and ``{server}`` replaced as plain text, in one pass (a label can
    never bring in a placeholder of its own: labels are DNS-safe)."""
    return _PLACEHOLDER.sub(lambda match: user_label if match[1] == "user" else server_label, text)


def _quantity(parse: Any, what: str) -> Any:
    def run(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"must be {what}")
        try:
            parsed = int(parse(value))
        except ValueError as exc:
            raise ValueError(f"must be {what} ({exc})") from None
        if parsed <= 0:
            raise ValueError(f"must be {what}, more than zero")
        return parsed

    return BeforeValidator(run)


_QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {
            "type": "string",
            "pattern": r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$",
        },
    ]
}

ResourceName = Annotated[
    StrictStr,
    check(is_dns_subdomain, "a DNS-1123 subdomain: a-z, 0-9, '-' and '.', at most 253 characters"),
    Field(json_schema_extra={"pattern": f"^{_DNS_SUBDOMAIN.pattern}$", "maxLength": 253}),
]
ContainerName = Annotated[
    StrictStr, check(is_dns1123_label, "a DNS-1123 label: a-z, 0-9 and '-', at most 63 characters")
]
QualifiedName = Annotated[
    StrictStr, check(is_qualified_name, "a Kubernetes qualified name such as example.org/team")
]
LabelValue = Annotated[StrictStr, check(is_label_value, "a label value (at most 63 characters)")]
EnvName = Annotated[
    StrictStr, check(lambda t: len(t) <= 255 and _ENV_NAME.fullmatch(t), "an environment variable name")
]
PerServerText = Annotated[StrictStr, Field(max_length=32768), AfterValidator(_placeholders_only)]
PerServerPath = Annotated[
    StrictStr,
    check(lambda t: t.startswith("/") and "\x00" not in t, "an absolute path starting with '/'"),
    Field(max_length=4096),
    AfterValidator(_placeholders_only),
]
Command = tuple[Annotated[StrictStr, Field(max_length=32768)], ...]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
# One schema object each: some pydantic releases (2.10) write a field's default into the object
# given to WithJsonSchema, which would then show up under every other field that shares it.
Millicores = Annotated[
    int,
    _quantity(parse_cpu, "a CPU count such as 0.5 or '100m'"),
    WithJsonSchema(copy.deepcopy(_QUANTITY_SCHEMA)),
]
Bytes = Annotated[
    int, _quantity(parse_memory, "a size such as '256Mi'"), WithJsonSchema(copy.deepcopy(_QUANTITY_SCHEMA))
]
Weight = Annotated[StrictInt, Field(ge=1, le=100)]


class StrictModel(BaseModel):
    """Base of the pod settings' models: unknown keys are refused; frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


PortName = Annotated[
    StrictStr, check(lambda t: len(t) <= 15 and _PORT_NAME.fullmatch(t), "a port name (an IANA service name)")
]
