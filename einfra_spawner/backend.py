"""The backend plug-in point: a :class:`Backend` protocol and discovery by entry point.

A backend receives finished work (the resolved options and the rendered manifests) and does the
I/O: it starts, watches and stops single-user servers. It never reads profile files and never
resolves options. Backends are found by name in the entry-point group ``einfra_spawner.backends``
(``c.EInfraSpawner.backend = "kubernetes"``); the in-tree ones under ``backends/`` register
exactly as a third-party backend would, and this module imports none of them.

One backend object serves every spawner of a hub process (it may hold shared watches and
caches); per-server facts travel in the JSON-serialisable ``state`` mapping that the spawner
persists through JupyterHub's ``get_state``/``load_state``, so a restarted hub finds its servers.

What a backend can do is typed, never probed: :class:`BackendFeatures` (what the form and the
spawner need to know) and the protocol's methods. :class:`BackendBase` gives the defaults of the
optional ones (no namespaces, no warm-up, no inventory for the reconciler).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from .errors import EInfraError
from .models import GpuType
from .options import ResolvedOptions
from .render import Manifests, ServerIdentity, SingleUser

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BackendBase",
    "BackendFactory",
    "BackendFeatures",
    "Endpoint",
    "GpuCapacity",
    "ProgressEvent",
    "ServerRecord",
    "StartRequest",
    "Started",
    "available_backends",
    "load_backend_class",
]

ENTRY_POINT_GROUP = "einfra_spawner.backends"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendFeatures:
    """What a backend's servers are, as the spawner and the options form need to know it."""

    #: Whether the image choice means anything. Where it does not (local processes) the form says
    #: so, and a profile's ``default_url`` (a page of its image) is ignored.
    supports_images: bool = True
    #: What the servers run as, in a few words, for the form ("local processes"); "" says nothing.
    description: str = ""
    #: Whether the backend provides a profile's extra mounts (volumes). Where it does not (local
    #: processes) the form lists them as not provided and offers no choice of them.
    supports_mounts: bool = True
    #: Whether a home reset keeps the old home aside (``True``) or deletes it; the form words the
    #: reset box accordingly.
    reset_keeps_old_home: bool = True
    #: The address single-user servers must listen on (``"0.0.0.0"`` in a pod, whose network
    #: namespace is its own); the spawner puts it into ``JUPYTERHUB_SERVICE_URL``. ``None``: the
    #: spawner's own ``ip``.
    listen_ip: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRequest:
    """Everything a backend needs to start one server.

    ``options.home.reset`` is true only when the user asked, in this very request, for an empty
    home: a backend resets the home then and only then, after any earlier server is gone.
    """

    identity: ServerIdentity
    options: ResolvedOptions
    manifests: Manifests
    single_user: SingleUser
    state: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds the start may take in all (the spawner's ``start_timeout``): the budget for
    #: retrying API calls through an outage. ``None``: the backend's own limits.
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the started server listens."""

    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Started:
    """The result of a start: the endpoint and the state to persist for later calls."""

    endpoint: Endpoint
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of a start, in plain words, for JupyterHub's progress bar (``progress`` 0-100)."""

    message: str
    progress: int | None = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class GpuCapacity:
    """How many GPUs (or slices) of one type are free right now, of how many in all."""

    gpu: str
    free: int
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerRecord:
    """One server a backend runs (or has begun to start), as the backend's own records show it:
    what the reconciler compares with what JupyterHub knows and what the ledger counts.

    Only objects carrying this project's labels (and the instance's) are ever reported, so the
    reconciler can never act on anything another hub, or a person, created."""

    #: ``ServerNames(user, server).server_label``: unique per (user, server), the match key.
    server_label: str
    #: ``ServerNames(user, server).user_label``.
    user_label: str
    #: When the backend created it (seconds since the epoch): orphans younger than the grace
    #: period are left alone, since a start may still be on its way.
    created: float
    #: Whether it runs (a pod that is not finished, a live process).
    running: bool
    #: What :meth:`Backend.remove` needs to find it again (opaque to the reconciler).
    ref: Mapping[str, Any] = field(default_factory=dict)
    #: A few words for the log: ``pod jhub/jupyter-ada-1f2e``, ``process 4242``.
    description: str = ""
    #: The exact user and server names, where the backend's records hold them (for the log).
    user: str | None = None
    server: str | None = None


@runtime_checkable
class Backend(Protocol):
    """What every backend provides. All methods are safe to call concurrently for different
    servers; ``state`` is what ``start`` returned (or ``{}`` for a server never started)."""

    #: What this backend's servers are (see :class:`BackendFeatures`).
    features: BackendFeatures

    def namespace_for(self, identity: ServerIdentity) -> str | None:
        """The Kubernetes namespace of ``identity``'s server, for the renderer; ``None`` where
        namespaces do not apply."""
        ...

    async def warm_up(self) -> None:
        """Run once in the background as the hub starts: connect, start watches, fill caches, so
        the first spawns wait for none of it. A failure is logged, nothing more."""
        ...

    async def start(self, request: StartRequest) -> Started:
        """Start the server (resetting its home first when asked); raise ``BackendError`` with a
        message for the user when it cannot start. Nothing may be left running on failure."""
        ...

    async def stop(self, identity: ServerIdentity, state: Mapping[str, Any]) -> None:
        """Stop the server and wait until it is gone. Stopping a server that is gone is fine."""
        ...

    async def poll(self, identity: ServerIdentity, state: Mapping[str, Any]) -> int | None:
        """``None`` while the server runs; otherwise its exit status (0 when unknown)."""
        ...

    def progress(self, identity: ServerIdentity, state: Mapping[str, Any]) -> AsyncIterator[ProgressEvent]:
        """The steps of the start in progress, ending when the start ends."""
        ...

    async def gpu_capacity(self, gpu_types: Mapping[str, GpuType]) -> dict[str, GpuCapacity]:
        """Free and total GPUs of each given type; ``{}`` when the backend cannot tell."""
        ...

    async def close(self) -> None:
        """Release shared resources (watches, clients); servers keep running."""
        ...

    async def inventory(self, instance: str) -> list[ServerRecord] | None:
        """Every server this backend runs for the hub instance ``instance``, from its caches or
        records (no per-server reads); ``None`` when it cannot tell right now (a watch not yet
        synced), in which case the reconciler does nothing."""
        ...

    async def remove(self, record: ServerRecord) -> None:
        """Remove a server the reconciler found orphaned (no hub knows it), and wait until it is
        gone; fine if already gone. Raise ``BackendError`` when it cannot be removed now (it is
        tried again at the next pass)."""
        ...

    async def current_home(self, identity: ServerIdentity, instance: str) -> int | None:
        """The generation of the server's current home (see :mod:`einfra_spawner.storage`), for
        a server whose spawner state does not say (new, or re-created after a delete that kept
        its home); ``None`` when it has no home yet."""
        ...

    async def delete_storage(self, identity: ServerIdentity, instance: str, *, homes: bool) -> None:
        """JupyterHub deletes the server, or its user (``delete_forever``): remove what belongs
        to the server alone (per-server volumes whose policy says so) and, when ``homes``, its
        home and the homes kept after its resets. Called after the server stopped."""
        ...

    async def expire_homes(self, instance: str, now: float) -> list[str]:
        """Remove the homes kept after resets whose time is up at ``now`` (seconds since the
        epoch), for the reconciler; returns a few words for each one removed."""
        ...


class BackendBase:
    """Defaults for the optional parts of :class:`Backend`: subclass it, and override what your
    backend can do. A backend that keeps the defaults has no inventory, so the reconciler leaves
    its servers alone (JupyterHub's own polling still notices servers that are gone)."""

    features: BackendFeatures = BackendFeatures()

    def namespace_for(self, identity: ServerIdentity) -> str | None:
        """No namespaces."""
        return None

    async def warm_up(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        """Nothing to release."""

    async def inventory(self, instance: str) -> list[ServerRecord] | None:
        """Cannot tell."""
        return None

    async def remove(self, record: ServerRecord) -> None:
        """Never called while :meth:`inventory` returns ``None``."""
        raise NotImplementedError("this backend reports no inventory, so it removes nothing")

    async def current_home(self, identity: ServerIdentity, instance: str) -> int | None:
        """Homes have one generation: the first."""
        return None

    async def delete_storage(self, identity: ServerIdentity, instance: str, *, homes: bool) -> None:
        """Nothing is kept per server."""

    async def expire_homes(self, instance: str, now: float) -> list[str]:
        """No old homes are kept."""
        return []


class BackendFactory(Protocol):
    """A backend class: built once per hub process with the hub's traitlets config and logger."""

    def __call__(self, *, config: Any, log: Any) -> Backend: ...


def available_backends() -> list[str]:
    """The names of every installed backend."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


_loaded: dict[str, BackendFactory] = {}


def load_backend_class(name: str) -> BackendFactory:
    """The backend class registered as ``name``; ``EInfraError`` lists the installed ones.

    Found once per process: scanning the installed packages' entry points takes tens of
    milliseconds, which the first spawn after a hub start would otherwise wait for."""
    found = _loaded.get(name)
    if found is not None:
        return found
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                loaded: BackendFactory = ep.load()
            except Exception as exc:  # a broken plug-in must say which one, not fail obscurely
                raise EInfraError(f"the backend {name!r} ({ep.value}) cannot be loaded: {exc!r}") from exc
            _loaded[name] = loaded
            return loaded
    raise EInfraError(
        f"no backend named {name!r}; installed backends: {', '.join(available_backends()) or 'none'}"
    )
