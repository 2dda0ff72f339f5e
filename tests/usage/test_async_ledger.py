"""The ledger's worker thread (AsyncLedger) on real databases: writes queued together share a
transaction, keep their order, refuse quotas against each other, and fail alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import sqlalchemy as sa

from einfra_spawner.usage import AsyncLedger, Interval, Ledger, QuotaExceeded
from einfra_spawner.usage.intervals import end_interval, mark_running, open_interval, seen_running

from .test_ledger import T0, planned


@pytest.fixture
async def ledger(db_url: str) -> AsyncIterator[AsyncLedger]:
    opened = AsyncLedger(db_url)
    try:
        yield opened
    finally:
        opened.shutdown()


@asynccontextmanager
async def worker_held(ledger: AsyncLedger) -> AsyncIterator[None]:
    """Keep the worker thread busy while the block queues writes: they then make one batch."""
    release = threading.Event()
    busy = ledger.call(lambda _ledger: release.wait(10))  # on the worker's queue, ahead of the writes
    try:
        yield
    finally:
        release.set()
    assert await busy  # released, not timed out


def at_most_gpus(limit: int, wanted: int) -> partial[str | None]:
    return partial(_refuse_beyond, limit, wanted)


def _refuse_beyond(limit: int, wanted: int, running: list[Interval]) -> str | None:
    held = sum(i.gpus for i in running)
    return f"{held} of {limit} GPUs in use" if held + wanted > limit else None


async def test_a_storm_of_writes_shares_few_transactions_and_keeps_each_servers_order(
    ledger: AsyncLedger,
) -> None:
    servers = [f"s{i}" for i in range(200)]
    async with worker_held(ledger):
        queued = [ledger.write(partial(open_interval, interval=planned(server=s))) for s in servers]
    opened = await asyncio.gather(*queued)
    assert ledger.batches == 1  # 200 admissions, one transaction
    assert len({i.id for i in opened}) == 200
    # Queued without waiting, in order: running, seen, then closed; each server's steps apply in order.
    for number, interval in enumerate(opened):
        ledger.write(partial(mark_running, interval_id=interval.id, now=T0 + number))
        ledger.write(partial(seen_running, interval_id=interval.id, now=T0 + number + 60))
    closed = await asyncio.gather(
        *(ledger.write(partial(end_interval, interval_id=i.id, at=T0 + 600)) for i in opened)
    )
    assert ledger.writes == 800
    for number, ended in enumerate(closed):
        assert ended is not None
        assert (ended.started, ended.last_seen, ended.stopped) == (
            T0 + number,
            T0 + number + 60,
            T0 + 600,
        )
    assert await ledger.call(Ledger.open_intervals, "hub") == []


async def test_admissions_in_one_batch_see_each_other(ledger: AsyncLedger) -> None:
    """Five starts ask for one GPU each at once, with three allowed: whatever the batching, the
    quota holds exactly as if they came one by one."""
    async with worker_held(ledger):
        queued = [
            ledger.write(
                partial(open_interval, interval=planned(server=f"g{i}", gpus=1), admit=at_most_gpus(3, 1))
            )
            for i in range(5)
        ]
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert ledger.batches == 1
    granted = [o for o in outcomes if isinstance(o, Interval)]
    refused = [o for o in outcomes if isinstance(o, QuotaExceeded)]
    assert len(granted) == 3 and len(refused) == 2
    assert all(str(r) == "3 of 3 GPUs in use" for r in refused)
    running = await ledger.call(Ledger.open_intervals, "hub")
    assert sorted(i.id for i in running) == sorted(i.id for i in granted)


async def test_a_failing_write_fails_alone(ledger: AsyncLedger) -> None:
    def broken(connection: sa.Connection) -> None:
        connection.execute(sa.text("SELECT * FROM no_such_table"))

    async with worker_held(ledger):
        first = ledger.write(partial(open_interval, interval=planned(server="a")))
        bad = ledger.write(broken)
        second = ledger.write(partial(open_interval, interval=planned(server="b")))
    results = await asyncio.gather(first, bad, second, return_exceptions=True)
    assert ledger.batches == 1  # one batch, whose transaction failed and was run again write by write
    assert isinstance(results[0], Interval) and isinstance(results[2], Interval)
    assert isinstance(results[1], sa.exc.DBAPIError)
    assert len(await ledger.call(Ledger.open_intervals, "hub")) == 2  # both kept, once each


async def test_a_sweep_runs_before_the_writes_queued_after_it(ledger: AsyncLedger) -> None:
    """At first use the ledger drops starts a crash cut short; a start admitted right after must
    not be dropped with them, whichever runs first on the loop."""
    await ledger.write(partial(open_interval, interval=planned(server="crashed")))
    async with worker_held(ledger):
        sweep = ledger.call(Ledger.drop_reservations, "hub")
        fresh = ledger.write(partial(open_interval, interval=planned(server="new")))
    assert await sweep == 1
    admitted = await fresh
    everything = await ledger.call(Ledger.intervals, 0.0, 1e12, None, (), False)
    assert [(i.id, i.server) for i in everything] == [(admitted.id, "new")]


async def test_a_database_that_cannot_be_reached_fails_every_write() -> None:
    ledger = AsyncLedger("sqlite:////nonexistent-directory/for/sure/usage.sqlite")
    try:
        writes = [ledger.write(partial(open_interval, interval=planned(server=f"x{i}"))) for i in range(3)]
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert all(isinstance(r, sa.exc.OperationalError) for r in results)
    finally:
        ledger.shutdown()
