"""The profile file models: strict, frozen pydantic models that also emit the JSON Schema.

An instance folder holds ``instance.yaml`` (:class:`Instance`) and one file per profile
(:class:`Profile`). Every option of a profile is either fixed or selectable: a scalar in the file is
a fixed value (one choice), a mapping with ``choices`` is a selection with a default. Choices, custom
images, mounts and whole profiles can be limited to JupyterHub groups.

Quantities are parsed once here (CPU to millicores, memory and storage to bytes), so resolution and
rendering compare integers. Pure: these models read nothing but what they are given.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .names import is_label_value
from .quantities import parse_cpu, parse_memory

__all__ = [
    "IMAGE_REFERENCE",
    "NO_GPU",
    "CpuChoice",
    "CpuOption",
    "CsiSource",
    "CustomImage",
    "GpuChoice",
    "GpuOption",
    "GpuType",
    "HomeOption",
    "ImageChoice",
    "ImageOption",
    "Instance",
    "MemoryChoice",
    "MemoryOption",
    "Mount",
    "NfsSource",
    "PodSecurity",
    "Prices",
    "Profile",
    "PvcSource",
    "Quotas",
    "Toleration",
]

#: The GPU choice id that means "no GPU".
NO_GPU = "none"

_SLUG = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_CHOICE_ID = re.compile(r"[a-z0-9]([-a-z0-9._]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GROUP = re.compile(r"[^\s/][^/]{0,254}")
_EXTENDED_RESOURCE = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)
_LABEL_KEY_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ABS_PATH = re.compile(r"/[^\x00]*")

#: A container image reference (registry/path:tag@digest), full-matched and at most 255 characters.
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
#: A container image reference (registry/path:tag@digest), full-matched and at most 255
#: characters. As in Docker, a first component is a registry only with a '.', a port or
#: "localhost"; the path is lower case.
IMAGE_REFERENCE = re.compile(
    rf"(?:(?:localhost|{_HOST}(?:\.{_HOST})+|{_HOST}(?=:[0-9]))(?::[0-9]+)?/)?"
    rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)

_QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {
            "type": "string",
            "pattern": r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$",
        },
    ]
}


def _full(pattern: re.Pattern[str], what: str, max_len: int) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and (len(value) > max_len or not pattern.fullmatch(value)):
            raise ValueError(f"must be {what}")
        return value

    return BeforeValidator(check)


def _quantity(parse: Any, what: str) -> Any:
    def check(value: Any) -> int:
        try:
            return int(parse(value))
        except ValueError as exc:
            raise ValueError(f"must be {what} ({exc})") from None

    return BeforeValidator(check)


Slug = Annotated[
    StrictStr,
    _full(_SLUG, "a lower-case DNS label: a-z, 0-9 and '-', at most 40 characters", 40),
    Field(json_schema_extra={"pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 40}),
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
    WithJsonSchema(_QUANTITY_SCHEMA),
]
Bytes = Annotated[
    int,
    _quantity(parse_memory, "a size such as '8Gi' or '512Mi'"),
    WithJsonSchema(_QUANTITY_SCHEMA),
]
Price = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)]


def _check_label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if not (0 < len(name) <= 63 and _LABEL_KEY_NAME.fullmatch(name)):
        raise ValueError(f"label key {key!r} is not valid")
    if prefix and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"label key prefix {prefix!r} is not a DNS subdomain")
    return key


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        _check_label_key(key)
        if not is_label_value(value):
            raise ValueError(f"label value {value!r} of {key!r} is not valid")
    return labels


class _Strict(BaseModel):
    """Base of every file model: unknown keys are refused; a scalar may stand for the whole."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

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


# --- images ------------------------------------------------------------------------------------


class ImageChoice(_Strict):
    """One image to choose from."""

    id: ChoiceId
    image: Annotated[
        StrictStr,
        _full(IMAGE_REFERENCE, "a container image reference such as 'repo/name:tag'", 255),
    ]
    display_name: Text | None = None
    description: Text | None = None
    groups: Groups = ()


