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
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._model_base import (
    _ABS_PATH,
    NO_GPU,
    SHM_PATH,
    ChoiceId,
    EnvName,
    GroupName,
    Groups,
    Price,
    Slug,
    Text,
    _check_labels,
    _default_is_open,
    _full,
    _ids_unique,
    _Strict,
)
from ._model_resources import (
    CpuChoice,
    CpuOption,
    GpuChoice,
    GpuCount,
    GpuOption,
    GpuType,
    MemoryChoice,
    MemoryOption,
    Toleration,
)
from ._model_storage import (
    CsiSource,
    HomeOption,
    HomeReset,
    Homes,
    Mount,
    NfsSource,
    PvcSource,
    PvTemplate,
    ShmOption,
)
from .pod_settings import PodSettings
from .references import IMAGE_REFERENCE

__all__ = [
    "IMAGE_REFERENCE",
    "NO_GPU",
    "SHM_PATH",
    "CpuChoice",
    "CpuOption",
    "CsiSource",
    "CustomImage",
    "GpuChoice",
    "GpuCount",
    "GpuOption",
    "GpuType",
    "HomeOption",
    "HomeReset",
    "Homes",
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
    "PvTemplate",
    "PvcSource",
    "Quotas",
    "ShmOption",
    "Toleration",
]


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
    shm: ShmOption | None = None
    mounts: tuple[Mount, ...] = ()
    env: dict[EnvName, StrictStr] = {}
    default_url: Annotated[StrictStr, _full(_ABS_PATH, "a path starting with '/'", 1000)] | None = None
    node_selector: dict[StrictStr, StrictStr] = {}
    tolerations: tuple[Toleration, ...] = ()
    pod: PodSettings = PodSettings()

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
    """Who the single-user server runs as. Never root: the pod security context enforces it.
    ``level``: the Pod Security Standard that pod settings and patches are checked against at
    load (``restricted``, the default; ``baseline`` only on purpose, e.g. for a patch that adds a
    capability). The rendered pod itself stays restricted unless a patch changes it."""

    scalar_schema = {"enum": ["restricted", "baseline"], "description": "the level alone"}

    level: Literal["restricted", "baseline"] = "restricted"
    run_as_user: Annotated[StrictInt, Field(ge=1)] = 1000
    run_as_group: Annotated[StrictInt, Field(ge=0)] = 100
    fs_group: Annotated[StrictInt, Field(ge=0)] | None = 100

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return {"level": data} if isinstance(data, str) else data


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
    pod: PodSettings = PodSettings()
    homes: Homes = Homes()

    @field_validator("gpu_types")
    @classmethod
    def _no_none(cls, value: dict[str, GpuType]) -> dict[str, GpuType]:
        if NO_GPU in value:
            raise ValueError(f"{NO_GPU!r} is reserved for 'no GPU' and cannot be a GPU type")
        return value
