"""How a hub is set up to run EInfraSpawner: :func:`configure` for ``jupyterhub_config.py``, and
what happens once the hub starts (the runtime opens the ledger, warms the backend up, starts the
reconciler with a view of what JupyterHub knows).

Where it sits: the edge between JupyterHub's application and this package. It reads the hub's
configuration the way traitlets resolves it, and JupyterHub's database and in-memory users for
the reconciler; the spawner itself (:mod:`einfra_spawner.spawner`) knows none of this.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from traitlets.config import Application

from .backend import load_backend_class
from .errors import ProfileError
from .gpu_service import Figures, GpuService, GpuServiceServer, HubLink, is_ours, start_gpu_service
from .profiles import ProfileSet
from .reconcile import HubServer
from .runtime import HubRuntime, current_runtime
from .spawner import EInfraSpawner
from .usage.recorder import records_usage

__all__ = ["DEFAULT_GPU_SERVICE", "GpuService", "configure", "jupyterhub_view"]

#: The GPU figures service of :func:`configure` by default: ``/services/gpus/``, on a free
#: loopback port of the hub's machine.
DEFAULT_GPU_SERVICE = GpuService()


def configure(
    c: Any,
    profiles_dir: str | os.PathLike[str],
    *,
    backend: str = "local",
    gpu_service: GpuService | None = DEFAULT_GPU_SERVICE,
    freeze_heap: bool | None = None,
) -> ProfileSet:
    """Make a hub run EInfraSpawner from an instance folder; call it in ``jupyterhub_config.py``.

    Loads and validates the folder now, so a broken folder stops the hub at start with every
    problem listed (:class:`~einfra_spawner.ProfileError`), and checks that the backend exists.
    Sets ``JupyterHub.spawner_class``, ``EInfraSpawner.profiles_dir`` and ``.backend``, and the
    named servers: with ``servers_per_user: N`` above 1, named servers are allowed and limited
    to ``N - 1`` besides the default server (JupyterHub counts named servers that exist,
    running or not). Returns the loaded profiles.

    ``gpu_service`` (``None``: none): the GPU figures for the form's script, ``GET
    {base_url}services/gpus/gpus``, served by a JupyterHub service that runs in the hub's own
    process (:mod:`einfra_spawner.gpu_service`). When called as the hub starts, its address is
    bound now; the service is added to ``JupyterHub.services`` and its access scope
    (``access:services!service=gpus``) to the ``user`` role of ``JupyterHub.load_roles``, even
    when the configuration file assigns either of them after this call. A hub whose address
    cannot be bound logs why and runs without the service (the form shows the figures of the
    moment it was built).

    When called as the hub starts (on its running event loop), once the configuration file has
    run, the usage ledger named by ``EInfraSpawner.usage_db_url`` is opened and the backend is
    built and warmed up (the Kubernetes backend connects and starts its watches), in the
    background, instead of at the first spawn.

    ``freeze_heap``: collect garbage and move every object alive to the garbage collector's
    permanent generation (:func:`gc.freeze`), so that the hub's start-up heap (JupyterHub, the
    Kubernetes client's model classes, SQLAlchemy, the servers it adopted...) is never scanned
    again: a full collection during a spawn storm then takes a fraction of the time, and stalls
    the event loop that much less (at N = 500 the longest stall fell from 238 to 25 ms; see
    ``docs/benchmarks.md``, the ablation). Its cost: garbage cycles among those start-up objects,
    should any form later, are never freed. It applies to the whole hub process. ``None`` (the
    default): once JupyterHub has finished starting, and only in a running JupyterHub (a tool or
    a test that calls this never freezes its process); ``True``: now; ``False``: never.
    """
    folder = os.path.abspath(os.fspath(profiles_dir))
    profiles = current_runtime().profiles(folder)
    load_backend_class(backend)  # an unknown name fails now, listing the installed backends
    c.JupyterHub.spawner_class = EInfraSpawner
    c.EInfraSpawner.profiles_dir = folder
    c.EInfraSpawner.backend = backend
    servers = profiles.instance.servers_per_user
    c.JupyterHub.allow_named_servers = servers > 1
    # 0 means "no limit" to JupyterHub; one server per user leaves no named server at all.
    c.JupyterHub.named_server_limit_per_user = servers - 1 if servers > 1 else 0
    starting = True
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no running loop: a tool, not a starting hub
        starting = False
    _offer_gpu_service(c, gpu_service, starting=starting)
    if starting:
        loop.call_soon(_begin_runtime, c, freeze_heap is None)
    if freeze_heap:
        _freeze_heap()
    return profiles


def _freeze_heap() -> int:
    """Collect garbage, then freeze what is alive (see :func:`configure`); how many objects."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def _freeze_once_started(hub_started: Callable[[], Awaitable[None]], log: logging.Logger) -> None:
    await hub_started()
    log.info(
        "einfra-spawner: froze the hub's start-up heap (%d objects) for the garbage collector", _freeze_heap()
    )