class CustomImage(_Strict):
    """Custom images: any reference that matches ``pattern`` as a whole."""

    pattern: Annotated[StrictStr, Field(min_length=1, max_length=1000)]
    message: Text | None = None
    groups: Groups = ()

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return value

    def matches(self, reference: str) -> bool:
        """Whether ``reference`` matches the pattern as a whole (never as a prefix)."""
        return re.fullmatch(self.pattern, reference) is not None


class ImageOption(_Strict):
    """The image: a fixed reference (a scalar), or choices with a default and maybe custom images."""

    scalar_schema = {"type": "string", "description": "a fixed image reference"}

    choices: tuple[ImageChoice, ...]
    default: ChoiceId | None = None
    custom: CustomImage | None = None

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return {"choices": [{"id": "default", "image": data}]} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self) -> ImageOption:
        _ids_unique(self.choices, "image")
        _default_is_open(self, "image")
        return self

    def default_choice(self) -> ImageChoice:
        """The choice taken when a request names no image."""
        return next((c for c in self.choices if c.id == self.default), self.choices[0])

    @property
    def fixed(self) -> bool:
        """Nothing to choose: one image and no custom images."""
        return len(self.choices) == 1 and self.custom is None


# --- CPU and memory ----------------------------------------------------------------------------


class CpuChoice(_Strict):
    """One CPU limit to choose from, in millicores (written as 2, 0.5 or '500m')."""

    scalar_schema = _QUANTITY_SCHEMA

    value: Millicores
    groups: Groups = ()

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return data if isinstance(data, dict) else {"value": data}

    @property
    def id(self) -> str:
        return str(self.value)


class MemoryChoice(_Strict):
    """One memory limit to choose from, in bytes (written as '8Gi')."""

    scalar_schema = _QUANTITY_SCHEMA

    value: Bytes
    groups: Groups = ()

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return data if isinstance(data, dict) else {"value": data}

    @property
    def id(self) -> str:
        return str(self.value)


class _QuantityOption(_Strict):
    scalar_schema = {
        "anyOf": [_QUANTITY_SCHEMA, {"type": "array", "items": _QUANTITY_SCHEMA, "minItems": 1}],
        "description": "a fixed value, or a list of choices (the first is the default)",
    }

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"choices": data}
        return data if isinstance(data, dict) else {"choices": [data]}


def _check_quantities(option: CpuOption | MemoryOption, what: str) -> None:
    if not option.choices:
        raise ValueError(f"at least one {what} choice is needed")
    _ids_unique(option.choices, what)
    if option.guarantee is not None and option.guarantee > min(c.value for c in option.choices):
        raise ValueError(
            f"the {what} guarantee is larger than the smallest {what} choice; "
            "a limit must never be below the guarantee"
        )
    ids = [c.value for c in option.choices]
    if option.default is not None and option.default not in ids:
        raise ValueError(f"default {option.default!r} is not one of the {what} choices")
    if option.default_choice().groups:
        raise ValueError(
            f"the default {what} is limited to groups; "
            "a default must be open to everyone admitted to the profile"
        )


class CpuOption(_QuantityOption):
    """CPU: the choice is the limit; ``guarantee`` is the request (the limit itself when absent)."""

    choices: tuple[CpuChoice, ...]
    default: Millicores | None = None
    guarantee: Millicores | None = None

    @model_validator(mode="after")
    def _check(self) -> CpuOption:
        _check_quantities(self, "cpu")
        return self

    def default_choice(self) -> CpuChoice:
        """The choice taken when a request names no CPU count."""
        return next((c for c in self.choices if c.value == self.default), self.choices[0])

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1


class MemoryOption(_QuantityOption):
    """Memory: the choice is the limit; ``guarantee`` is the request (the limit itself when absent)."""

    choices: tuple[MemoryChoice, ...]
    default: Bytes | None = None
    guarantee: Bytes | None = None

    @model_validator(mode="after")
    def _check(self) -> MemoryOption:
        _check_quantities(self, "memory")
        return self

    def default_choice(self) -> MemoryChoice:
        """The choice taken when a request names no memory size."""
        return next((c for c in self.choices if c.value == self.default), self.choices[0])

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1


# --- GPUs --------------------------------------------------------------------------------------


class Toleration(_Strict):
    """A Kubernetes toleration, as in a pod spec but with snake_case keys."""

    key: StrictStr | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: StrictStr | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Toleration:
        if self.key is not None:
            _check_label_key(self.key)
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists takes no value")
        return self


