"""The ledger off the event loop: one worker thread that batches the writes of many callers.

Where it sits in the data flow: the hub's runtime owns one :class:`AsyncLedger` per database; the
spawner's usage recorder and the reconciler queue the writes of :mod:`.intervals` on it (and
:class:`~.ledger.Ledger` methods for reads and the start-up sweep), and await their outcome. The
worker commits the writes that queued up meanwhile together: in a storm of spawns, hundreds of
admissions share one transaction and one commit instead of each paying its own (see
:meth:`AsyncLedger.write`). "Last seen running" is coalesced in memory and written once per
interval of :attr:`AsyncLedger.seen_flush_seconds` for every server seen meanwhile, not once per
poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from .cost import Interval
from .intervals import QuotaExceeded, Write, seen_many
from .ledger import Ledger

__all__ = ["AsyncLedger"]

T = TypeVar("T")


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
