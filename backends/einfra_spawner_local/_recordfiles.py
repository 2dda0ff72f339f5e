"""The local backend's own records of the servers it launched: one JSON file per server.

JupyterHub saves a spawner's state only after ``start`` returns, so a hub killed while a start
waits for the server to answer leaves a process that no state names. The backend therefore
writes its own record of a server as soon as the process exists (its pid known, before the wait
for HTTP), and removes it once the server is known to be gone: stopped, failed to start, found
dead. A restarted hub reads the records: ``inventory`` reports the servers that still run, for
the reconciler to compare with JupyterHub, and a new start of a server first ends the process
its record names, so a server never runs twice.

A record is a claim, never a proof. A process counts as the recorded server only when ``/proc``
shows the recorded pid with the recorded start time, on the recorded boot, carrying the server's
marker in its environment (:mod:`._procfs`); anything less and the record names nothing that
may be signalled. The marker is unique to one start, so "remove the record only if it still
names this start" is a comparison of markers.

The file is ``<folder>/<server name>.json`` (``ServerNames.pod``, like the log file), written to
a temporary file and renamed, so a reader never sees half a record. All writes of one backend
go through one lock, so that removing a stale record can never remove the record a start has
just written. Blocking file-system and ``/proc`` reads: the backend calls these in a worker
thread.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from einfra_spawner.backend import ServerRecord

from ._procfs import carries_marker, marked, read_stat
from ._records import ServerRef, server_state

__all__ = ["RECORD_VERSION", "LaunchRecord", "RecordFiles", "Sighting", "Survey", "trusted_ref"]

RECORD_VERSION = 1


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchRecord:
    """One launched server: the process (:class:`ServerRef`), whose server it is and for which
    hub instance, and when it was launched (seconds since the epoch)."""

    server: str
    instance: str
    user_label: str
    server_label: str
    created: float
    ref: ServerRef
    home: Path
    log: Path

    def to_json(self) -> dict[str, Any]:
        """The record as written: the server's state (:func:`server_state`) plus who it is."""
        return {
            **server_state(self.ref, home=self.home, log=self.log),
            "version": RECORD_VERSION,
            "server": self.server,
            "instance": self.instance,
            "user_label": self.user_label,
            "server_label": self.server_label,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LaunchRecord | None:
        """The record ``data`` describes, or ``None`` when it is not a valid record."""
        ref = ServerRef.from_state(data)
        texts = [data.get(key) for key in ("server", "instance", "user_label", "server_label", "home", "log")]
        created = _number(data.get("created"))
        if ref is None or created is None or data.get("version") != RECORD_VERSION:
            return None
        if not all(isinstance(text, str) and text for text in texts):
            return None
        server, instance, user_label, server_label, home, log = (str(text) for text in texts)
        # A marker belongs to one server ("<server name>:<token>"): a record whose marker names
        # another server is not one we wrote.
        if not ref.marker.startswith(f"{server}:"):
            return None
        return cls(
            server=server,
            instance=instance,
            user_label=user_label,
            server_label=server_label,
            created=created,
            ref=ref,
            home=Path(home),
            log=Path(log),
        )


def trusted_ref(ref: ServerRef) -> ServerRef:
    """What may be acted on for a recorded process: the record's own ref when its pid is the
    server (pid, start time and marker) or no longer runs at all; otherwise the ref without its
    pid (``pid`` 0), so that only processes carrying the server's marker are ever signalled.
    The caller has checked the boot id. Blocking: run in a worker thread."""
    stat = read_stat(ref.pid)
    if stat is None or not stat.alive or stat.start_time != ref.start_time:
        return ref
    return ref if carries_marker(ref.pid, ref.marker) else replace(ref, pid=0)


@dataclass(frozen=True, slots=True)
class Sighting:
    """A record with something of its server still running: the server process itself
    (``running``), or only processes carrying its marker (kernels it left behind)."""

    record: LaunchRecord
    running: bool
    pids: tuple[int, ...]

    def server_record(self) -> ServerRecord:
        """As the reconciler sees it; ``ref`` is the whole record, for :meth:`remove`."""
        record, pid = self.record, self.record.ref.pid
        if self.running:
            description = f"process {pid}"
        else:
            description = f"processes {', '.join(map(str, self.pids))} left by process {pid}, which has ended"
        return ServerRecord(
            server_label=record.server_label,
            user_label=record.user_label,
            created=record.created,
            running=self.running,
            ref=record.to_json(),
            description=description,
        )


@dataclass(frozen=True, slots=True)
class Survey:
    """The records of one instance, checked against ``/proc``: those with live processes, those
    removed because nothing of them runs, and files in the folder that are not records."""

    sightings: list[Sighting]
    removed: list[LaunchRecord]
    unreadable: list[str]


class RecordFiles:
    """The records folder of one backend. Blocking; every method may run in a worker thread."""

    def __init__(self, folder: Path, lock: threading.Lock) -> None:
        self.folder = folder
        self._lock = lock

    def _path(self, server: str) -> Path:
        return self.folder / f"{server}.json"

    def write(self, record: LaunchRecord) -> None:
        """Write (or replace) the record of ``record.server``, atomically."""
        path = self._path(record.server)
        temporary = path.with_name(f".{path.name}.tmp")
        data = json.dumps(record.to_json(), indent=2, sort_keys=True).encode()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        with self._lock:
            # 0o700: the records are the hub's; users have no business reading them.
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(temporary, flags, 0o600)
            with os.fdopen(descriptor, "wb") as out:
                out.write(data)
            os.replace(temporary, path)

    def _load(self, path: Path) -> LaunchRecord | None:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        record = LaunchRecord.from_json(data) if isinstance(data, dict) else None
        return record if record is not None and f"{record.server}.json" == path.name else None

    def read(self, server: str) -> LaunchRecord | None:
        """The record of ``server``, or ``None`` when there is none (or none that is valid)."""
        return self._load(self._path(server))

    def read_trusted(self, server: str, boot: str) -> ServerRef | None:
        """What may be acted on for the record of ``server`` (:func:`trusted_ref`); ``None``
        when there is no record, or one from another boot (nothing of it can run)."""
        record = self.read(server)
        if record is None or record.ref.boot_id != boot:
            return None
        return trusted_ref(record.ref)

    def discard(self, server: str, markers: Collection[str]) -> bool:
        """Remove the record of ``server`` if it still names one of the starts ``markers``;
        a record written since, by a later start, is kept. Returns whether it was removed."""
        path = self._path(server)
        with self._lock:
            record = self._load(path)
            if record is None or record.ref.marker not in markers:
                return False
            path.unlink(missing_ok=True)
            return True

    def survey(self, instance: str, boot: str) -> Survey:
        """Every record of ``instance``, checked against ``/proc`` in one scan: live ones are
        returned, those of which nothing runs (or from another boot) are removed. Records of
        other instances are neither returned nor touched. ``OSError`` when the folder cannot be
        read."""
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(self.folder)
                if entry.name.endswith(".json") and not entry.name.startswith(".")
            )
        except FileNotFoundError:
            return Survey([], [], [])
        records, unreadable = [], []
        for name in names:
            record = self._load(self.folder / name)
            if record is None:
                unreadable.append(name)
            elif record.instance == instance:
                records.append(record)
        current = [r for r in records if r.ref.boot_id == boot]
        found = marked([r.ref.marker for r in current])
        sightings, removed = [], []
        for record in records:
            members = found.get(record.ref.marker, []) if record.ref.boot_id == boot else []
            if members:
                # The server itself runs only if its pid, start time and marker all agree.
                running = any(
                    m.pid == record.ref.pid and m.start_time == record.ref.start_time for m in members
                )
                sightings.append(Sighting(record, running, tuple(m.pid for m in members)))
            elif self.discard(record.server, (record.ref.marker,)):
                removed.append(record)
        return Survey(sightings, removed, unreadable)