class GpuType(_Strict):
    """A kind of GPU on the cluster (instance-wide): how to request it and where it runs."""

    display_name: Text
    resource: Annotated[
        StrictStr,
        _full(_EXTENDED_RESOURCE, "an extended resource name such as nvidia.com/gpu", 253),
    ]
    node_selector: dict[StrictStr, StrictStr] = {}
    tolerations: tuple[Toleration, ...] = ()
    description: Text | None = None

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)


class GpuChoice(_Strict):
    """A GPU type offered by a profile (``none`` for no GPU), with its count and, optionally, the
    CPU and memory that come with it (which then replace the profile's)."""

    scalar_schema = {"type": "string", "description": "a GPU type id, or 'none'"}

    id: ChoiceId
    max_count: Annotated[StrictInt, Field(ge=1, le=64)] = 1
    groups: Groups = ()
    cpu: CpuOption | None = None
    memory: MemoryOption | None = None

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return {"id": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self) -> GpuChoice:
        if self.id == NO_GPU and self.max_count != 1:
            raise ValueError("'none' takes no max_count")
        return self


class GpuOption(_Strict):
    """The GPU: a fixed type (a scalar), or choices with a default (``none`` when absent)."""

    scalar_schema = {
        "anyOf": [
            {"type": "string", "description": "a fixed GPU type id, or 'none'"},
            {"type": "array", "description": "choices; the first is the default", "minItems": 1},
        ]
    }

    choices: tuple[GpuChoice, ...] = (GpuChoice(id=NO_GPU),)
    default: ChoiceId | None = None

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"choices": data}
        return {"choices": [data]} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self) -> GpuOption:
        _ids_unique(self.choices, "gpu")
        _default_is_open(self, "gpu")
        return self

    def default_choice(self) -> GpuChoice:
        return next((c for c in self.choices if c.id == self.default), self.choices[0])

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1 and self.choices[0].max_count == 1


# --- storage -----------------------------------------------------------------------------------


class HomeOption(_Strict):
    """A persistent home per server. ``reset``: ``never``; ``allowed`` (the user may ask for an
    empty home when starting); ``always`` (a fresh home at every start, as for a course)."""

    size: Bytes
    storage_class: Annotated[StrictStr, _full(_DNS_SUBDOMAIN, "a storage class name", 253)] | None = None
    mount_path: AbsPath = "/home/jovyan"
    access_modes: tuple[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"], ...] = (
        "ReadWriteOnce",
    )
    reset: Literal["never", "allowed", "always"] = "never"


class PvcSource(_Strict):
    """An existing PersistentVolumeClaim (e.g. a group's project directory)."""

    claim_name: Annotated[StrictStr, _full(_DNS_SUBDOMAIN, "a PVC name", 253)]


class NfsSource(_Strict):
    """An NFS export."""

    server: Annotated[StrictStr, Field(min_length=1, max_length=253)]
    path: AbsPath


