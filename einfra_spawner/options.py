"""The resolved options and the rules the options form shares with the resolver.

Pure: frozen values and small functions of the loaded profiles. :mod:`.resolve` produces
:class:`ResolvedOptions`; :mod:`.render`, the backends and the usage ledger read them; the form
(:mod:`.form`) applies the same rules as the resolver through the functions here (who may have
what, which profile a request without one gets, where a GPU choice fixes CPU and memory), so the
form can never offer what the resolver refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .models import (
    NO_GPU,
    CpuOption,
    CsiSource,
    GpuChoice,
    Instance,
    MemoryOption,
    NfsSource,
    PodSecurity,
    Profile,
    PvcSource,
    PvTemplate,
    Toleration,
)
from .pod_settings import ResolvedPod
from .profiles import ProfileSet
from .quantities import format_cpu, format_memory

__all__ = [
    "CUSTOM_IMAGE",
    "AllowedQuantity",
    "ResolvedGpu",
    "ResolvedHome",
    "ResolvedMount",
    "ResolvedOptions",
    "UserContext",
    "allowed_quantity",
    "default_profile_for",
    "granted",
    "quantity_option",
]

#: ``image_choice`` of a custom image.
CUSTOM_IMAGE = "custom"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserContext:
    """Who asks: the JupyterHub user name, their groups and whether they are an admin."""

    name: str
    groups: frozenset[str] = frozenset()
    admin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedGpu:
    """GPUs granted: ``count`` of the extended resource ``resource``, on nodes that match."""

    id: str
    display_name: str
    resource: str
    count: int
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedHome:
    """The home volume. ``ephemeral``: fresh at every start (reset ``always``); ``reset``: the user
    asked, in this request, for the persistent home to be emptied before this start;
    ``keep_old_for``: seconds the home replaced by a reset is kept (0: deleted at once), from
    the instance's ``homes.reset.keep_for``."""

    size: int
    storage_class: str | None
    mount_path: str
    access_modes: tuple[str, ...]
    ephemeral: bool
    reset: bool
    keep_old_for: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedMount:
    """An extra volume granted to this user."""

    id: str
    mount_path: str
    read_only: bool
    sub_path: str | None
    source: PvcSource | NfsSource | CsiSource | PvTemplate


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedOptions:
    """Everything one spawn was granted. Frozen; change it only with ``dataclasses.replace``.

    CPU is in millicores and memory in bytes. Limits are what the user chose; guarantees are
    what the profile guarantees (never more than the limit).
    """

    instance: str
    profile: str
    profile_display_name: str
    image: str
    image_choice: str
    cpu_limit: int
    cpu_guarantee: int
    memory_limit: int
    memory_guarantee: int
    gpu: ResolvedGpu | None
    home: ResolvedHome | None
    mounts: tuple[ResolvedMount, ...]
    env: tuple[tuple[str, str], ...]
    default_url: str | None
    node_selector: tuple[tuple[str, str], ...]
    tolerations: tuple[Toleration, ...]
    pod_security: PodSecurity
    #: The pod settings of the instance, the profile and the GPU type, merged.
    pod: ResolvedPod = field(default_factory=ResolvedPod)
    #: The size of the memory-backed ``/dev/shm`` in bytes (``None``: the runtime's default).
    shm_size: int | None = None

    def user_options(self) -> dict[str, object]:
        """The request that resolves to exactly these options (for "your last choices")."""
        options: dict[str, object] = {
            "profile": self.profile,
            "image": self.image if self.image_choice == CUSTOM_IMAGE else self.image_choice,
            "cpu": format_cpu(self.cpu_limit),
            "memory": format_memory(self.memory_limit),
            "gpu": self.gpu.id if self.gpu else NO_GPU,
            "gpu_count": self.gpu.count if self.gpu else 0,
            "mounts": [m.id for m in self.mounts],
        }
        if self.home is not None and not self.home.ephemeral:
            options["home"] = "reset" if self.home.reset else "keep"
        return options


def granted(groups: Sequence[str], user: UserContext, instance: Instance) -> bool:
    """Whether something limited to ``groups`` is open to ``user`` (no groups: open to all)."""
    if not groups:
        return True
    if user.admin and instance.admins_bypass_groups:
        return True
    return not user.groups.isdisjoint(groups)


def default_profile_for(profiles: ProfileSet, user: UserContext) -> Profile | None:
    """The profile a request without ``profile`` gets: the instance default when the user's
    groups admit it, else the first profile they admit; ``None`` when they admit none."""
    allowed = [p for p in profiles.profiles if granted(p.groups, user, profiles.instance)]
    if profiles.default_profile in allowed:
        return profiles.default_profile
    return allowed[0] if allowed else None


def quantity_option(
    profile: Profile, gpu: GpuChoice, key: Literal["cpu", "memory"]
) -> CpuOption | MemoryOption:
    """The CPU or memory option that applies with the GPU choice ``gpu``: the choice's own when
    it sets one (a GPU type may fix CPU and memory), else the profile's."""
    if key == "cpu":
        return gpu.cpu or profile.cpu
    return gpu.memory or profile.memory


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowedQuantity:
    """The CPU counts (millicores) or memory sizes (bytes) a user may ask for under one option:
    listed ``values`` (the choices open to their groups), or, for a range, ``minimum`` to
    ``maximum`` in steps of ``step``. The resolver refuses and the form offers by this alone."""

    values: tuple[int, ...] = ()
    minimum: int = 0
    maximum: int = 0
    step: int = 0
    default: int

    @property
    def is_range(self) -> bool:
        return self.step > 0

    def allows(self, value: int) -> bool:
        """Whether ``value`` may be asked for; exact integer arithmetic, so no float drift."""
        if self.is_range:
            return self.minimum <= value <= self.maximum and (value - self.minimum) % self.step == 0
        return value in self.values

    def describe(self, fmt: Callable[[int], str]) -> tuple[str, ...]:
        """What is allowed, for a refusal: ``("1 to 96 in steps of 1",)`` or the values."""
        if self.is_range:
            return (f"{fmt(self.minimum)} to {fmt(self.maximum)} in steps of {fmt(self.step)}",)
        return tuple(fmt(v) for v in self.values)


def allowed_quantity(
    option: CpuOption | MemoryOption, is_open: Callable[[Sequence[str]], bool]
) -> AllowedQuantity:
    """What ``option`` allows a user whose groups ``is_open`` tests (a range has no groups)."""
    default = option.default_value()
    if option.is_range:
        assert option.min is not None and option.max is not None  # validated at load
        return AllowedQuantity(
            minimum=option.min, maximum=option.max, step=option.range_step, default=default
        )
    values = tuple(c.value for c in option.choices if is_open(c.groups))
    return AllowedQuantity(values=values, default=default)
