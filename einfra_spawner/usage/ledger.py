"""The usage ledger: one row per run of a server, in any SQLAlchemy database (blocking I/O).

Where it sits in the data flow: the spawner opens an interval when it admits a start (after the
quota check, in the same transaction, so two concurrent starts cannot both take the last GPU),
marks it running when the backend has started the server, records "last seen running" as polls
see it (coalesced: one write per interval of :attr:`AsyncLedger.seen_flush_seconds` for every
server seen meanwhile, not one write per poll), and closes it at stop. After a hub crash, a
server that poll finds gone is closed at its last-seen time: never at "now" (the hub cannot know
when it died) and never left open. A start that never ran (refused by the backend, or cut short
by a crash) leaves no interval.

The writes are functions of an open connection (:func:`open_interval`, :func:`mark_running`,
:func:`seen_running`, :func:`end_interval`), each a few indexed statements built once.
:class:`Ledger` runs each in a transaction of its own (the command line, tests).
:class:`AsyncLedger` runs them on one worker thread, off the hub's event loop, and commits the
writes that queued up meanwhile together: in a storm of spawns, hundreds of admissions share one
transaction and one commit instead of each paying its own (see :meth:`AsyncLedger.write`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import partial
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from ..errors import EInfraError
from .cost import Interval, Rates
from .schema import INTERVALS, migrate

__all__ = [
    "AsyncLedger",
    "Ledger",
    "QuotaExceeded",
    "end_interval",
    "mark_running",
    "open_interval",
    "seen_many",
    "seen_running",
]

T = TypeVar("T")
_COLUMNS = INTERVALS.c
#: A write: a function of an open connection, run inside a transaction it does not manage.
Write = Callable[[sa.Connection], T]

# Statements are built once, with bound parameters: building one costs more than running it.
_OPEN_OF_INSTANCE = sa.select(INTERVALS).where(
    _COLUMNS.instance == sa.bindparam("instance"), _COLUMNS.stopped.is_(None)
)
_OPEN_OF_USER = _OPEN_OF_INSTANCE.where(_COLUMNS.user_name == sa.bindparam("user"))
_OPEN_BY_ID = sa.select(INTERVALS).where(
    _COLUMNS.id == sa.bindparam("interval_id"), _COLUMNS.stopped.is_(None)
)
_BY_ID = sa.select(INTERVALS).where(_COLUMNS.id == sa.bindparam("interval_id"))
_INSERT = sa.insert(INTERVALS)
#: Ids per ``IN (...)`` query: well under SQLite's limit on bound parameters.
_IDS_PER_QUERY = 500
_DELETE = sa.delete(INTERVALS).where(_COLUMNS.id == sa.bindparam("interval_id"))
_CLOSE = (
    sa.update(INTERVALS).where(_COLUMNS.id == sa.bindparam("interval_id")).values(stopped=sa.bindparam("at"))
)
# A run whose "running" write was lost (a crash) closes as a run: seen until it stopped.
_CLOSE_RUN = (
    sa.update(INTERVALS)
    .where(_COLUMNS.id == sa.bindparam("interval_id"))
    .values(stopped=sa.bindparam("at"), last_seen=sa.bindparam("at"))
)
_MARK_RUNNING = (
    sa.update(INTERVALS)
    .where(_COLUMNS.id == sa.bindparam("interval_id"), _COLUMNS.stopped.is_(None))
    .values(started=sa.bindparam("now"), last_seen=sa.bindparam("now"))
)
# Never moves back: a late poll answer must not undo a later one. A reservation seen running (its
# "running" write was lost to a crash) becomes a run from its admission.
_SEEN = (
    sa.update(INTERVALS)
    .where(
        _COLUMNS.id == sa.bindparam("interval_id"),
        _COLUMNS.stopped.is_(None),
        sa.or_(_COLUMNS.last_seen.is_(None), _COLUMNS.last_seen < sa.bindparam("now")),
    )
    .values(last_seen=sa.bindparam("now"))
)


class QuotaExceeded(EInfraError):
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


def _open_rows(connection: sa.Connection, instance: str, user: str | None = None) -> list[Interval]:
    if user is None:
        rows = connection.execute(_OPEN_OF_INSTANCE, {"instance": instance})
    else:
        rows = connection.execute(_OPEN_OF_USER, {"instance": instance, "user": user})
    return [_interval(row) for row in rows]


# --- the writes: each a function of a connection, inside a transaction -----------------------


def open_interval(
    connection: sa.Connection,
    interval: Interval,
    admit: Callable[[list[Interval]], str | None] | None = None,
    *,
    whole_instance: bool = True,
) -> Interval:
    """Record a start; returns it with its id.

    ``admit`` sees the instance's open intervals (only the user's own when ``whole_instance``
    is false: no group quota concerns the others) and may refuse with a message: then
    :class:`QuotaExceeded` is raised before anything is written. An interval still open for this
    very server belongs to a run the hub lost track of: it is ended where it was last seen (or
    dropped, if it never ran), so one server's runs never overlap, and it is not counted."""
    scope = None if whole_instance else interval.user
    rows = _open_rows(connection, interval.instance, scope)
    lost = [i for i in rows if i.user == interval.user and i.server == interval.server]
    if admit is not None:
        refusal = admit([i for i in rows if i not in lost])
        if refusal is not None:
            raise QuotaExceeded(refusal)
    for earlier in lost:
        if earlier.last_seen is None:
            connection.execute(_DELETE, {"interval_id": earlier.id})
        else:
            connection.execute(_CLOSE, {"interval_id": earlier.id, "at": earlier.last_seen})
    values = _row_values(replace(interval, stopped=None))
    new_id = connection.execute(_INSERT, values).inserted_primary_key
    assert new_id is not None
    return replace(interval, id=int(new_id[0]), stopped=None)