def _offer_gpu_service(c: Any, settings: GpuService | None, *, starting: bool) -> None:
    """Start the GPU figures service (in a starting hub) and register it with JupyterHub; with
    ``settings`` ``None``, or when it cannot listen, make sure none of ours is registered."""
    runtime = current_runtime()
    log = logging.getLogger("JupyterHub")
    server = runtime.gpu_service
    if server is not None and server.settings != settings:  # configured again, differently
        runtime.gpu_service = None
        if starting:
            runtime.track(server.close(), log, "Closing the GPU figures service")
        server = None
    if server is None and settings is not None and starting:
        try:
            server = runtime.gpu_service = start_gpu_service(settings)
        except OSError as exc:
            # The figures are a convenience: the form shows those of the moment it is built.
            log.error(
                "The GPU figures service cannot listen on %s:%s (%s); the form will not refresh "
                "its GPU figures",
                settings.ip,
                settings.port,
                exc,
            )
    app: Any = Application.instance() if Application.initialized() else None
    if app is not None and app.has_trait("services") and app.has_trait("load_roles"):
        _follow_hub_settings(app, runtime)
        return
    # A tool or a test reading a configuration: register as a starting hub would, where the
    # address is known beforehand.
    spec = None
    if server is not None:
        spec = server.settings.spec(server.url, server.api_token)
    elif settings is not None and not starting and (settings.url or settings.port):
        url = settings.url or f"http://{settings.ip}:{settings.port}"
        spec = settings.spec(url, settings.api_token or "(generated as the hub starts)")
    services = list(c.JupyterHub.services) if "services" in c.JupyterHub else []
    roles = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    if spec is not None or any(map(is_ours, services)):
        c.JupyterHub.services, c.JupyterHub.load_roles = _registered(services, roles, spec)


def _follow_hub_settings(app: Any, runtime: HubRuntime) -> None:
    """Keep the hub's ``services`` and ``load_roles`` in step with the service this process runs
    (``runtime.gpu_service``): now, and whenever the configuration file assigns either setting
    after :func:`configure` (a traitlets observer; JupyterHub applies the file's settings once
    it has run). An operator's ``c.JupyterHub.services = [...]`` must not silently drop it."""

    def ensure(change: object = None) -> None:
        server = runtime.gpu_service
        spec = server.settings.spec(server.url, server.api_token) if server is not None else None
        services, roles = _registered(list(app.services), list(app.load_roles), spec)
        if services != app.services:
            app.services = services
        if roles != app.load_roles:
            app.load_roles = roles

    app.observe(ensure, names=["services", "load_roles"])
    ensure()


def _registered(
    services: list[Any], roles: list[Any], spec: dict[str, Any] | None
) -> tuple[list[Any], list[Any]]:
    """``services`` and ``roles`` with ``spec`` as the only service of ours (none: ``None``), and
    the ``user`` role (JupyterHub's role of every user; its default is ``self``) granting its
    access scope. Copies, never changes, the dictionaries given."""
    gone = {s["name"] for s in services if is_ours(s)} - ({spec["name"]} if spec else set())
    kept = [s for s in services if not is_ours(s)]
    new_services = [*kept, spec] if spec is not None else kept
    if new_services == services:
        new_services = services
    drop = {GpuService(name=name).scope for name in gone}
    add = GpuService(name=spec["name"]).scope if spec is not None else None
    new_roles: list[Any] = []
    found = False
    for role in roles:
        if isinstance(role, dict) and role.get("name") == "user":
            found = True
            scopes = [scope for scope in role.get("scopes", []) if scope not in drop]
            if add is not None and add not in scopes:
                scopes.append(add)
            role = {**role, "scopes": scopes} if scopes != role.get("scopes", []) else role
        new_roles.append(role)
    if not found and add is not None:
        new_roles.append({"name": "user", "scopes": ["self", add]})
    return new_services, new_roles if new_roles != roles else roles


