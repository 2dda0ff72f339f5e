"""How a hub is set up to run EInfraSpawner: :func:`configure` for ``jupyterhub_config.py``, and
what happens once the hub starts (the runtime opens the ledger, warms the backend up, starts the
reconciler with a view of what JupyterHub knows).

Where it sits: the edge between JupyterHub's application and this package. It reads the hub's
configuration the way traitlets resolves it, and JupyterHub's database and in-memory users for
the reconciler; the spawner itself (:mod:`einfra_spawner.spawner`) knows none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from traitlets.config import Application

from .backend import load_backend_class
from .errors import ProfileError
from .profiles import ProfileSet
from .reconcile import HubServer
from .runtime import current_runtime
from .spawner import EInfraSpawner
from .usage.recorder import records_usage

__all__ = ["configure", "jupyterhub_view"]


def configure(
    c: Any, profiles_dir: str | os.PathLike[str], *, backend: str = "local", freeze_heap: bool = False
) -> ProfileSet:
    """Make a hub run EInfraSpawner from an instance folder; call it in ``jupyterhub_config.py``.

    Loads and validates the folder now, so a broken folder stops the hub at start with every
    problem listed (:class:`~einfra_spawner.ProfileError`), and checks that the backend exists.
    Sets ``JupyterHub.spawner_class``, ``EInfraSpawner.profiles_dir`` and ``.backend``, and the
    named servers: with ``servers_per_user: N`` above 1, named servers are allowed and limited
    to ``N - 1`` besides the default server (JupyterHub counts named servers that exist,
    running or not). Installs the JSON route ``GET /hub/api/einfra/gpus`` (GPU figures for the
    form's script) in ``JupyterHub.extra_handlers``, after any handlers already configured.
    Returns the loaded profiles.

    When called as the hub starts (on its running event loop), once the configuration file has
    run, the usage ledger named by ``EInfraSpawner.usage_db_url`` is opened and the backend is
    built and warmed up (the Kubernetes backend connects and starts its watches), in the
    background, instead of at the first spawn.

    ``freeze_heap`` (default off): once the profiles and the backend are loaded, collect garbage
    and move every object alive to the garbage collector's permanent generation
    (:func:`gc.freeze`). The hub's start-up heap (JupyterHub, the Kubernetes client's model
    classes, SQLAlchemy...) is then never scanned again: a full collection during a spawn storm
    takes a fraction of the time, and stalls the event loop that much less. Its cost: garbage
    cycles among those start-up objects, should any form later, are never freed. It applies to
    the whole hub process. Off by default until a measurement shows it earns its keep
    (``docs/benchmarks.md``).
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
    from .gpu_route import HANDLERS  # imports JupyterHub's handlers: only when configuring

    existing = list(c.JupyterHub.extra_handlers) if "extra_handlers" in c.JupyterHub else []
    c.JupyterHub.extra_handlers = existing + [h for h in HANDLERS if h not in existing]
    with contextlib.suppress(RuntimeError):  # no running loop: a tool, not a starting hub
        asyncio.get_running_loop().call_soon(_begin_runtime, c)
    if freeze_heap:
        gc.collect()
        gc.freeze()
    return profiles


def _begin_runtime(c: Any) -> None:
    """Once the configuration file has run (and the hub's configuration is complete): read the
    spawner's settings as traitlets resolves them (``c.Spawner``, ``c.EInfraSpawner``, or the
    operator's subclass) and let the runtime open the ledger, warm the backend up and start the
    reconciler, in the background."""
    app = Application.instance() if Application.initialized() else None
    config = app.config if app is not None else c
    log = app.log if app is not None else logging.getLogger("JupyterHub")
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