def mark_running(connection: sa.Connection, interval_id: int, now: float) -> None:
    """The server started: its run (and its cost) begins now."""
    connection.execute(_MARK_RUNNING, {"interval_id": interval_id, "now": now})


def seen_running(connection: sa.Connection, interval_id: int, now: float) -> None:
    """Poll saw the server running at ``now`` (an earlier time never overwrites a later one)."""
    connection.execute(_SEEN, {"interval_id": interval_id, "now": now})


def seen_many(connection: sa.Connection, sightings: Sequence[tuple[int, float]]) -> None:
    """Many sightings ``(interval_id, now)`` in one statement (executemany), each with the rule
    of :func:`seen_running`."""
    if sightings:
        connection.execute(_SEEN, [{"interval_id": i, "now": now} for i, now in sightings])


def end_interval(
    connection: sa.Connection, interval_id: int, at: float | None = None, *, ran: bool = False
) -> Interval | None:
    """Close an open interval at ``at`` (a stop), or at its last-seen time when ``at`` is
    ``None`` (found gone). One that never ran is deleted, unless ``ran`` says the server did run
    (the backend started it) although its "running" write was lost to a crash: it is then closed
    as a run from its admission (to ``at``, or to its admission when the end is unknown: never
    billed for time nobody saw). Returns the closed interval, or ``None`` when there was nothing
    open (or it never ran)."""
    row = connection.execute(_OPEN_BY_ID, {"interval_id": interval_id}).first()
    if row is None:
        return None
    if row.last_seen is None:
        if not ran:
            connection.execute(_DELETE, {"interval_id": interval_id})
            return None
        stopped = row.started if at is None else max(at, row.started)
        connection.execute(_CLOSE_RUN, {"interval_id": interval_id, "at": stopped})
        return replace(_interval(row), stopped=stopped, last_seen=stopped)
    stopped = row.last_seen if at is None else max(at, row.started)
    connection.execute(_CLOSE, {"interval_id": interval_id, "at": stopped})
    return replace(_interval(row), stopped=stopped)


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

    def open(
        self,
        interval: Interval,
        admit: Callable[[list[Interval]], str | None] | None = None,
        *,
        whole_instance: bool = True,
    ) -> Interval:
        """:func:`open_interval` in a transaction of its own."""
        return self.run(partial(open_interval, interval=interval, admit=admit, whole_instance=whole_instance))

    def mark_running(self, interval_id: int, now: float) -> None:
        """:func:`mark_running` in a transaction of its own."""
        self.run(partial(mark_running, interval_id=interval_id, now=now))

    def seen_running(self, interval_id: int, now: float) -> Interval | None:
        """:func:`seen_running`; returns the interval as it was before (its ``last_seen`` says
        since when the cost accrued; ``None`` for a reservation, which becomes a run from its
        admission), or ``None`` if it is not open."""
        with self.engine.begin() as connection:
            row = connection.execute(_OPEN_BY_ID, {"interval_id": interval_id}).first()
            if row is None:
                return None
            seen_running(connection, interval_id, now)
            return _interval(row)

    def end(self, interval_id: int, at: float | None = None, *, ran: bool = False) -> Interval | None:
        """:func:`end_interval` in a transaction of its own."""
        return self.run(partial(end_interval, interval_id=interval_id, at=at, ran=ran))

    def drop_reservations(self, instance: str, before: float | None = None) -> int:
        """Forget starts that never ran: at hub start, these are starts a crash cut short
        (JupyterHub abandons a start in progress when it restarts). With ``before`` (the time
        this hub process started), only reservations made earlier go, so a sweep that is tried
        again later never drops a start admitted meanwhile. Returns how many."""
        condition = (
            (_COLUMNS.instance == instance) & _COLUMNS.stopped.is_(None) & _COLUMNS.last_seen.is_(None)
        )
        if before is not None:
            condition = condition & (_COLUMNS.started < before)
        with self.engine.begin() as connection:
            result = connection.execute(sa.delete(INTERVALS).where(condition))
            return int(result.rowcount or 0)

    def open_intervals(self, instance: str) -> list[Interval]:
        """Everything running or starting on ``instance``."""
        with self.engine.connect() as connection:
            return _open_rows(connection, instance)

    def get(self, interval_id: int) -> Interval | None:
        with self.engine.connect() as connection:
            row = connection.execute(_BY_ID, {"interval_id": interval_id}).first()
            return None if row is None else _interval(row)

    def get_many(self, interval_ids: Sequence[int]) -> dict[int, Interval]:
        """The intervals of ``interval_ids`` that exist, by id (a few queries of many ids each)."""
        found: dict[int, Interval] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(interval_ids), _IDS_PER_QUERY):
                chunk = list(interval_ids[start : start + _IDS_PER_QUERY])
                for row in connection.execute(sa.select(INTERVALS).where(_COLUMNS.id.in_(chunk))):
                    found[row.id] = _interval(row)
        return found

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


