"""Starting a local server: home folder, launch, record, and waiting until it answers HTTP.

The steps of one start, in order: hold its GPUs (refused at once when too few are free, before
anything is touched), end any earlier process of the same server, prepare the home folder (a
reset moves the old one aside), launch ``jupyterhub-singleuser`` as an asyncio subprocess in a
session of its own, write the backend's record of it, and wait until it answers HTTP on its
port. A start that fails or is cancelled after the launch ends the process it launched.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Coroutine
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from einfra_spawner import BackendError, ServerNames
from einfra_spawner.backend import Endpoint, ProgressEvent, Started, StartRequest
from einfra_spawner.progress import StartProgress

from ._home import Folders, home_folder, log_file, open_log, prepare_home
from ._launch import (
    LOOPBACK,
    AppliedLimits,
    apply_limits,
    needs_allow_root,
    pick_port,
    server_argv,
    server_env,
)
from ._lifecycle import answers_http, exit_words, failure_message, kill_now, listener_is_ours
from ._procfs import read_stat
from ._recordfiles import LaunchRecord
from ._records import Account, ServerRef, Tracked, lookup_account, server_state
from ._servers import Servers
from ._stop import REAP_WAIT, Stopper

if TYPE_CHECKING:
    from ._backend import LocalBackend

__all__ = ["Launcher", "Track"]

#: Runs a coroutine as a task of the backend's (named), for close() to cancel.
Track = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


class Launcher:
    """Starts the backend's servers (one object per backend, any number of starts at once)."""

    def __init__(self, backend: LocalBackend, servers: Servers, stopper: Stopper, track: Track) -> None:
        self._backend = backend
        self._servers = servers
        self._stopper = stopper
        # Tasks are the backend's, so that its close() cancels them.
        self._track = track
        self._warned_root = False

    def _folders(self) -> Folders:
        backend = self._backend
        return Folders.of(backend.home_root, backend.log_root, backend.record_root)

    async def start(self, request: StartRequest, names: ServerNames, progress: StartProgress) -> Started:
        """Run the steps of one start, writing them into ``progress``."""
        backend, servers = self._backend, self._servers
        key, options = names.pod, request.options
        progress.add(ProgressEvent("Preparing your home folder", 10))
        account = lookup_account(backend.run_as_user)
        # Before anything is touched: a refusal (no GPU free) must not have reset the home.
        gpu = servers.reserve_gpu(key, options.gpu, backend.gpu_inventory)
        try:
            await self._stopper.end_earlier(key, request.state)
            home = options.home
            prepared = await asyncio.to_thread(
                prepare_home,
                home_folder(self._folders().homes, names, persistent=home is not None),
                reset=home is not None and (home.reset or home.ephemeral),
                owner=(account.uid, account.gid) if account else None,
                now=datetime.now(timezone.utc),
            )
            if prepared.moved_to is not None:
                backend.log.info("Moved the home of %s aside to %s", key, prepared.moved_to)
                moved = f"Moved your previous home folder aside to {prepared.moved_to.name}"
                progress.add(ProgressEvent(moved, 20))
            if options.mounts:
                backend.log.info(
                    "The local backend does not provide the extra mounts %s of %s",
                    ", ".join(m.id for m in options.mounts),
                    key,
                )
            tracked, log_path = await self._launch(request, names, prepared.path, account, gpu, progress)
        finally:
            servers.release_gpu(key)
        try:
            # Before the wait: a hub that dies from here on leaves a process that only this
            # record names (JupyterHub saves the state once start returns).
            await self._write_record(request, names, tracked.ref, home=prepared.path, log=log_path)
            progress.add(ProgressEvent("Waiting for the server to answer", 60))
            await self._wait_ready(tracked, request, log_path, progress)
        except BaseException:
            await self._abandon(key, tracked)
            raise
        progress.add(ProgressEvent("Server is ready", 100))
        ref = tracked.ref
        backend.log.info(
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
        backend, servers = self._backend, self._servers
        key, options = names.pod, request.options
        port = pick_port(servers.ports())
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
        allow_root = needs_allow_root(os.geteuid(), backend.run_as_user)
        if allow_root and not self._warned_root:
            self._warned_root = True
            backend.log.warning(
                "The hub runs as root and LocalBackend.run_as_user is unset: local servers run "
                "as root (with --allow-root). Set run_as_user to run them as another account."
            )
        argv = server_argv(request.single_user, allow_root=allow_root)
        log_path = log_file(self._folders().logs, names)
        log_fd = await asyncio.to_thread(open_log, log_path)
        progress.add(ProgressEvent(f"Starting JupyterLab ({Path(argv[0]).name}) on port {port}", 40))
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
        if backend.enforce_limits:
            cpus = servers.cpus_for(options.cpu_limit)
            limits = apply_limits(process.pid, cpus, options.memory_limit)
            for problem in limits.problems:
                backend.log.warning("Could not limit local server %s: %s", key, problem)
        ref = ServerRef(
            pid=process.pid,
            start_time=stat.start_time if stat is not None else 0,
            boot_id=servers.boot_id,
            port=port,
            marker=marker,
            gpu=gpu,
            cpus=limits.cpus,
        )
        tracked = servers.tracked[key] = Tracked(ref, process)
        backend.log.info("Started local server %s: pid %d, port %d, %s", key, ref.pid, port, argv)
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
        records = self._stopper.records
        try:
            await asyncio.to_thread(records.write, record)
        except OSError as error:
            # Without its record, a server whose hub dies now could run twice: do not start it.
            self._backend.log.error("Could not write the record of local server %s: %s", names.pod, error)
            raise BackendError(
                f"Your server could not be recorded in {records.folder} ({error.strerror or error}); "
                "please tell the hub's operators."
            ) from None

    async def _wait_ready(
        self, tracked: Tracked, request: StartRequest, log_path: Path, progress: StartProgress
    ) -> None:
        """Return once the server answers HTTP on its port; raise ``BackendError`` (with its last
        output) when it exits first or does not answer within ``http_timeout``."""
        http_timeout = self._backend.http_timeout
        process, ref = tracked.process, tracked.ref
        assert process is not None
        env = dict(request.single_user.env)
        url = env.get("JUPYTERHUB_SERVICE_URL") or env.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
        path = quote(urlsplit(url).path or "/", safe="/%:@!$&'()*+,;=-._~")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + http_timeout
        exited = self._track(process.wait(), f"local-exit-{ref.pid}")
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
                        f"JupyterLab did not answer within {http_timeout:g} seconds, so it was stopped."
                    )
                progress.add(ProgressEvent(headline, None, failed=True))
                raise BackendError(await asyncio.to_thread(failure_message, headline, log_path))
        finally:
            exited.cancel()

    async def _abandon(self, key: str, tracked: Tracked) -> None:
        """End a server whose start failed or was cancelled: nothing may be left running."""
        try:
            await self._stopper.terminate(tracked.ref, quick=True)
            await self._stopper.discard_record(key, [tracked.ref])
            if tracked.process is not None:
                # Collect the exit status too: it closes the process's transport in the loop.
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(tracked.process.wait(), timeout=REAP_WAIT)
        except asyncio.CancelledError:
            # Cancelled again while cleaning up: no time left to ask politely (nor to leave the
            # record to a worker thread).
            kill_now(tracked.ref)
            with suppress(OSError):
                self._stopper.records.discard(key, {tracked.ref.marker})
            raise
        finally:
            if self._servers.tracked.get(key) is tracked:
                del self._servers.tracked[key]
