"""einfra-spawner: JupyterHub on demand, described by declarative profile files.

The pure core (load, resolve, render) is importable without JupyterHub being loaded; the
spawner and :func:`configure` are imported on first use, so the command-line tools and the
test harness stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import BackendError, EInfraError, OptionsError, Problem, ProfileError
from .models import Instance, Profile
from .names import ServerNames, server_names
from .profiles import ProfileSet, load_profiles, parse_profile_set, validate_paths
from .render import Manifests, ServerIdentity, SingleUser, render_manifests
from .resolve import (
    REQUEST_KEYS,
    ResolvedGpu,
    ResolvedHome,
    ResolvedMount,
    ResolvedOptions,
    UserContext,
    resolve_options,
)
from .schema import profile_schema

if TYPE_CHECKING:  # pragma: no cover
    from .hub import configure
    from .spawner import EInfraSpawner

__version__ = "0.1.0.dev0"

__all__ = [
    "REQUEST_KEYS",
    "BackendError",
    "EInfraError",
    "EInfraSpawner",
    "Instance",
    "Manifests",
    "OptionsError",
    "Problem",
    "Profile",
    "ProfileError",
    "ProfileSet",
    "ResolvedGpu",
    "ResolvedHome",
    "ResolvedMount",
    "ResolvedOptions",
    "ServerIdentity",
    "ServerNames",
    "SingleUser",
    "UserContext",
    "configure",
    "load_profiles",
    "parse_profile_set",
    "profile_schema",
    "render_manifests",
    "resolve_options",
    "server_names",
    "validate_paths",
]


def __getattr__(name: str) -> Any:
    if name == "EInfraSpawner":
        from .spawner import EInfraSpawner

        return EInfraSpawner
    if name == "configure":
        from .hub import configure

        return configure
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