def _hub_link(app: Any) -> HubLink:
    """How the GPU figures service reaches this hub, and each user's figures: from the user's
    own spawner, exactly as the form computes them."""

    async def figures_for(name: str) -> Figures | None:
        try:
            user = app.users[name]
        except KeyError:
            return None
        spawner = user.spawner
        if not isinstance(spawner, EInfraSpawner):
            return None
        return await spawner.gpu_figures()

    return HubLink(
        api_url=_hub_api_url(app.hub),
        hub_prefix=app.hub.base_url,
        base_url=app.base_url,
        same_origin=not app.subdomain_host,
        figures_for=figures_for,
    )


def _hub_api_url(hub: Any) -> str:
    """The hub's API as its own process reaches it: on the loopback when the hub listens on every
    interface (as JupyterHub does for its managed services), so that no request leaves the pod
    and comes back through a Kubernetes Service; else its connect URL."""
    if hub.proto == "http" and hub.ip in ("", "0.0.0.0", "::") and hub.port:  # noqa: S104 - a comparison
        host = "[::1]" if hub.ip == "::" else "127.0.0.1"
        return f"http://{host}:{hub.port}{hub.base_url}api"
    return str(hub.api_url)


def _begin_runtime(c: Any, freeze_once_started: bool = False) -> None:
    """Once the configuration file has run (and the hub's configuration is complete): read the
    spawner's settings as traitlets resolves them (``c.Spawner``, ``c.EInfraSpawner``, or the
    operator's subclass) and let the runtime open the ledger, warm the backend up and start the
    reconciler, in the background."""
    app = Application.instance() if Application.initialized() else None
    config = app.config if app is not None else c
    log = app.log if app is not None else logging.getLogger("JupyterHub")
    service: GpuServiceServer | None = current_runtime().gpu_service
    if service is not None and app is not None and getattr(app, "hub", None) is not None:
        service.attach(_hub_link(app))
        log.info("GPU figures: service %s at %s", service.settings.name, service.url)
    spawner_class = getattr(app, "spawner_class", None)
    if not (isinstance(spawner_class, type) and issubclass(spawner_class, EInfraSpawner)):
        spawner_class = EInfraSpawner
    settings = spawner_class(config=config, log=log)
    try:
        profiles = current_runtime().profiles(os.path.abspath(settings.profiles_dir))
    except ProfileError:  # configure() loaded it a moment ago; the spawner reports it at use
        return
    for warning in profiles.warnings:
        log.warning("Profile files: %s", warning)
    instance = profiles.instance.name
    if app is not None:
        hub_view, hub_started = jupyterhub_view(app)
        interval = settings.reconcile_interval
    else:  # a tool that configures a hub without running one: nothing to reconcile
        hub_view, hub_started, interval = _no_hub, _never, 0.0
    current_runtime().begin(
        backend_name=settings.backend,
        config=config,
        log=log,
        usage_db_url=settings.usage_db_url if records_usage(profiles.instance) else None,
        instance=instance,
        reconcile_interval=interval,
        reconcile_grace=settings.reconcile_grace,
        hub_view=hub_view,
        hub_started=hub_started,
        in_hub=app is not None,
    )
    if freeze_once_started and app is not None:
        current_runtime().track(_freeze_once_started(hub_started, log), log, "Freezing the start-up heap")


async def _no_hub() -> None:
    return None


async def _never() -> None:
    await asyncio.Event().wait()


def jupyterhub_view(
    app: Any,
) -> tuple[Callable[[], Awaitable[Sequence[HubServer] | None]], Callable[[], Awaitable[None]]]:
    """What JupyterHub knows, read in its own process: the servers its database has as running,
    and the starts, stops and checks in progress; and an awaitable for "the hub has started"
    (JupyterHub re-checks the servers it had before the reconciler's first pass)."""

    async def view() -> Sequence[HubServer] | None:
        from jupyterhub import orm  # the hub's own models: only in the hub's process

        db = getattr(app, "db", None)
        if db is None:
            return None
        found: dict[tuple[str, str], HubServer] = {}
        for spawner in db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None)):
            key = (spawner.user.name, spawner.name)
            found[key] = HubServer(user=key[0], server=key[1], running=True, pending=False)
        for user in list(getattr(app, "users", {}).values()):
            for name, spawner in list(user.spawners.items()):
                if spawner.pending:
                    key = (user.name, name)
                    found[key] = HubServer(user=user.name, server=name, running=key in found, pending=True)
        return list(found.values())

    async def started() -> None:
        future = getattr(app, "_start_future", None)
        if isinstance(future, asyncio.Future):
            await asyncio.shield(future)

    return view, started
