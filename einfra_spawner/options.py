"""The resolved options and the rules the options form shares with the resolver.

Pure: frozen values and small functions of the loaded profiles. :mod:`.resolve` produces
:class:`ResolvedOptions`; :mod:`.render`, the backends and the usage ledger read them; the form
(:mod:`.form`) applies the same rules as the resolver through the functions here (who may have
what, which profile a request without one gets, where a GPU choice fixes CPU and memory), so the
form can never offer what the resolver refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    Toleration,
)
from .profiles import ProfileSet
from .quantities import format_cpu, format_memory

__all__ = [
    "CUSTOM_IMAGE",
    "ResolvedGpu",
    "ResolvedHome",
    "ResolvedMount",
    "ResolvedOptions",
    "UserContext",
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
    asked, in this request, for the persistent home to be emptied before this start."""

    size: int
    storage_class: str | None
    mount_path: str
    access_modes: tuple[str, ...]
    ephemeral: bool
    reset: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedMount:
    """An extra volume granted to this user."""

    id: str
    mount_path: str
    read_only: bool
    sub_path: str | None
    source: PvcSource | NfsSource | CsiSource


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
