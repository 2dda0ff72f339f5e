"""What ``/proc`` says about the local backend's processes: who they are and whether they listen.

The local backend persists a server as (pid, start time, boot id, marker) in the spawner's state,
so a restarted hub must find its servers again from those facts alone, and must never mistake a
stranger for one of them. A pid alone is not an identity (pids are reused); a pid plus its start
time (clock ticks since boot, field 22 of ``/proc/PID/stat``) plus the boot id is one.

Kernels and terminals of a Jupyter server run in sessions of their own (jupyter_client and
terminado call ``setsid``), so the server's process group does not hold them. Every process of a
server therefore inherits a marker variable in its environment; a stop finds them by that marker
and by descent, even after the server itself is gone and they were re-parented.

Plain blocking reads of procfs (cheap, in memory); the backend runs the scans in a worker thread.
Linux only.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Collection, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MARKER_VARIABLE",
    "ProcStat",
    "boot_id",
    "carries_marker",
    "find_members",
    "is_running",
    "listens",
    "marked",
    "read_stat",
    "send_signal",
    "signal_group",
]

PROC = Path("/proc")
#: The environment variable that every process of one server inherits.
MARKER_VARIABLE = "EINFRA_LOCAL_SERVER"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the backend needs."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    start_time: int

    @property
    def alive(self) -> bool:
        # A zombie has exited; it only waits for its parent to collect the status.
        return self.state not in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    """The stat of ``pid``, or ``None`` when there is no such process."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and parentheses:
    # split after the last closing one.
    _command, sep, tail = raw.rpartition(b")")
    if not sep:
        return None
    fields = tail.split()
    try:
        return ProcStat(
            pid=pid,
            state=fields[0].decode("ascii", "replace"),
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            start_time=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def boot_id() -> str:
    """This boot's id: a start time from before a reboot means a different process."""
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def is_running(pid: int, start_time: int) -> bool:
    """Whether the process ``pid`` that started at ``start_time`` still runs."""
    stat = read_stat(pid)
    return stat is not None and stat.start_time == start_time and stat.alive


def _all_stats() -> list[ProcStat]:
    stats = []
    with os.scandir(PROC) as entries:
        for entry in entries:
            if entry.name.isdigit():
                stat = read_stat(int(entry.name))
                if stat is not None and stat.alive:
                    stats.append(stat)
    return stats


def _environ(pid: int) -> list[bytes]:
    try:
        return (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        # Another user's process (we could not signal it anyway) or one that just ended.
        return []


def _carries(pid: int, marker_line: bytes) -> bool:
    return marker_line in _environ(pid)


def carries_marker(pid: int, marker: str) -> bool:
    """Whether the process ``pid`` inherited the marker ``marker`` (``False`` when it cannot be
    told: another user's process, or one that just ended)."""
    return bool(marker) and _carries(pid, f"{MARKER_VARIABLE}={marker}".encode())


def marked(markers: Collection[str]) -> dict[str, list[ProcStat]]:
    """The live processes carrying each of ``markers``, in one scan of ``/proc`` for them all
    (a marker no process carries is missing from the result)."""
    wanted = {f"{MARKER_VARIABLE}={marker}".encode(): marker for marker in markers if marker}
    found: dict[str, list[ProcStat]] = {}
    if not wanted:
        return found
    prefix = f"{MARKER_VARIABLE}=".encode()
    for stat in _all_stats():
        for item in _environ(stat.pid):
            if item.startswith(prefix):
                if item in wanted:
                    found.setdefault(wanted[item], []).append(stat)
                break
    return found


def find_members(pid: int, start_time: int, marker: str) -> list[ProcStat]:
    """Every live process of one server: the server itself (when pid and start time match), the
    processes carrying its marker, and all their descendants."""
    stats = _all_stats()
    marker_line = f"{MARKER_VARIABLE}={marker}".encode() if marker else b""
    members: dict[int, ProcStat] = {}
    for stat in stats:
        if (stat.pid == pid and stat.start_time == start_time) or (
            marker_line and _carries(stat.pid, marker_line)
        ):
            members[stat.pid] = stat
    # Descendants that dropped the marker (a program may clear its environment) still belong to
    # the server as long as their parent chain leads to it.
    children: dict[int, list[ProcStat]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
    pending = list(members)
    while pending:
        for child in children.get(pending.pop(), ()):
            if child.pid not in members:
                members[child.pid] = child
                pending.append(child.pid)
    return sorted(members.values(), key=lambda s: s.pid)


def send_signal(stat: ProcStat, signum: signal.Signals) -> bool:
    """Signal one process after checking it is still the one found (pid and start time)."""
    current = read_stat(stat.pid)
    if current is None or current.start_time != stat.start_time or not current.alive:
        return False
    try:
        os.kill(stat.pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_group(members: Iterable[ProcStat], signum: signal.Signals) -> None:
    """Signal the process groups led by members: a group catches a child forked a moment ago
    that no scan has seen yet. Only groups whose leader is a verified member are signalled."""
    for stat in members:
        if stat.pgrp == stat.pid and is_running(stat.pid, stat.start_time):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(stat.pid, signum)


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            local_port = fields[1].rpartition(":")[2]
            if int(local_port, 16) == port:
                inodes.add(fields[9])
    return inodes


def listens(pids: Collection[int], port: int) -> bool | None:
    """Whether one of ``pids`` holds a listening TCP socket on ``port``; ``None`` when that cannot
    be told (another user's process whose descriptors we may not read)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return False
    unreadable = False
    for pid in pids:
        fd_dir = PROC / str(pid) / "fd"
        try:
            names = os.listdir(fd_dir)
        except PermissionError:
            unreadable = True
            continue
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(fd_dir / name) in wanted:
                    return True
            except OSError:
                continue
    return None if unreadable else False
