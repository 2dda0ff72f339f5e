"""What the local backend remembers about a server: in its state, and in its own table (its
records on disk are :mod:`._recordfiles`).

The state (JSON, persisted by the spawner through JupyterHub's ``get_state``/``load_state``) is
the only thing a restarted hub has; :class:`ServerRef` is the part of it that identifies the
process, parsed defensively (a state may be empty, old, or written by another backend).
"""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from einfra_spawner import BackendError

from ._launch import LOOPBACK
from ._procfs import is_running

__all__ = ["STATE_VERSION", "Account", "ServerRef", "Tracked", "lookup_account", "server_state"]

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ServerRef:
    """One started server process: who it is (pid, start time, boot id, marker), where it
    listens, and what it holds (GPUs, pinned CPUs)."""

    pid: int
    start_time: int
    boot_id: str
    port: int
    marker: str
    gpu: tuple[str, int] | None = None
    cpus: tuple[int, ...] | None = None

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ServerRef | None:
        """The process a state describes, or ``None`` for an empty or foreign state."""

        def integer(key: str) -> int | None:
            value = state.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        pid, start_time, port = integer("pid"), integer("start_time"), integer("port")
        marker, boot = state.get("marker"), state.get("boot_id")
        if pid is None or start_time is None or port is None or pid <= 0:
            return None
        if not isinstance(marker, str) or not isinstance(boot, str):
            return None
        gpu = None
        raw_gpu = state.get("gpu")
        if isinstance(raw_gpu, Mapping):
            gpu_id, count = raw_gpu.get("id"), raw_gpu.get("count")
            if isinstance(gpu_id, str) and isinstance(count, int) and not isinstance(count, bool):
                gpu = (gpu_id, count)
        raw_cpus = state.get("cpus")
        cpus = None
        if isinstance(raw_cpus, list) and all(type(c) is int for c in raw_cpus):
            cpus = tuple(raw_cpus)
        return cls(pid, start_time, boot, port, marker, gpu, cpus)

    def same_process(self, other: ServerRef) -> bool:
        """Whether both name the same process (pid, start time and boot)."""
        mine = (self.pid, self.start_time, self.boot_id)
        return mine == (other.pid, other.start_time, other.boot_id)


def server_state(ref: ServerRef, *, home: Path, log: Path) -> dict[str, Any]:
    """The JSON state of a started server (what :meth:`ServerRef.from_state` reads back)."""
    return {
        "version": STATE_VERSION,
        "pid": ref.pid,
        "start_time": ref.start_time,
        "boot_id": ref.boot_id,
        "ip": LOOPBACK,
        "port": ref.port,
        "home": str(home),
        "log": str(log),
        "marker": ref.marker,
        "gpu": {"id": ref.gpu[0], "count": ref.gpu[1]} if ref.gpu else None,
        "cpus": list(ref.cpus) if ref.cpus is not None else None,
    }


@dataclass(slots=True)
class Tracked:
    """A server this backend object knows: started by it (``process`` set) or adopted after a
    hub restart from its state or its record (``process`` is ``None``: not our child any more)."""

    ref: ServerRef
    process: asyncio.subprocess.Process | None

    def running(self) -> bool:
        """Whether it still runs (our child: as the event loop saw it reaped; else /proc)."""
        if self.process is not None:
            return self.process.returncode is None
        return is_running(self.ref.pid, self.ref.start_time)


@dataclass(frozen=True, slots=True)
class Account:
    """The system account servers run as (``run_as_user``)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    shell: str

    def environment(self) -> dict[str, str]:
        """The variables a login as this account would set (besides ``HOME``)."""
        return {"USER": self.name, "LOGNAME": self.name, "SHELL": self.shell}

    def process_arguments(self) -> dict[str, Any]:
        """``create_subprocess_exec`` arguments that switch to the account. The supplementary
        groups are set too: without ``extra_groups`` a child of root keeps root's groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def lookup_account(name: str | None) -> Account | None:
    """The account named by ``run_as_user`` (``None``: unset), or ``BackendError`` when it cannot
    be used."""
    if not name:
        return None
    if os.geteuid() != 0:
        raise BackendError(
            f"This hub is set up to run servers as {name!r}, but it does not run as root and "
            "cannot switch users; please tell the hub's operators."
        )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise BackendError(
            f"This hub is set up to run servers as {name!r}, but there is no such user on this "
            "machine; please tell the hub's operators."
        ) from None
    groups = tuple(os.getgrouplist(name, entry.pw_gid))
    return Account(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_shell)
