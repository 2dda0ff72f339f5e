"""``LocalBackend``: single-user servers as processes on the hub's own machine.

The I/O end of the data flow for a single machine and for the demo: the spawner hands over the
resolved options and the hub's command and environment (:class:`einfra_spawner.backend.
StartRequest`); this backend prepares the server's home folder, starts ``jupyterhub-singleuser``
as an asyncio subprocess on the loopback, waits until it answers HTTP and returns where it
listens, with a JSON state from which a restarted hub finds the process again (:mod:`._start`).

The state identifies a server by pid, start time and boot id, plus a marker variable inherited
by all of its processes (:mod:`._procfs`): a stop ends the server, its process group and its
kernels (which live in sessions of their own), and never signals a process that is not provably
the server's (:mod:`._stop`).

JupyterHub saves that state only once ``start`` returns; the backend's own records
(:mod:`._recordfiles`), written as soon as a process exists, are what a hub restarted after dying
in the middle of a start has: ``inventory`` reports the servers they name that still run, and a
new start of the same server ends the earlier process first.

This module holds the configuration (the traits, ``c.LocalBackend.*``) and the backend's public
methods; the servers it knows and the GPUs they hold are in :mod:`._servers`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, TypeVar

from traitlets import Bool, Dict, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from einfra_spawner import BackendError, ServerIdentity, ServerNames
from einfra_spawner.backend import (
    BackendBase,
    BackendFeatures,
    GpuCapacity,
    ProgressEvent,
    ServerRecord,
    Started,
    StartRequest,
)
from einfra_spawner.models import GpuType
from einfra_spawner.progress import StartProgress

from ._home import Folders, remove_homes
from ._procfs import boot_id
from ._servers import Servers
from ._start import Launcher
from ._stop import Stopper

__all__ = ["LocalBackend"]

_T = TypeVar("_T")


class LocalBackend(LoggingConfigurable, BackendBase):
    """Runs each single-user server as a local process, with a home folder per server.

    Configured as ``c.LocalBackend.<trait>`` in ``jupyterhub_config.py``.
    """

    #: Local processes run the hub machine's software: the image choice does not apply. The
    #: description says where servers run, for the form's "Images do not apply on this hub (...)";
    #: a reset moves the old home aside.
    features = BackendFeatures(
        supports_images=False,
        supports_mounts=False,
        description="local processes",
        reset_keeps_old_home=True,
    )

    home_root = Unicode(
        "~/.local/share/einfra-spawner/homes",
        help="""Folder (a path) under which every (user, server) gets its own home folder.

        Each server's home is ``<home_root>/home-<user>-<server>-<digest>`` (the name its
        Kubernetes volume would have); profiles without a home get
        ``<home_root>/scratch/<server name>``. A reset moves the old home aside to
        ``<home>.reset-<UTC time>``; nothing is ever deleted, so prune those folders with your own
        policy. ``~`` is the hub user's home; a relative path is relative to the hub's working
        directory. Default: ``~/.local/share/einfra-spawner/homes``.
        """,
    ).tag(config=True)

    log_root = Unicode(
        "",
        help="""Folder (a path) for the servers' output: one ``<server name>.log`` per server.

        The previous run's log is kept as ``.log.1``; the last lines are shown to the user when a
        server fails to start. Keep it out of users' reach (the hub opens these files). Default:
        empty, meaning ``<home_root>/logs``.
        """,
    ).tag(config=True)

    record_root = Unicode(
        "",
        help="""Folder (a path) for the backend's records of the servers it launched: one
        ``<server name>.json`` per server.

        A record is written as soon as a server's process exists and removed once the server is
        gone; a hub restarted after dying in the middle of a start finds the server through it
        (JupyterHub saved no state for it), reports it to the reconciler and ends it before that
        server is started again. A process is acted on only when ``/proc`` shows it is the one
        recorded. The folder is created ``0700``; give each hub its own (as its own
        ``home_root``). Default: empty, meaning ``<home_root>/records``.
        """,
    ).tag(config=True)

    gpu_inventory = Dict(
        key_trait=Unicode(),
        value_trait=Int(min=0),
        help="""GPUs of this machine: a count (whole GPUs or slices) per GPU type id of the hub.

        E.g. ``{"a40": 2, "mig-1g.10gb": 7}``. Gives the free/total figures shown while choosing
        (free = total - GPUs held by running servers of this backend, types not listed have 0),
        and refuses a start when too few of the chosen type are free. GPUs are counted, not
        isolated: no device is assigned to a server. Default: empty, the capacity is unknown; no
        figures are shown and no start is refused.
        """,
    ).tag(config=True)

    start_timeout = Float(
        60.0,
        min=0.0,
        help="""Seconds a start may take in all (home folder, launch, waiting for HTTP).

        After that the start is given up, the server stopped and the user told. Default: 60.
        """,
    ).tag(config=True)

    http_timeout = Float(
        30.0,
        min=0.0,
        help="""Seconds to wait, once the server is launched, for it to answer HTTP on its port.

        A server that exits earlier fails at once, with its last output. Default: 30.
        """,
    ).tag(config=True)

    stop_timeout = Float(
        10.0,
        min=0.0,
        help="""Seconds a server gets to end after SIGTERM before it is killed (SIGKILL).

        Its kernels get a few more seconds once the server is gone. Default: 10.
        """,
    ).tag(config=True)

    run_as_user = Unicode(
        None,
        allow_none=True,
        help="""System account (a user name) to run every server as, when the hub runs as root.

        Home folders are created owned by that account, and servers get its user, group and
        supplementary groups. ``home_root`` and the single-user command (its Python too) must be
        reachable by it. Default: unset, servers run as the hub's user; a hub running as root
        then adds ``--allow-root`` to the command (jupyter-server refuses root otherwise) and
        logs a warning.
        """,
    ).tag(config=True)

    enforce_limits = Bool(
        True,
        help="""Whether to enforce the CPU and memory limits (on/off) where the OS allows.

        CPU: the server and its kernels are pinned to ceil(CPU limit) CPUs. Memory: each process
        (the server, each kernel) may allocate at most the memory limit (``RLIMIT_DATA``), not the
        server as a whole. Guarantees are not enforced. Either way the figures are in
        ``CPU_LIMIT``, ``MEM_LIMIT``, ``CPU_GUARANTEE`` and ``MEM_GUARANTEE``. Default: on.
        """,
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._servers = Servers(boot_id())
        self._stopper = Stopper(self, self._servers)
        self._launcher = Launcher(self, self._servers, self._stopper, self._track)
        #: The starts in progress, by server key (its pod name).
        self._starts: dict[str, StartProgress] = {}
        self._start_tasks: dict[str, asyncio.Task[Started]] = {}
        self._aborted: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warned_unreadable: set[str] = set()

    def _track(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        """Every task this object creates is kept here, so that close() can cancel it."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- start, stop, poll, progress ---------------------------------------------------------------

    async def start(self, request: StartRequest) -> Started:
        """Prepare the home, launch the server and wait until it answers HTTP."""
        names = ServerNames(request.identity.user, request.identity.server)
        key = names.pod
        if key in self._starts:
            raise BackendError("This server is already starting; wait for that start to end.")
        # Registered before the first await, so that progress() finds it at once.
        progress = self._starts[key] = StartProgress()
        task = self._track(self._launcher.start(request, names, progress), name=f"local-start-{key}")
        self._start_tasks[key] = task
        try:
            # A cancelled start (JupyterHub's own timeout, stop(), close()) cancels the task,
            # whose cleanup ends the process it launched.
            return await asyncio.wait_for(task, timeout=self.start_timeout)
        except asyncio.TimeoutError:
            message = f"Your server did not start within {self.start_timeout:g} seconds."
            progress.add(ProgressEvent(message, None, failed=True))
            raise BackendError(message + " It was stopped; please try again.") from None
        except asyncio.CancelledError:
            if key not in self._aborted:
                raise
            stopped = "The server was stopped while it was starting."
            progress.add(ProgressEvent(stopped, None, failed=True))
            raise BackendError(stopped) from None
        except BackendError as error:
            if not progress.failed:
                progress.add(ProgressEvent(str(error).partition("\n")[0], None, failed=True))
            raise
        finally:
            progress.end()
            self._aborted.discard(key)
            if self._start_tasks.get(key) is task:
                del self._start_tasks[key]
            if self._starts.get(key) is progress:
                del self._starts[key]

    async def stop(self, identity: ServerIdentity, state: Mapping[str, Any]) -> None:
        """Stop the server (and its kernels) and wait until they are gone; fine if already gone."""
        key = ServerNames(identity.user, identity.server).pod
        starting = self._start_tasks.get(key)
        if starting is not None and not starting.done():
            # Stopped while starting: cancelling the start ends the process it launched.
            self._aborted.add(key)
            starting.cancel()
            await asyncio.wait({starting})
        await self._stopper.stop(key, state)

    async def delete_storage(self, identity: ServerIdentity, instance: str, *, homes: bool) -> None:
        """A deleted server: with ``homes``, delete its home folder and the homes its resets
        moved aside; otherwise keep them (a server re-created with that name finds its home)."""
        if not homes:
            return
        root = Folders.of(self.home_root, self.log_root, self.record_root).homes
        names = ServerNames(identity.user, identity.server)
        try:
            removed = await asyncio.to_thread(remove_homes, root, names)
        except OSError as error:
            raise BackendError(f"The home of the deleted server could not be removed: {error}") from error
        for path in removed:
            self.log.info("Removed %s of deleted server %r of user %r", path, identity.server, identity.user)

    async def poll(self, identity: ServerIdentity, state: Mapping[str, Any]) -> int | None:
        """``None`` while the server runs; its exit status once gone (0 when unknown)."""
        key = ServerNames(identity.user, identity.server).pod
        if key in self._start_tasks:
            return None
        return await self._stopper.poll(key, state)

    async def progress(
        self, identity: ServerIdentity, state: Mapping[str, Any]
    ) -> AsyncIterator[ProgressEvent]:
        """The steps of the start in progress; ends at once when none is."""
        start = self._starts.get(ServerNames(identity.user, identity.server).pod)
        if start is None:
            return
        async for event in start.follow():
            yield event

    # -- what runs: inventory and removal of orphans ----------------------------------------------

    async def inventory(self, instance: str) -> list[ServerRecord] | None:
        """The servers of ``instance`` that the records name and that still run (or whose
        kernels do: ``running`` is then false), from one scan of ``/proc`` in a worker thread.
        Records of which nothing runs are removed; ``None`` when the records cannot be read."""
        records = self._stopper.records
        try:
            survey = await asyncio.to_thread(records.survey, instance, self._servers.boot_id)
        except OSError as error:
            self.log.warning("Could not read the local servers' records in %s: %s", records.folder, error)
            return None
        for name in survey.unreadable:
            if name not in self._warned_unreadable:
                self._warned_unreadable.add(name)
                self.log.warning("Ignoring %s in %s: not a record of a local server", name, records.folder)
        for gone in survey.removed:
            self._servers.forget(gone.server, gone.ref)
            self.log.debug("Dropped the record of local server %s: nothing of it runs", gone.server)
        found = []
        for sighting in survey.sightings:
            record = sighting.record
            known = self._servers.tracked.get(record.server)
            if sighting.running and (
                known is None or (known.process is None and not known.ref.same_process(record.ref))
            ):
                # Found through its record alone (a hub died while starting it): its GPUs and
                # CPUs count from now on, as an adopted server's do.
                self._servers.adopt(record.server, record.ref)
            found.append(sighting.server_record())
        return found

    async def remove(self, record: ServerRecord) -> None:
        """End a server the reconciler found orphaned (its process and whatever carries its
        marker), wait until it is gone and remove its record; fine if already gone."""
        await self._stopper.remove(record)

    # -- capacity, close ------------------------------------------------------------------------

    async def gpu_capacity(self, gpu_types: Mapping[str, GpuType]) -> dict[str, GpuCapacity]:
        """Free and total GPUs of each type from ``gpu_inventory``; ``{}`` when it is empty."""
        if not self.gpu_inventory:
            return {}
        # In the loop, not a worker thread: the table must not change while it is read (a stat
        # read per adopted server is all the I/O).
        return self._servers.capacity(gpu_types, self.gpu_inventory)

    async def close(self) -> None:
        """Cancel this object's tasks (a start still in progress ends its server). Running
        servers keep running; a new backend object adopts them from their state."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for progress in self._starts.values():
            progress.end()
