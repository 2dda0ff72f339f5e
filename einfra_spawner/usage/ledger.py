"""The usage ledger: one row per run of a server, in any SQLAlchemy database (blocking I/O).

Where it sits in the data flow: the spawner opens an interval when it admits a start (after the
quota check, in the same transaction, so two concurrent starts cannot both take the last GPU),
marks it running when the backend has started the server, records "last seen running" at every
poll, and closes it at stop. After a hub crash, a server that poll finds gone is closed at its
last-seen time: never at "now" (the hub cannot know when it died) and never left open. A start
that never ran (refused by the backend, or cut short by a crash) leaves no interval.

:class:`Ledger` is synchronous and short (a few indexed statements per call).
:class:`AsyncLedger` runs it on one worker thread, which keeps database latency off the hub's
event loop and serialises this process's writes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa

from .cost import Interval, Rates
from .schema import INTERVALS, migrate

__all__ = ["AsyncLedger", "Ledger", "QuotaExceeded"]

T = TypeVar("T")
_COLUMNS = INTERVALS.c


class QuotaExceeded(Exception):
    """A start refused by a quota; the message says the limit and what is in use."""


def _row_values(interval: Interval) -> dict[str, Any]:
    return {
        "instance": interval.instance,
        "user_name": interval.user,
        "server_name": interval.server,
        "profile": interval.profile,
        "groups": json.dumps(sorted(interval.groups)),
        "cpu_millicores": interval.cpu_millicores,
        "memory_bytes": interval.memory_bytes,
        "gpu": interval.gpu,
        "gpu_count": interval.gpu_count,
        "currency": interval.rates.currency,
        "cpu_hour": str(interval.rates.cpu_hour),
        "memory_gib_hour": str(interval.rates.memory_gib_hour),
        "gpu_hour": str(interval.rates.gpu_hour),
        "started": interval.started,
        "last_seen": interval.last_seen,
        "stopped": interval.stopped,
    }


def _interval(row: sa.Row[Any]) -> Interval:
    return Interval(
        id=row.id,
        instance=row.instance,
        user=row.user_name,
        server=row.server_name,
        profile=row.profile,
        groups=tuple(json.loads(row.groups)),
        cpu_millicores=row.cpu_millicores,
        memory_bytes=row.memory_bytes,
        gpu=row.gpu,
        gpu_count=row.gpu_count,
        rates=Rates(
            currency=row.currency,
            cpu_hour=Decimal(row.cpu_hour),
            memory_gib_hour=Decimal(row.memory_gib_hour),
            gpu_hour=Decimal(row.gpu_hour),
        ),
        started=row.started,
        last_seen=row.last_seen,
        stopped=row.stopped,
    )


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
    """The intervals in the database at ``url`` (migrated to the current schema when opened)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_write_ahead)
        migrate(self.engine)

    def dispose(self) -> None:
        """Close the database connections."""
        self.engine.dispose()

    def _open_rows(self, connection: sa.Connection, instance: str, user: str | None = None) -> list[Interval]:
        query = sa.select(INTERVALS).where(_COLUMNS.instance == instance, _COLUMNS.stopped.is_(None))
        if user is not None:
            query = query.where(_COLUMNS.user_name == user)
        return [_interval(row) for row in connection.execute(query)]

    def _end_earlier_runs(self, connection: sa.Connection, interval: Interval) -> None:
        """An interval still open for this very server belongs to a run the hub lost track of:
        end it where it was last seen (or drop it, if it never ran), so runs never overlap."""
        same = (
            (_COLUMNS.instance == interval.instance)
            & (_COLUMNS.user_name == interval.user)
            & (_COLUMNS.server_name == interval.server)
            & _COLUMNS.stopped.is_(None)
        )
        connection.execute(sa.delete(INTERVALS).where(same & _COLUMNS.last_seen.is_(None)))
        connection.execute(sa.update(INTERVALS).where(same).values(stopped=_COLUMNS.last_seen))

    def open(
        self,
        interval: Interval,
        admit: Callable[[list[Interval]], str | None] | None = None,
        *,
        whole_instance: bool = True,
    ) -> Interval:
        """Record a start; ``admit`` sees the instance's other open intervals (only the user's own
        when ``whole_instance`` is false: no group quota concerns them) and may refuse with a
        message (:class:`QuotaExceeded`), in the same transaction as the insert."""
        with self.engine.begin() as connection:
            self._end_earlier_runs(connection, interval)
            if admit is not None:
                scope = None if whole_instance else interval.user
                refusal = admit(self._open_rows(connection, interval.instance, scope))
                if refusal is not None:
                    raise QuotaExceeded(refusal)
            values = _row_values(replace(interval, stopped=None))
            new_id = connection.execute(sa.insert(INTERVALS).values(**values)).inserted_primary_key
            assert new_id is not None
            return replace(interval, id=int(new_id[0]), stopped=None)

    def mark_running(self, interval_id: int, now: float) -> None:
        """The server started: its run (and its cost) begins now."""
        with self.engine.begin() as connection:
            connection.execute(
                sa.update(INTERVALS)
                .where(_COLUMNS.id == interval_id, _COLUMNS.stopped.is_(None))
                .values(started=now, last_seen=now)
            )

    def seen_running(self, interval_id: int, now: float) -> Interval | None:
        """Poll saw the server running at ``now``; returns the interval as it was before (its
        ``last_seen`` says since when the cost accrued), or ``None`` if it is not open."""
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(INTERVALS).where(_COLUMNS.id == interval_id, _COLUMNS.stopped.is_(None))
            ).first()
            if row is None or row.last_seen is None:
                return None
            connection.execute(
                sa.update(INTERVALS)
                .where(_COLUMNS.id == interval_id, _COLUMNS.last_seen < now)
                .values(last_seen=now)
            )
            return _interval(row)

    def end(self, interval_id: int, at: float | None = None) -> Interval | None:
        """Close an open interval at ``at`` (a stop), or at its last-seen time when ``at`` is
        ``None`` (found gone). One that never ran is deleted. Returns the closed interval, or
        ``None`` when there was nothing open."""
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(INTERVALS).where(_COLUMNS.id == interval_id, _COLUMNS.stopped.is_(None))
            ).first()
            if row is None:
                return None
            if row.last_seen is None:
                connection.execute(sa.delete(INTERVALS).where(_COLUMNS.id == interval_id))
                return None
            stopped = row.last_seen if at is None else max(at, row.started)
            connection.execute(sa.update(INTERVALS).where(_COLUMNS.id == interval_id).values(stopped=stopped))
            return replace(_interval(row), stopped=stopped)

    def drop_reservations(self, instance: str) -> int:
        """Forget starts that never ran: at hub start, these are starts a crash cut short
        (JupyterHub abandons a start in progress when it restarts). Returns how many."""
        with self.engine.begin() as connection:
            result = connection.execute(
                sa.delete(INTERVALS).where(
                    _COLUMNS.instance == instance,
                    _COLUMNS.stopped.is_(None),
                    _COLUMNS.last_seen.is_(None),
                )
            )
            return int(result.rowcount or 0)

    def open_intervals(self, instance: str) -> list[Interval]:
        """Everything running or starting on ``instance``."""
        with self.engine.connect() as connection:
            return self._open_rows(connection, instance)

    def get(self, interval_id: int) -> Interval | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(INTERVALS).where(_COLUMNS.id == interval_id)).first()
            return None if row is None else _interval(row)

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
        query = sa.select(INTERVALS).where(
            _COLUMNS.started < until,
            sa.or_(_COLUMNS.stopped.is_(None), _COLUMNS.stopped > since),
        )
        if instance is not None:
            query = query.where(_COLUMNS.instance == instance)
        if users:
            query = query.where(_COLUMNS.user_name.in_(list(users)))
        if running_only_if_seen:
            query = query.where(_COLUMNS.last_seen.is_not(None))
        with self.engine.connect() as connection:
            return [
                _interval(row) for row in connection.execute(query.order_by(_COLUMNS.started, _COLUMNS.id))
            ]


class AsyncLedger:
    """A :class:`Ledger` whose calls run on one worker thread (off the event loop)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="einfra-usage")
        self._ledger: Ledger | None = None

    def _ledger_now(self) -> Ledger:
        # Built on the worker thread: SQLite connections belong to the thread that made them.
        if self._ledger is None:
            self._ledger = Ledger(self.url)
        return self._ledger

    async def call(self, method: Callable[..., T], *args: Any) -> T:
        """Run ``Ledger.<method>(*args)`` on the worker thread, e.g. ``call(Ledger.end, 3)``."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._run, method, *args))

    def _run(self, method: Callable[..., T], *args: Any) -> T:
        return method(self._ledger_now(), *args)

    def shutdown(self) -> None:
        """Dispose of the connections and stop the thread (at process end)."""
        if self._ledger is not None:
            self._executor.submit(self._ledger.dispose).result()
        self._executor.shutdown(wait=True)
