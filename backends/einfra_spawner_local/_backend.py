"""``LocalBackend``: single-user servers as processes on the hub's own machine.

The I/O end of the data flow for a single machine and for the demo: the spawner hands over the
resolved options and the hub's command and environment (:class:`einfra_spawner.backend.
StartRequest`); this backend prepares the server's home folder, starts ``jupyterhub-singleuser``
as an asyncio subprocess on the loopback, waits until it answers HTTP and returns where it
listens, with a JSON state from which a restarted hub finds the process again.

The state identifies a server by pid, start time and boot id, plus a marker variable inherited
by all of its processes (:mod:`._procfs`): a stop ends the server, its process group and its
kernels (which live in sessions of their own), and never signals a process that is not provably
the server's.

JupyterHub saves that state only once ``start`` returns; the backend's own records
(:mod:`._recordfiles`), written as soon as a process exists, are what a hub restarted after dying
in the middle of a start has: ``inventory`` reports the servers they name that still run, and a
new start of the same server ends the earlier process first.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from traitlets import Bool, Dict, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from einfra_spawner import BackendError, ResolvedGpu, ServerIdentity, ServerNames
from einfra_spawner.backend import (
    BackendBase,
    BackendFeatures,
    Endpoint,
    GpuCapacity,
    ProgressEvent,
    ServerRecord,
    Started,
    StartRequest,
)
from einfra_spawner.models import GpuType

from ._home import home_folder, log_file, open_log, prepare_home
from ._launch import (
    LOOPBACK,
    AppliedLimits,
    apply_limits,
    choose_cpus,
    cores_for,
    needs_allow_root,
    pick_port,
    server_argv,
    server_env,
)
from ._lifecycle import (
    answers_http,
    exit_words,
    failure_message,
    kill_now,
    listener_is_ours,
    terminate,
)
from ._procfs import boot_id, find_members, is_running, read_stat
from ._progress import StartProgress
from ._recordfiles import LaunchRecord, RecordFiles, trusted_ref
from ._records import Account, ServerRef, Tracked, lookup_account, server_state

__all__ = ["LocalBackend"]

_T = TypeVar("_T")
# How long stop() waits for the event loop to collect the exit status of a child it has ended.
_REAP_WAIT = 5.0


def _absolute(text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


class LocalBackend(LoggingConfigurable, BackendBase):
    """Runs each single-user server as a local process, with a home folder per server.

    Configured as ``c.LocalBackend.<trait>`` in ``jupyterhub_config.py``.
    """

    #: Local processes run the hub machine's software: the image choice does not apply. The
    #: description says where servers run, for the form's "Images do not apply on this hub (...)";
    #: a reset moves the old home aside.
    features = BackendFeatures(
        supports_images=False, description="local processes", reset_keeps_old_home=True
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
        self._servers: dict[str, Tracked] = {}
        self._reserved: dict[str, tuple[str, int]] = {}
        self._starts: dict[str, StartProgress] = {}
        self._start_tasks: dict[str, asyncio.Task[Started]] = {}
        self._aborted: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._boot_id = boot_id()
        self._warned_root = False
        # One lock for every write of the records folder (see RecordFiles.discard).
        self._record_lock = threading.Lock()
        self._warned_unreadable: set[str] = set()

    # -- bookkeeping ---------------------------------------------------------------------------

    def _track(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        """Every task this object creates is kept here, so that close() can cancel it."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _home_root(self) -> Path:
        return _absolute(self.home_root)

    def _log_root(self) -> Path:
        return _absolute(self.log_root) if self.log_root else self._home_root() / "logs"

    def _records(self) -> RecordFiles:
        folder = _absolute(self.record_root) if self.record_root else self._home_root() / "records"
        return RecordFiles(folder, self._record_lock)

    async def _discard_record(self, key: str, refs: list[ServerRef]) -> None:
        """Remove the record of ``key`` if it names one of these processes' starts (they are
        gone). Never fails the caller: a record left behind is dropped by the next inventory."""
        try:
            await asyncio.to_thread(self._records().discard, key, {ref.marker for ref in refs})
        except OSError as error:
            self.log.warning("Could not remove the record of local server %s: %s", key, error)

    async def _recorded(self, key: str) -> ServerRef | None:
        """The process the record of ``key`` names, as far as ``/proc`` proves it is the
        server's (:func:`trusted_ref`); ``None``: no record, or one from another boot."""

        try:
            return await asyncio.to_thread(self._records().read_trusted, key, self._boot_id)
        except OSError as error:
            self.log.warning("Could not read the record of local server %s: %s", key, error)
            return None

    def _gpus_held(self, *, besides: str | None = None) -> dict[str, int]:
        held: dict[str, int] = {}
        for key, (gpu_id, count) in self._reserved.items():
            if key != besides:
                held[gpu_id] = held.get(gpu_id, 0) + count
        for key, tracked in self._servers.items():
            if key != besides and tracked.ref.gpu is not None and tracked.running():
                gpu_id, count = tracked.ref.gpu
                held[gpu_id] = held.get(gpu_id, 0) + count
        return held

    def _reserve_gpu(self, key: str, gpu: ResolvedGpu | None) -> tuple[str, int] | None:
        """Hold GPUs for a start, or refuse when the inventory says too few are free. No await
        between the check and the hold: two starts cannot both take the last GPU."""
        if gpu is None:
            return None
        if self.gpu_inventory:
            total = int(self.gpu_inventory.get(gpu.id, 0))
            held = self._gpus_held(besides=key).get(gpu.id, 0)
            if total == 0:
                raise BackendError(f"This machine has no {gpu.display_name}; choose another GPU.")
            if held + gpu.count > total:
                raise BackendError(
                    f"Not enough {gpu.display_name} free on this machine right now: {held} of "
                    f"{total} in use and you asked for {gpu.count}. Choose fewer or another GPU, "
                    "or try again later."
                )
        self._reserved[key] = (gpu.id, gpu.count)
        return (gpu.id, gpu.count)

    def _cpus_for(self, cpu_limit: int) -> tuple[int, ...] | None:
        load: dict[int, int] = {}
        for tracked in self._servers.values():
            if tracked.ref.cpus and tracked.running():
                for cpu in tracked.ref.cpus:
                    load[cpu] = load.get(cpu, 0) + 1
        return choose_cpus(sorted(os.sched_getaffinity(0)), cores_for(cpu_limit), load)

    def _refs(self, key: str, state: Mapping[str, Any], recorded: ServerRef | None = None) -> list[ServerRef]:
        """The processes a server may have on this boot: the one this object knows, the one the
        state names (they differ only when the state is older than our last start), and the one
        the backend's record names (the only one left when a hub died while starting it)."""
        refs: list[ServerRef] = []
        tracked = self._servers.get(key)
        for ref in (tracked.ref if tracked else None, ServerRef.from_state(state), recorded):
            if ref is not None and not any(ref.same_process(r) for r in refs):
                refs.append(ref)
        return [ref for ref in refs if ref.boot_id == self._boot_id]

    def _forget(self, key: str, ref: ServerRef) -> None:
        tracked = self._servers.get(key)
        if tracked is not None and tracked.process is None and tracked.ref.same_process(ref):
            del self._servers[key]

    async def _terminate(self, ref: ServerRef, *, quick: bool = False) -> bool:
        return await terminate(ref, stop_timeout=self.stop_timeout, quick=quick, log=self.log)

    # -- start ---------------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> Started:
        """Prepare the home, launch the server and wait until it answers HTTP."""
        names = ServerNames(request.identity.user, request.identity.server)
        key = names.pod
        if key in self._starts:
            raise BackendError("This server is already starting; wait for that start to end.")
        # Registered before the first await, so that progress() finds it at once.
        progress = self._starts[key] = StartProgress()
        task = self._track(self._start(request, names, progress), name=f"local-start-{key}")
        self._start_tasks[key] = task
        try:
            # A cancelled start (JupyterHub's own timeout, stop(), close()) cancels the task,
            # whose cleanup ends the process it launched.
            return await asyncio.wait_for(task, timeout=self.start_timeout)
        except asyncio.TimeoutError:
            message = f"Your server did not start within {self.start_timeout:g} seconds."
            progress.emit(message, failed=True)
            raise BackendError(message + " It was stopped; please try again.") from None
        except asyncio.CancelledError:
            if key not in self._aborted:
                raise
            progress.emit("The server was stopped while it was starting.", failed=True)
            raise BackendError("The server was stopped while it was starting.") from None
        except BackendError as error:
            if not (progress.events and progress.events[-1].failed):
                progress.emit(str(error).partition("\n")[0], failed=True)
            raise
        finally:
            progress.end()
            self._aborted.discard(key)
            if self._start_tasks.get(key) is task:
                del self._start_tasks[key]
            if self._starts.get(key) is progress:
                del self._starts[key]

    async def _start(self, request: StartRequest, names: ServerNames, progress: StartProgress) -> Started:
        key, options = names.pod, request.options
        progress.emit("Preparing your home folder", 10)
        account = lookup_account(self.run_as_user)
        # Before anything is touched: a refusal (no GPU free) must not have reset the home.
        gpu = self._reserve_gpu(key, options.gpu)
        try:
            await self._end_earlier(key, request.state)
            home = options.home
            prepared = await asyncio.to_thread(
                prepare_home,
                home_folder(self._home_root(), names, persistent=home is not None),
                reset=home is not None and (home.reset or home.ephemeral),
                owner=(account.uid, account.gid) if account else None,
                now=datetime.now(timezone.utc),
            )
            if prepared.moved_to is not None:
                self.log.info("Moved the home of %s aside to %s", key, prepared.moved_to)
                progress.emit(f"Moved your previous home folder aside to {prepared.moved_to.name}", 20)
            if options.mounts:
                self.log.info(
                    "The local backend does not provide the extra mounts %s of %s",
                    ", ".join(m.id for m in options.mounts),
                    key,
                )
            tracked, log_path = await self._launch(request, names, prepared.path, account, gpu, progress)
        finally:
            self._reserved.pop(key, None)
        try:
            # Before the wait: a hub that dies from here on leaves a process that only this
            # record names (JupyterHub saves the state once start returns).
            await self._write_record(request, names, tracked.ref, home=prepared.path, log=log_path)
            progress.emit("Waiting for the server to answer", 60)
            await self._wait_ready(tracked, request, log_path, progress)
        except BaseException:
            await self._abandon(key, tracked)
            raise
        progress.emit("Server is ready", 100)
        ref = tracked.ref
        self.log.info(
            "Local server %s is ready: pid %d, port %d, home %s", key, ref.pid, ref.port, prepared.path
        )
        state = server_state(ref, home=prepared.path, log=log_path)
        return Started(Endpoint(LOOPBACK, ref.port), state)

    async def _launch(
        self,
        request: StartRequest,
        names: ServerNames,
        home: Path,
        account: Account | None,
        gpu: tuple[str, int] | None,
        progress: StartProgress,
    ) -> tuple[Tracked, Path]:
        key, options = names.pod, request.options
        port = pick_port({t.ref.port for t in self._servers.values() if t.running()})
        marker = f"{key}:{secrets.token_hex(8)}"
        env = server_env(
            options,
            request.single_user,
            port=port,
            home=str(home),
            marker=marker,
            fallback_path=os.environ.get("PATH", os.defpath),
            account=account.environment() if account else None,
        )
        allow_root = needs_allow_root(os.geteuid(), self.run_as_user)
        if allow_root and not self._warned_root:
            self._warned_root = True
            self.log.warning(
                "The hub runs as root and LocalBackend.run_as_user is unset: local servers run "
                "as root (with --allow-root). Set run_as_user to run them as another account."
            )
        argv = server_argv(request.single_user, allow_root=allow_root)
        log_path = log_file(self._log_root(), names)
        log_fd = await asyncio.to_thread(open_log, log_path)
        progress.emit(f"Starting JupyterLab ({Path(argv[0]).name}) on port {port}", 40)
        try:
            # A session of its own: the server outlives the hub (a restarted hub adopts it), and
            # its process group can be signalled as a whole.
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT,
                cwd=home,
                env=env,
                start_new_session=True,
                **(account.process_arguments() if account else {}),
            )
        except OSError as error:
            raise BackendError(
                f"The server command {argv[0]!r} could not be started on this machine "
                f"({error.strerror or error}); please tell the hub's operators."
            ) from None
        finally:
            os.close(log_fd)
        # Read at once: the start time is what tells this process from a later one with its pid.
        stat = read_stat(process.pid)
        limits = AppliedLimits(cpus=None, memory=None)
        if self.enforce_limits:
            cpus = self._cpus_for(options.cpu_limit)
            limits = apply_limits(process.pid, cpus, options.memory_limit)
            for problem in limits.problems:
                self.log.warning("Could not limit local server %s: %s", key, problem)
        ref = ServerRef(
            pid=process.pid,
            start_time=stat.start_time if stat is not None else 0,
            boot_id=self._boot_id,
            port=port,
            marker=marker,
            gpu=gpu,
            cpus=limits.cpus,
        )
        tracked = self._servers[key] = Tracked(ref, process)
        self.log.info("Started local server %s: pid %d, port %d, %s", key, ref.pid, port, argv)
        return tracked, log_path

    async def _write_record(
        self, request: StartRequest, names: ServerNames, ref: ServerRef, *, home: Path, log: Path
    ) -> None:
        record = LaunchRecord(
            server=names.pod,
            instance=request.options.instance,
            user_label=names.user_label,
            server_label=names.server_label,
            created=time.time(),
            ref=ref,
            home=home,
            log=log,
        )
        records = self._records()
        try:
            await asyncio.to_thread(records.write, record)
        except OSError as error:
            # Without its record, a server whose hub dies now could run twice: do not start it.
            self.log.error("Could not write the record of local server %s: %s", names.pod, error)
            raise BackendError(
                f"Your server could not be recorded in {records.folder} ({error.strerror or error}); "
                "please tell the hub's operators."
            ) from None

    async def _wait_ready(
        self, tracked: Tracked, request: StartRequest, log_path: Path, progress: StartProgress
    ) -> None:
        """Return once the server answers HTTP on its port; raise ``BackendError`` (with its last
        output) when it exits first or does not answer within ``http_timeout``."""
        process, ref = tracked.process, tracked.ref
        assert process is not None
        env = dict(request.single_user.env)
        url = env.get("JUPYTERHUB_SERVICE_URL") or env.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
        path = quote(urlsplit(url).path or "/", safe="/%:@!$&'()*+,;=-._~")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        exited = self._track(process.wait(), name=f"local-exit-{ref.pid}")
        delay = 0.05
        try:
            while True:
                # Woken at once when the process exits; otherwise the port is probed now and
                # then (locally a probe is one connect on the loopback).
                await asyncio.wait({exited}, timeout=delay)
                if exited.done():
                    headline = f"JupyterLab stopped while starting ({exit_words(exited.result())})."
                else:
                    # An answer counts only from the server's own socket: another program may
                    # have taken the port first (then ours fails to bind, and exits).
                    if await answers_http(ref.port, path) and (
                        await asyncio.to_thread(listener_is_ours, ref) is not False
                    ):
                        return
                    if loop.time() < deadline:
                        delay = min(delay * 2, 0.5)
                        continue
                    headline = (
                        f"JupyterLab did not answer within {self.http_timeout:g} seconds, so it was stopped."
                    )
                progress.emit(headline, failed=True)
                raise BackendError(await asyncio.to_thread(failure_message, headline, log_path))
        finally:
            exited.cancel()

    async def _abandon(self, key: str, tracked: Tracked) -> None:
        """End a server whose start failed or was cancelled: nothing may be left running."""
        try:
            await self._terminate(tracked.ref, quick=True)
            await self._discard_record(key, [tracked.ref])
            if tracked.process is not None:
                # Collect the exit status too: it closes the process's transport in the loop.
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(tracked.process.wait(), timeout=_REAP_WAIT)
        except asyncio.CancelledError:
            # Cancelled again while cleaning up: no time left to ask politely (nor to leave the
            # record to a worker thread).
            kill_now(tracked.ref)
            with suppress(OSError):
                self._records().discard(key, {tracked.ref.marker})
            raise
        finally:
            if self._servers.get(key) is tracked:
                del self._servers[key]

    async def _end_earlier(self, key: str, state: Mapping[str, Any]) -> None:
        """Before a start (and before any reset): make sure no earlier process of this server, nor
        a kernel it left behind, still runs and writes into the home, whether the state, this
        object or only the backend's record knows it."""
        from_state = ServerRef.from_state(state)
        refs = self._refs(key, state, await self._recorded(key))
        for ref in refs:
            if not await self._terminate(ref):
                continue
            if from_state is not None and from_state.same_process(ref):
                self.log.warning("Stopped a leftover process (pid %d) of %s", ref.pid, key)
            else:
                self.log.warning(
                    "Stopped process %s of %s (marker %s) before starting it again: JupyterHub's "
                    "state did not name it (an earlier start, e.g. by a hub that died while starting it)",
                    ref.pid or "(other than the recorded one)",
                    key,
                    ref.marker,
                )
        self._servers.pop(key, None)
        await self._discard_record(key, refs)

    # -- stop and poll -------------------------------------------------------------------------

    async def stop(self, identity: ServerIdentity, state: Mapping[str, Any]) -> None:
        """Stop the server (and its kernels) and wait until they are gone; fine if already gone."""
        key = ServerNames(identity.user, identity.server).pod
        starting = self._start_tasks.get(key)
        if starting is not None and not starting.done():
            # Stopped while starting: cancelling the start ends the process it launched.
            self._aborted.add(key)
            starting.cancel()
            await asyncio.wait({starting})
        refs = self._refs(key, state, await self._recorded(key))
        for ref in refs:
            await self._terminate(ref)
        await self._discard_record(key, refs)
        tracked = self._servers.get(key)
        if tracked is None:
            return
        if tracked.process is None:
            del self._servers[key]
        elif tracked.process.returncode is None:
            # Gone from /proc means reaped; the status reaches the process object a moment
            # later. The entry is kept so that poll reports that status.
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(tracked.process.wait(), timeout=_REAP_WAIT)

    async def poll(self, identity: ServerIdentity, state: Mapping[str, Any]) -> int | None:
        """``None`` while the server runs; its exit status once gone (0 when unknown)."""
        key = ServerNames(identity.user, identity.server).pod
        if key in self._start_tasks:
            return None
        tracked = self._servers.get(key)
        ref = ServerRef.from_state(state)
        if tracked is not None and (ref is None or ref.same_process(tracked.ref)):
            if tracked.process is not None:
                status = await self._child_status(tracked.process, tracked.ref)
                if status is not None:
                    await self._discard_record(key, [tracked.ref])
                return status
            ref = tracked.ref
        if ref is None:
            return 0
        if ref.boot_id != self._boot_id:
            await self._discard_record(key, [ref])
            return 0
        # Not our child (the hub restarted since): /proc is all there is.
        if not await asyncio.to_thread(is_running, ref.pid, ref.start_time):
            self._forget(key, ref)
            await self._discard_record(key, [ref])
            return 0
        if await asyncio.to_thread(listener_is_ours, ref) is False:
            # Ours and alive, but no longer serving: shutting down or wedged. Calling it gone
            # would leave it running (JupyterHub does not stop what poll calls gone): end it.
            self.log.warning(
                "Local server %s (pid %d) no longer listens on port %d; stopping it",
                key,
                ref.pid,
                ref.port,
            )
            await self._terminate(ref)
            self._forget(key, ref)
            await self._discard_record(key, [ref])
            return 0
        if key not in self._servers:
            # Adopted: its GPUs and CPUs count from now on.
            self._servers[key] = Tracked(ref, None)
        return None

    @staticmethod
    async def _child_status(process: asyncio.subprocess.Process, ref: ServerRef) -> int | None:
        """The status of our own child: the event loop reaps it and records the status, a moment
        after it has left /proc; in that moment, wait for the status rather than say "running"."""
        if process.returncode is not None or is_running(ref.pid, ref.start_time):
            return process.returncode
        try:
            return await asyncio.wait_for(process.wait(), timeout=_REAP_WAIT)
        except asyncio.TimeoutError:
            return 0

    # -- what runs: inventory and removal of orphans ----------------------------------------------

    async def inventory(self, instance: str) -> list[ServerRecord] | None:
        """The servers of ``instance`` that the records name and that still run (or whose
        kernels do: ``running`` is then false), from one scan of ``/proc`` in a worker thread.
        Records of which nothing runs are removed; ``None`` when the records cannot be read."""
        records = self._records()
        try:
            survey = await asyncio.to_thread(records.survey, instance, self._boot_id)
        except OSError as error:
            self.log.warning("Could not read the local servers' records in %s: %s", records.folder, error)
            return None
        for name in survey.unreadable:
            if name not in self._warned_unreadable:
                self._warned_unreadable.add(name)
                self.log.warning("Ignoring %s in %s: not a record of a local server", name, records.folder)
        for gone in survey.removed:
            self._forget(gone.server, gone.ref)
            self.log.debug("Dropped the record of local server %s: nothing of it runs", gone.server)
        found = []
        for sighting in survey.sightings:
            record = sighting.record
            known = self._servers.get(record.server)
            if sighting.running and (
                known is None or (known.process is None and not known.ref.same_process(record.ref))
            ):
                # Found through its record alone (a hub died while starting it): its GPUs and
                # CPUs count from now on, as an adopted server's do.
                self._servers[record.server] = Tracked(record.ref, None)
            found.append(sighting.server_record())
        return found

    async def remove(self, record: ServerRecord) -> None:
        """End a server the reconciler found orphaned (its process and whatever carries its
        marker), wait until it is gone and remove its record; fine if already gone."""
        launched = LaunchRecord.from_json(record.ref)
        if launched is None:
            self.log.warning("Not removing %s: not a record of a local server", record.description)
            return
        key, ref = launched.server, launched.ref
        if ref.boot_id == self._boot_id:
            target = await asyncio.to_thread(trusted_ref, ref)
            await self._terminate(target)
            left = await asyncio.to_thread(find_members, target.pid, target.start_time, target.marker)
            if left:
                raise BackendError(
                    f"Processes {', '.join(str(m.pid) for m in left)} of local server {key} did not "
                    "end; trying again later."
                )
        await self._discard_record(key, [ref])
        tracked = self._servers.get(key)
        if tracked is not None and tracked.ref.same_process(ref):
            if tracked.process is None:
                del self._servers[key]
            elif tracked.process.returncode is None:
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(tracked.process.wait(), timeout=_REAP_WAIT)
        self.log.info("Removed orphaned local server %s (%s)", key, record.description)

    # -- progress, capacity, close ---------------------------------------------------------------

    async def progress(
        self, identity: ServerIdentity, state: Mapping[str, Any]
    ) -> AsyncIterator[ProgressEvent]:
        """The steps of the start in progress; ends at once when none is."""
        start = self._starts.get(ServerNames(identity.user, identity.server).pod)
        if start is None:
            return
        async for event in start.follow():
            yield event

    async def gpu_capacity(self, gpu_types: Mapping[str, GpuType]) -> dict[str, GpuCapacity]:
        """Free and total GPUs of each type from ``gpu_inventory``; ``{}`` when it is empty."""
        if not self.gpu_inventory:
            return {}
        # In the loop, not a worker thread: the table must not change while it is read (a stat
        # read per adopted server is all the I/O).
        held = self._gpus_held()
        capacity = {}
        for gpu_id in gpu_types:
            total = int(self.gpu_inventory.get(gpu_id, 0))
            capacity[gpu_id] = GpuCapacity(gpu=gpu_id, free=max(0, total - held.get(gpu_id, 0)), total=total)
        return capacity

    async def close(self) -> None:
        """Cancel this object's tasks (a start still in progress ends its server). Running
        servers keep running; a new backend object adopts them from their state."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for progress in self._starts.values():
            progress.end()
