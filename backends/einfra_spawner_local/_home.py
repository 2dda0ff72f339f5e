"""Home folders of local servers: where they live, and a reset that never deletes anything.

On Kubernetes a server's home is a volume; here it is a folder under the backend's ``home_root``,
named like the PVC would be (:class:`einfra_spawner.ServerNames`: DNS-safe, unique per
(user, server)). A reset moves the old folder aside to ``<home>.reset-<UTC time>`` and creates an
empty one: a user who reset by mistake can still ask an operator for their files back, and
operators prune the moved folders on their own schedule.

``home_root`` belongs to the hub; only the folders inside it belong to users. Renaming and creating
entries in a folder users cannot write is safe even when the hub runs as root and a user made
their home a symlink: a rename moves the link itself, never what it points to.

Blocking file-system calls (the home may be on NFS): the backend runs them in a worker thread.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from einfra_spawner import BackendError, ServerNames

__all__ = [
    "Folders",
    "PreparedHome",
    "home_folder",
    "log_file",
    "open_log",
    "prepare_home",
    "read_tail",
    "remove_homes",
]

_MAX_TAIL_BYTES = 16_384
_MAX_LINE_CHARS = 300


def _absolute(text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


@dataclass(frozen=True, slots=True)
class Folders:
    """The backend's folders: homes, the servers' logs, and the backend's records."""

    homes: Path
    logs: Path
    records: Path

    @classmethod
    def of(cls, home_root: str, log_root: str, record_root: str) -> Folders:
        """From the backend's settings: ``~`` is the hub user's home, a relative path is
        relative to the hub's working directory, and empty ``log_root`` and ``record_root``
        mean ``logs`` and ``records`` under ``home_root``."""
        homes = _absolute(home_root)
        return cls(
            homes=homes,
            logs=_absolute(log_root) if log_root else homes / "logs",
            records=_absolute(record_root) if record_root else homes / "records",
        )


@dataclass(frozen=True, slots=True)
class PreparedHome:
    """The folder a server starts in, and where an old home was moved (``None``: not moved)."""

    path: Path
    moved_to: Path | None


def home_folder(root: Path, names: ServerNames, *, persistent: bool) -> Path:
    """The home of a server; a profile without a home gets a per-server scratch folder."""
    # ``names.home`` always starts with "home-", so it never meets "scratch" or "logs".
    return root / names.home if persistent else root / "scratch" / names.pod


def log_file(log_root: Path, names: ServerNames) -> Path:
    """Where a server's output goes: in a folder of the hub, never in the user's home (a hub
    running as root must not open a file that a user could have replaced by a symlink)."""
    return log_root / f"{names.pod}.log"


def _aside_path(home: Path, now: datetime) -> Path:
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = home.with_name(f"{home.name}.reset-{stamp}")
    n = 1
    while os.path.lexists(candidate):  # two resets within one second
        n += 1
        candidate = home.with_name(f"{home.name}.reset-{stamp}-{n}")
    return candidate


def _is_empty_folder(path: Path) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def prepare_home(path: Path, *, reset: bool, owner: tuple[int, int] | None, now: datetime) -> PreparedHome:
    """Make sure ``path`` is a folder for the server; with ``reset``, move the old one aside
    first. ``owner`` (uid, gid): who the folder must belong to (``None``: the hub's user)."""
    # 0o755: a server running as another user must be able to reach its home through the root.
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    moved_to = None
    exists = os.path.lexists(path)
    if exists and path.is_symlink():
        raise BackendError(
            f"Your home folder {path} is a link, not a folder; ask the hub's operators to fix it."
        )
    if reset and exists and not (path.is_dir() and _is_empty_folder(path)):
        # An empty folder has nothing to keep: it is already a fresh home.
        moved_to = _aside_path(path, now)
        os.rename(path, moved_to)
        exists = False
    if not exists:
        path.mkdir(mode=0o700)
    elif not path.is_dir():
        raise BackendError(f"Your home folder {path} is not a folder; ask the hub's operators to fix it.")
    if owner is not None:
        os.chown(path, owner[0], owner[1], follow_symlinks=False)
    return PreparedHome(path=path, moved_to=moved_to)


def remove_homes(root: Path, names: ServerNames) -> list[Path]:
    """Delete a deleted server's home and the homes its resets moved aside (the instance said
    ``homes.on_delete: delete``); returns what was removed. Only entries of ``root`` named
    after this server are touched, a link is removed as a link (never followed), and a tree
    is removed without following the links inside it."""
    removed: list[Path] = []
    aside = f"{names.home}.reset-"
    if not root.is_dir():
        return removed
    with os.scandir(root) as entries:
        found = sorted(e.name for e in entries if e.name == names.home or e.name.startswith(aside))
    for name in found:
        path = root / name
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
        removed.append(path)
    return removed


def open_log(path: Path) -> int:
    """A fresh log file for one run (the previous run's log kept as ``.log.1``); returns its
    descriptor, which the server inherits as its stdout and stderr."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        os.replace(path, path.with_name(path.name + ".1"))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags, 0o600)


def read_tail(path: Path, lines: int = 12) -> list[str]:
    """The last ``lines`` non-empty lines of a log file (``[]`` when there is none)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _MAX_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace")
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [
        line if len(line) <= _MAX_LINE_CHARS else line[: _MAX_LINE_CHARS - 3] + "..."
        for line in kept[-lines:]
    ]