@dataclass
class _Queued(Generic[T]):
    """A job waiting for the worker thread, and where its outcome goes: a write (a function of
    a connection, batched) or a call (a function of the :class:`Ledger`, run on its own)."""

    write: Write[T] | None
    call: Callable[[Ledger], T] | None
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    outcome: tuple[bool, Any] = (False, None)  # (succeeded, result or exception)


class AsyncLedger:
    """A :class:`Ledger` on one worker thread (off the event loop), batching the writes.

    Jobs run in the order they were queued. :meth:`write` queues a write: the worker runs every
    write queued since the last call in one transaction, then settles their futures together.
    A :class:`QuotaExceeded` refusal fails its own write only (it raises before writing
    anything). Any other error fails the batch's transaction: the writes are then run again
    each in its own transaction, so only the faulty one fails. :meth:`call` queues a whole
    :class:`Ledger` method (reads, the sweep at start-up), run on its own between the writes
    queued before and after it.

    "Seen running" is not a queued write per poll: at 5,000 running servers polled every 30 s
    that was 10,000 transactions' worth of statements a minute, most of the hub's CPU.
    :meth:`seen` notes the latest sighting of each interval in memory; the first note after a
    flush arms a timer, and :meth:`flush_seen` then writes every noted sighting in one
    statement. A hub killed between flushes loses at most :attr:`seen_flush_seconds` of
    sightings: a server that ends while the hub is down is closed where it was last *written*
    seen, so its run is billed up to that much short (never more than it ran). A server still
    running is seen again at the next poll, and a stop writes its own end time, so neither
    loses anything. :meth:`shutdown` writes what is noted.
    """

    #: Seconds between the writes of "last seen running" (JupyterHub polls every 30 s).
    seen_flush_seconds: float = 30.0

    def __init__(self, url: str, *, seen_flush_seconds: float | None = None) -> None:
        self.url = url
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="einfra-usage")
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()
        self._queued: list[_Queued[Any]] = []
        self._draining = False
        #: How many transactions the batched writes took, and how many writes they carried.
        self.batches = 0
        self.writes = 0
        if seen_flush_seconds is not None:
            self.seen_flush_seconds = seen_flush_seconds
        # Sightings not yet written (interval id -> latest time), under ``_lock``; the timer
        # that writes them; interval lookups waiting for this loop iteration's batched read.
        self._seen: dict[int, float] = {}
        self._seen_timer: asyncio.TimerHandle | None = None
        self._lookups: dict[int, list[asyncio.Future[Interval | None]]] = {}
        self._closed = False

    def _ledger_now(self) -> Ledger:
        # Built on the worker thread: SQLite connections belong to the thread that made them.
        if self._ledger is None:
            self._ledger = Ledger(self.url)
        return self._ledger

    def call(self, method: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``Ledger.<method>(*args)``, e.g. ``await call(Ledger.get, 3)``."""
        return self._queue(None, partial(_call_method, method, args))

    def write(self, write: Write[T]) -> asyncio.Future[T]:
        """Queue ``write`` (a function of a connection); the returned future has its result
        once the transaction it ran in has committed. Awaiting it is optional: jobs run in the
        order they were queued whether or not anyone waits."""
        return self._queue(write, None)

    def seen(self, interval_id: int, now: float, within: float | None = None) -> None:
        """Note that the server of ``interval_id`` ran at ``now``; written with the next flush,
        at most ``within`` seconds from now (the poll interval of the server's spawner, so that
        a crash loses no more than one poll interval of sightings; default
        :attr:`seen_flush_seconds`)."""
        delay = self.seen_flush_seconds if within is None else max(0.0, within)
        with self._lock:
            if self._closed:
                return
            if self._seen.get(interval_id, -1.0) < now:
                self._seen[interval_id] = now
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        timer = self._seen_timer
        if timer is not None and timer.when() <= due:
            return  # an earlier flush writes this one too
        if timer is not None:
            timer.cancel()
        self._seen_timer = loop.call_at(due, self._flush_seen_timer)

    def noted(self, interval_id: int) -> float | None:
        """The sighting of ``interval_id`` noted but not yet written, if any."""
        with self._lock:
            return self._seen.get(interval_id)

    def pending_seen(self) -> int:
        """How many intervals have a sighting not yet written."""
        with self._lock:
            return len(self._seen)

    def flush_seen(self, interval_id: int | None = None) -> asyncio.Future[None]:
        """Queue the write of the noted sightings now (only that of ``interval_id`` when given:
        a server's end is written after its last sighting). Resolves once it committed."""
        if self._lookups:
            self._read_lookups()  # lookups asked for before this write read the row before it
        with self._lock:
            if interval_id is None:
                sightings, self._seen = list(self._seen.items()), {}
            else:
                at = self._seen.pop(interval_id, None)
                sightings = [] if at is None else [(interval_id, at)]
        if not sightings:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return self.write(partial(seen_many, sightings=sightings))

    def _flush_seen_timer(self) -> None:
        self._seen_timer = None
        self.flush_seen().add_done_callback(_log_seen_failure)

    def lookup(self, interval_id: int) -> asyncio.Future[Interval | None]:
        """The interval ``interval_id`` (``None`` if there is none), read together with every
        other lookup of this loop iteration in one query: after a hub restart each server's
        first poll looks its interval up, and 5,000 reads queued one by one held the worker
        (and their settling, the loop) for seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Interval | None] = loop.create_future()
        if not self._lookups:
            loop.call_soon(self._read_lookups)
        self._lookups.setdefault(interval_id, []).append(future)
        return future

    def _read_lookups(self) -> None:
        waiting, self._lookups = self._lookups, {}
        read = self.call(Ledger.get_many, list(waiting))

        def settle(done: asyncio.Future[dict[int, Interval]]) -> None:
            failed = done.cancelled() or done.exception() is not None
            for interval_id, futures in waiting.items():
                for future in futures:
                    if future.done():
                        continue
                    if failed:
                        future.set_exception(done.exception() or asyncio.CancelledError())
                    else:
                        future.set_result(done.result().get(interval_id))

        read.add_done_callback(settle)

    def _queue(self, write: Write[T] | None, call: Callable[[Ledger], T] | None) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        queued = _Queued(write, call, loop.create_future(), loop)
        with self._lock:
            self._queued.append(queued)
            if self._draining:
                return queued.future  # the worker takes it with the next batch
            self._draining = True
        self._executor.submit(self._drain)
        return queued.future

    def _drain(self) -> None:
        """On the worker thread: run what is queued, in order, until the queue is empty."""
        while True:
            with self._lock:
                jobs, self._queued = self._queued, []
                if not jobs:
                    self._draining = False
                    return
            writes: list[_Queued[Any]] = []
            for job in jobs:
                if job.write is not None:
                    writes.append(job)
                    continue
                self._run_writes(writes)
                writes = []
                self._run_call(job)
            self._run_writes(writes)
            by_loop: dict[asyncio.AbstractEventLoop, list[_Queued[Any]]] = {}
            for job in jobs:
                by_loop.setdefault(job.loop, []).append(job)
            for loop, settled in by_loop.items():
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                    loop.call_soon_threadsafe(_settle, settled)

    def _run_call(self, job: _Queued[Any]) -> None:
        assert job.call is not None
        try:
            job.outcome = (True, job.call(self._ledger_now()))
        except Exception as error:
            job.outcome = (False, error)

    def _run_writes(self, batch: list[_Queued[Any]]) -> None:
        if not batch:
            return
        self.batches += 1
        self.writes += len(batch)
        failed_in_write = False
        try:
            ledger = self._ledger_now()
            with ledger.engine.begin() as connection:
                for queued in batch:
                    assert queued.write is not None
                    try:
                        queued.outcome = (True, queued.write(connection))
                    except QuotaExceeded as refusal:  # raised before it wrote anything
                        queued.outcome = (False, refusal)
                    except Exception:
                        failed_in_write = True
                        raise
            return
        except Exception as error:
            if not failed_in_write or len(batch) == 1:
                # The database itself failed (connecting, committing): every write failed.
                for queued in batch:
                    queued.outcome = (False, error)
                return
        for queued in batch:  # one write broke the transaction: each alone, so only it fails
            assert queued.write is not None
            try:
                queued.outcome = (True, ledger.run(queued.write))
            except Exception as error:
                queued.outcome = (False, error)

    def shutdown(self) -> None:
        """Write the noted sightings, finish the queued jobs, dispose of the connections and stop
        the thread (callable from any thread)."""
        with self._lock:
            self._closed = True
            sightings, self._seen = list(self._seen.items()), {}
        if sightings:
            self._executor.submit(self._write_now, partial(seen_many, sightings=sightings))
        self._executor.submit(self._dispose).result()
        self._executor.shutdown(wait=True)

    def _write_now(self, write: Write[Any]) -> None:
        try:
            self._ledger_now().run(write)
        except Exception:  # at shutdown there is nobody left to tell but the log
            logging.getLogger(__name__).exception("Usage ledger: could not write at shutdown")

    def _dispose(self) -> None:
        if self._ledger is not None:
            self._ledger.dispose()


def _log_seen_failure(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        # The sightings are lost, not the runs: the next flush writes newer ones.
        logging.getLogger(__name__).error(
            "Usage ledger: could not record servers as running", exc_info=done.exception()
        )


def _call_method(method: Callable[..., T], args: tuple[Any, ...], ledger: Ledger) -> T:
    return method(ledger, *args)


#: How many futures one iteration of the event loop settles: each wakes a task, and a batch of a
#: thousand admissions woken at once would hold the loop for tens of milliseconds.
SETTLE_PER_ITERATION = 64


def _settle(batch: list[_Queued[Any]]) -> None:
    """On the event loop: hand each job's outcome to its future (unless cancelled), a slice of
    the batch per iteration, in order."""
    for queued in batch[:SETTLE_PER_ITERATION]:
        if queued.future.done():
            continue
        succeeded, value = queued.outcome
        if succeeded:
            queued.future.set_result(value)
        else:
            queued.future.set_exception(value)
    if len(batch) > SETTLE_PER_ITERATION:
        asyncio.get_running_loop().call_soon(_settle, batch[SETTLE_PER_ITERATION:])