class CsiSource(_Strict):
    """A CSI volume (e.g. an sshfs driver for remote research storage). ``secret`` names the
    per-user secret with the credentials; ``{user}`` in it stands for the user's DNS-safe label,
    replaced as plain text (never evaluated as a template)."""

    driver: Annotated[StrictStr, _full(_DNS_SUBDOMAIN, "a CSI driver name", 253)]
    volume_attributes: dict[StrictStr, StrictStr] = {}
    secret: StrictStr | None = None
    fs_type: StrictStr | None = None

    @field_validator("secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None:
            sample = value.replace("{user}", "u-sample-abcdefghij")
            if len(sample) > 253 or not _DNS_SUBDOMAIN.fullmatch(sample):
                raise ValueError(
                    "must be a secret name (a DNS subdomain) in which {user} may stand for the user"
                )
        return value


class Mount(_Strict):
    """An extra volume: fixed for everyone in ``groups``, or ``optional`` (chosen in the request)."""

    id: Annotated[StrictStr, _full(_SLUG, "a lower-case DNS label of at most 40 characters", 40)]
    display_name: Text | None = None
    description: Text | None = None
    groups: Groups = ()
    optional: StrictBool = False
    default: StrictBool = False
    mount_path: AbsPath
    sub_path: StrictStr | None = None
    read_only: StrictBool = False
    pvc: PvcSource | None = None
    nfs: NfsSource | None = None
    csi: CsiSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Mount:
        sources = [s for s in (self.pvc, self.nfs, self.csi) if s is not None]
        if len(sources) != 1:
            raise ValueError("a mount needs exactly one of pvc, nfs or csi")
        if self.default and not self.optional:
            raise ValueError("default applies only to optional mounts")
        if self.sub_path is not None and (self.sub_path.startswith("/") or ".." in self.sub_path):
            raise ValueError("sub_path must be relative and must not contain '..'")
        return self


# --- profiles and instances --------------------------------------------------------------------


class Profile(_Strict):
    """One profile: what a user can start, and what they can choose."""

    slug: Slug
    display_name: Text
    description: Text = ""
    groups: Groups = ()
    image: ImageOption
    cpu: CpuOption
    memory: MemoryOption
    gpu: GpuOption = GpuOption()
    home: HomeOption | None = None
    mounts: tuple[Mount, ...] = ()
    env: dict[EnvName, StrictStr] = {}
    default_url: Annotated[StrictStr, _full(_ABS_PATH, "a path starting with '/'", 1000)] | None = None
    node_selector: dict[StrictStr, StrictStr] = {}
    tolerations: tuple[Toleration, ...] = ()

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)

    @field_validator("mounts")
    @classmethod
    def _mounts_apart(cls, mounts: tuple[Mount, ...], info: ValidationInfo) -> tuple[Mount, ...]:
        # A field validator, not a model one: a model validator runs only when every key is valid,
        # so a broken key elsewhere would hide this problem. ``home`` comes before ``mounts`` and
        # is in ``info.data`` when it is valid.
        _ids_unique(mounts, "mount")
        paths = [m.mount_path for m in mounts]
        home = info.data.get("home")
        if isinstance(home, HomeOption):
            paths.append(home.mount_path)
        duplicates = sorted({p for p in paths if paths.count(p) > 1})
        if duplicates:
            raise ValueError(f"two volumes are mounted at {duplicates[0]!r}")
        return mounts


class Prices(_Strict):
    """Prices per resource-hour, charged on the limits the user chose."""

    currency: Annotated[StrictStr, _full(re.compile(r"[A-Z]{3}"), "an ISO 4217 code", 3)]
    cpu_hour: Price = Decimal(0)
    memory_gib_hour: Price = Decimal(0)
    gpu_hour: dict[ChoiceId, Price] = {}


class Quotas(_Strict):
    """Limits enforced at start; ``None`` means no limit."""

    max_servers: Annotated[StrictInt, Field(ge=1)] | None = None
    max_gpus: Annotated[StrictInt, Field(ge=0)] | None = None
    group_max_gpus: dict[GroupName, Annotated[StrictInt, Field(ge=0)]] = {}
    budget: Price | None = None


class PodSecurity(_Strict):
    """Who the single-user server runs as. Never root: the pod security context enforces it."""

    run_as_user: Annotated[StrictInt, Field(ge=1)] = 1000
    run_as_group: Annotated[StrictInt, Field(ge=0)] = 100
    fs_group: Annotated[StrictInt, Field(ge=0)] | None = 100


class Instance(_Strict):
    """``instance.yaml``: what belongs to the whole hub instance."""

    name: Slug
    display_name: Text
    profiles: tuple[Annotated[StrictStr, Field(pattern=r"^[^/\\]+\.ya?ml$")], ...] | None = None
    default_profile: Slug | None = None
    servers_per_user: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    admins_bypass_groups: StrictBool = False
    gpu_types: dict[ChoiceId, GpuType] = {}
    prices: Prices | None = None
    quotas: Quotas = Quotas()
    usage_window_days: Annotated[StrictInt, Field(ge=1, le=3660)] = 90
    pod_security: PodSecurity = PodSecurity()

    @field_validator("gpu_types")
    @classmethod
    def _no_none(cls, value: dict[str, GpuType]) -> dict[str, GpuType]:
        if NO_GPU in value:
            raise ValueError(f"{NO_GPU!r} is reserved for 'no GPU' and cannot be a GPU type")
        return value
