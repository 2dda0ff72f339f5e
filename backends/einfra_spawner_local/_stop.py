"""Stopping local servers and telling whether they run: ``stop``, ``poll``, orphan removal.

A server may be known three ways: as this object's child, by the ``state`` JupyterHub saved, and
by the backend's record (:mod:`._recordfiles`), the only trace when a hub died while starting it.
Every process is acted on only when ``/proc`` proves it is the server's (:mod:`._lifecycle`), and
a server's record is removed once nothing of it runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from einfra_spawner import BackendError
from einfra_spawner.backend import ServerRecord

from ._home import Folders
from ._lifecycle import listener_is_ours, terminate
from ._procfs import find_members, is_running
from ._recordfiles import LaunchRecord, RecordFiles, trusted_ref
from ._records import ServerRef, Tracked
from ._servers import Servers

if TYPE_CHECKING:
    from ._backend import LocalBackend

__all__ = ["REAP_WAIT", "Stopper"]

#: How long to wait for the event loop to collect the exit status of a child that has ended.
REAP_WAIT = 5.0


class Stopper:
    """Ends servers and reports on them, with the backend's records (one per backend object)."""

    def __init__(self, backend: LocalBackend, servers: Servers) -> None:
        self._backend = backend
        self._servers = servers
        # One lock for every write of the records folder (see RecordFiles.discard).
        self._record_lock = threading.Lock()

    @property
    def records(self) -> RecordFiles:
        """The backend's records (in the folder its settings name now)."""
        backend = self._backend
        folder = Folders.of(backend.home_root, backend.log_root, backend.record_root).records
        return RecordFiles(folder, self._record_lock)

    async def discard_record(self, key: str, refs: list[ServerRef]) -> None:
        """Remove the record of ``key`` if it names one of these processes' starts (they are
        gone). Never fails the caller: a record left behind is dropped by the next inventory."""
        try:
            await asyncio.to_thread(self.records.discard, key, {ref.marker for ref in refs})
        except OSError as error:
            self._backend.log.warning("Could not remove the record of local server %s: %s", key, error)

    async def recorded(self, key: str) -> ServerRef | None:
        """The process the record of ``key`` names, as far as ``/proc`` proves it is the
        server's (:func:`trusted_ref`); ``None``: no record, or one from another boot."""
        try:
            return await asyncio.to_thread(self.records.read_trusted, key, self._servers.boot_id)
        except OSError as error:
            self._backend.log.warning("Could not read the record of local server %s: %s", key, error)
            return None

    async def terminate(self, ref: ServerRef, *, quick: bool = False) -> bool:
        """End the server ``ref`` and whatever carries its marker; whether there was anything."""
        backend = self._backend
        return await terminate(ref, stop_timeout=backend.stop_timeout, quick=quick, log=backend.log)

    async def end_earlier(self, key: str, state: Mapping[str, Any]) -> None:
        """Before a start (and before any reset): make sure no earlier process of this server, nor
        a kernel it left behind, still runs and writes into the home, whether the state, this
        object or only the backend's record knows it."""
        log = self._backend.log
        from_state = ServerRef.from_state(state)
        refs = self._servers.refs(key, state, await self.recorded(key))
        for ref in refs:
            if not await self.terminate(ref):
                continue
            if from_state is not None and from_state.same_process(ref):
                log.warning("Stopped a leftover process (pid %d) of %s", ref.pid, key)
            else:
                log.warning(
                    "Stopped process %s of %s (marker %s) before starting it again: JupyterHub's "
                    "state did not name it (an earlier start, e.g. by a hub that died while starting it)",
                    ref.pid or "(other than the recorded one)",
                    key,
                    ref.marker,
                )
        self._servers.tracked.pop(key, None)
        await self.discard_record(key, refs)

    async def stop(self, key: str, state: Mapping[str, Any]) -> None:
        """End every process the server may have, and wait until they are gone."""
        refs = self._servers.refs(key, state, await self.recorded(key))
        for ref in refs:
            await self.terminate(ref)
        await self.discard_record(key, refs)
        tracked = self._servers.tracked.get(key)
        if tracked is not None:
            await self._reaped(key, tracked)

    async def _reaped(self, key: str, tracked: Tracked) -> None:
        """Drop an adopted server once gone; wait for our own child's exit status instead: gone
        from /proc means reaped, the status reaches the process object a moment later, and the
        entry is kept so that poll reports that status."""
        if tracked.process is None:
            del self._servers.tracked[key]
        elif tracked.process.returncode is None:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(tracked.process.wait(), timeout=REAP_WAIT)

    async def poll(self, key: str, state: Mapping[str, Any]) -> int | None:
        """``None`` while the server runs; its exit status once gone (0 when unknown)."""
        servers = self._servers
        tracked = servers.tracked.get(key)
        ref = ServerRef.from_state(state)
        if tracked is not None and (ref is None or ref.same_process(tracked.ref)):
            if tracked.process is not None:
                status = await _child_status(tracked.process, tracked.ref)
                if status is not None:
                    await self.discard_record(key, [tracked.ref])
                return status
            ref = tracked.ref
        if ref is None:
            return 0
        if ref.boot_id != servers.boot_id:
            await self.discard_record(key, [ref])
            return 0
        # Not our child (the hub restarted since): /proc is all there is.
        if not await asyncio.to_thread(is_running, ref.pid, ref.start_time):
            servers.forget(key, ref)
            await self.discard_record(key, [ref])
            return 0
        if await asyncio.to_thread(listener_is_ours, ref) is False:
            # Ours and alive, but no longer serving: shutting down or wedged. Calling it gone
            # would leave it running (JupyterHub does not stop what poll calls gone): end it.
            self._backend.log.warning(
                "Local server %s (pid %d) no longer listens on port %d; stopping it",
                key,
                ref.pid,
                ref.port,
            )
            await self.terminate(ref)
            servers.forget(key, ref)
            await self.discard_record(key, [ref])
            return 0
        if key not in servers.tracked:
            servers.adopt(key, ref)
        return None

    async def remove(self, record: ServerRecord) -> None:
        """End a server the reconciler found orphaned (its process and whatever carries its
        marker), wait until it is gone and remove its record; fine if already gone."""
        log = self._backend.log
        launched = LaunchRecord.from_json(record.ref)
        if launched is None:
            log.warning("Not removing %s: not a record of a local server", record.description)
            return
        key, ref = launched.server, launched.ref
        if ref.boot_id == self._servers.boot_id:
            target = await asyncio.to_thread(trusted_ref, ref)
            await self.terminate(target)
            left = await asyncio.to_thread(find_members, target.pid, target.start_time, target.marker)
            if left:
                raise BackendError(
                    f"Processes {', '.join(str(m.pid) for m in left)} of local server {key} did not "
                    "end; trying again later."
                )
        await self.discard_record(key, [ref])
        tracked = self._servers.tracked.get(key)
        if tracked is not None and tracked.ref.same_process(ref):
            await self._reaped(key, tracked)
        log.info("Removed orphaned local server %s (%s)", key, record.description)


async def _child_status(process: asyncio.subprocess.Process, ref: ServerRef) -> int | None:
    """The status of our own child: the event loop reaps it and records the status, a moment
    after it has left /proc; in that moment, wait for the status rather than say "running"."""
    if process.returncode is not None or is_running(ref.pid, ref.start_time):
        return process.returncode
    try:
        return await asyncio.wait_for(process.wait(), timeout=REAP_WAIT)
    except asyncio.TimeoutError:
        return 0
