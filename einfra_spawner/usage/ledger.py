"""The usage ledger: one row per run of a server, in any SQLAlchemy database (blocking I/O).

Where it sits in the data flow: the spawner opens an interval when it admits a start (after the
quota check, in the same transaction, so two concurrent starts cannot both take the last GPU),
marks it running when the backend has started the server, records "last seen running" as polls
see it, and closes it at stop. After a hub crash, a server that poll finds gone is closed at its
last-seen time: never at "now" (the hub cannot know when it died) and never left open. A start
that never ran (refused by the backend, or cut short by a crash) leaves no interval.

The ledger is in three parts, one role each:

* :mod:`.intervals`: the statements, each a function of an open connection
  (:func:`~.intervals.open_interval`, :func:`~.intervals.mark_running`,
  :func:`~.intervals.seen_running`, :func:`~.intervals.end_interval`, the reads), with the rules
  of a run;
* this module: :class:`Ledger`, the database (its engine, migrated when opened) and one
  transaction per call (the command line, tests, and the worker thread's reads);
* :mod:`.async_ledger`: :class:`~.async_ledger.AsyncLedger`, which runs them on one worker thread,
  off the hub's event loop, and commits the writes that queued up meanwhile together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa

from .cost import Interval
from .intervals import (
    Write,
    drop_reservations,
    end_interval,
    interval_by_id,
    intervals_by_ids,
    intervals_overlapping,
    mark_running,
    open_interval,
    open_interval_by_id,
    open_intervals,
    seen_running,
)
from .schema import migrate

__all__ = ["Ledger"]

T = TypeVar("T")


def _sqlite_write_ahead(connection: Any, _record: Any) -> None:
    """Every start and stop commits; in SQLite's default rollback journal each commit syncs the
    file twice, which made a storm of spawns wait on the disk. A write-ahead log with NORMAL
    syncing keeps every commit across a process crash (a power cut may lose the last ones)."""
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class Ledger:
    """The intervals in the database at ``url`` (migrated to the current schema when opened);
    each method is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_write_ahead)
        migrate(self.engine)

    def dispose(self) -> None:
        """Close the database connections."""
        self.engine.dispose()

    def run(self, write: Write[T]) -> T:
        """Run ``write`` in a transaction of its own."""
        with self.engine.begin() as connection:
            return write(connection)

    def _read(self, read: Callable[[sa.Connection], T]) -> T:
        """Run ``read`` on a connection of its own (no transaction to commit)."""
        with self.engine.connect() as connection:
            return read(connection)

    def open(
        self,
        interval: Interval,
        admit: Callable[[list[Interval]], str | None] | None = None,
        *,
        whole_instance: bool = True,
    ) -> Interval:
        """:func:`~.intervals.open_interval` in a transaction of its own."""
        return self.run(partial(open_interval, interval=interval, admit=admit, whole_instance=whole_instance))

    def mark_running(self, interval_id: int, now: float) -> None:
        """:func:`~.intervals.mark_running` in a transaction of its own."""
        self.run(partial(mark_running, interval_id=interval_id, now=now))

    def seen_running(self, interval_id: int, now: float) -> Interval | None:
        """:func:`~.intervals.seen_running`; returns the interval as it was before (its
        ``last_seen`` says since when the cost accrued; ``None`` for a reservation, which becomes
        a run from its admission), or ``None`` if it is not open."""
        with self.engine.begin() as connection:
            before = open_interval_by_id(connection, interval_id)
            if before is None:
                return None
            seen_running(connection, interval_id, now)
            return before

    def end(self, interval_id: int, at: float | None = None, *, ran: bool = False) -> Interval | None:
        """:func:`~.intervals.end_interval` in a transaction of its own."""
        return self.run(partial(end_interval, interval_id=interval_id, at=at, ran=ran))

    def drop_reservations(self, instance: str, before: float | None = None) -> int:
        """Forget starts that never ran: at hub start, these are starts a crash cut short
        (JupyterHub abandons a start in progress when it restarts). With ``before`` (the time
        this hub process started), only reservations made earlier go, so a sweep that is tried
        again later never drops a start admitted meanwhile. Returns how many."""
        return self.run(partial(drop_reservations, instance=instance, before=before))

    def open_intervals(self, instance: str) -> list[Interval]:
        """Everything running or starting on ``instance``."""
        return self._read(partial(open_intervals, instance=instance))

    def get(self, interval_id: int) -> Interval | None:
        """The interval ``interval_id``, open or closed (``None`` if there is none)."""
        return self._read(partial(interval_by_id, interval_id=interval_id))

    def get_many(self, interval_ids: Sequence[int]) -> dict[int, Interval]:
        """The intervals of ``interval_ids`` that exist, by id (a few queries of many ids each)."""
        return self._read(partial(intervals_by_ids, interval_ids=interval_ids))

    def intervals(
        self,
        since: float,
        until: float,
        instance: str | None = None,
        users: Sequence[str] = (),
        running_only_if_seen: bool = True,
    ) -> list[Interval]:
        """Intervals that overlap ``[since, until]`` (open ones included), oldest first.

        Reservations (starts not yet running) cost nothing and are left out unless
        ``running_only_if_seen`` is false.
        """
        return self._read(
            partial(
                intervals_overlapping,
                since=since,
                until=until,
                instance=instance,
                users=users,
                running_only_if_seen=running_only_if_seen,
            )
        )
