""" "Last seen running" is coalesced: many polls within a flush interval are one write, a crash
loses at most one interval of sightings (billing: a server that ends while the hub is down is
charged up to that much short, never more than it ran), a stop or a server found gone first
writes its own last sighting, and a graceful shutdown writes them all. Also the batched interval
lookups of the first poll after a hub restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from einfra_spawner.options import UserContext
from einfra_spawner.profiles import load_profiles
from einfra_spawner.usage import AsyncLedger, Ledger
from einfra_spawner.usage.intervals import mark_running, open_interval
from einfra_spawner.usage.recorder import UsageRecorder

from .test_ledger import T0, planned

HUB_PROFILES = Path(__file__).resolve().parents[2] / "profiles" / "hub"


@pytest.fixture
async def ledger(db_url: str) -> AsyncIterator[AsyncLedger]:
    opened = AsyncLedger(db_url)
    try:
        yield opened
    finally:
        opened.shutdown()


async def running_intervals(ledger: AsyncLedger, count: int) -> list[int]:
    """``count`` intervals admitted and marked running at T0."""
    ids = []
    for number in range(count):
        opened = await ledger.write(partial(open_interval, interval=planned(server=f"s{number}")))
        await ledger.write(partial(mark_running, interval_id=opened.id, now=T0))
        ids.append(opened.id)
    return ids


async def test_many_polls_within_an_interval_are_one_write(ledger: AsyncLedger) -> None:
    ids = await running_intervals(ledger, 50)
    batches, writes = ledger.batches, ledger.writes
    for round_ in range(1, 11):  # ten polls of each of 50 servers, one "poll interval" apart
        for interval_id in ids:
            ledger.seen(interval_id, T0 + round_ * 30, within=3600)
    assert ledger.pending_seen() == 50
    assert (ledger.batches, ledger.writes) == (batches, writes)  # nothing written per poll
    await ledger.flush_seen()
    assert (ledger.batches, ledger.writes) == (batches + 1, writes + 1)  # 500 polls, one write
    stored = await ledger.call(Ledger.get_many, ids)
    assert {stored[i].last_seen for i in ids} == {T0 + 300}
    assert ledger.pending_seen() == 0


async def test_the_timer_writes_within_the_shortest_poll_interval(ledger: AsyncLedger) -> None:
    (slow, fast) = await running_intervals(ledger, 2)
    ledger.seen(slow, T0 + 10, within=3600)
    ledger.seen(fast, T0 + 20, within=0.05)  # an earlier deadline brings the flush forward
    for _ in range(200):
        if ledger.pending_seen() == 0:
            break
        await asyncio.sleep(0.01)
    assert ledger.pending_seen() == 0
    await ledger.call(lambda _ledger: None)  # the flush's write has committed before this
    stored = await ledger.call(Ledger.get_many, [slow, fast])
    assert (stored[slow].last_seen, stored[fast].last_seen) == (T0 + 10, T0 + 20)


async def test_a_late_sighting_never_moves_last_seen_back(ledger: AsyncLedger) -> None:
    (interval_id,) = await running_intervals(ledger, 1)
    ledger.seen(interval_id, T0 + 600, within=3600)
    ledger.seen(interval_id, T0 + 300, within=3600)
    await ledger.flush_seen()
    ledger.seen(interval_id, T0 + 100, within=3600)  # older than what is written
    await ledger.flush_seen()
    assert (await ledger.call(Ledger.get, interval_id)).last_seen == T0 + 600  # type: ignore[union-attr]


async def test_a_hub_killed_between_flushes_loses_at_most_one_interval(db_url: str) -> None:
    first = AsyncLedger(db_url)
    (interval_id,) = await running_intervals(first, 1)
    first.seen(interval_id, T0 + 30, within=3600)
    await first.flush_seen()  # written: the last flush before the crash
    first.seen(interval_id, T0 + 60, within=3600)  # noted, never written: the hub is killed now
    first._executor.shutdown(wait=True)  # the process dies: no shutdown(), nothing more written
    assert first._ledger is not None
    first._ledger.dispose()  # ...and its connections with it
    # The restarted hub finds the server gone: its run ends where it was last *written* seen,
    # 30 s (one poll interval) short of the last sighting: billed less, never more.
    second = AsyncLedger(db_url)
    try:
        recorder = UsageRecorder(
            ledger=lambda: second,
            instance=load_profiles(HUB_PROFILES).instance,
            user=UserContext(name="ada"),
            server="s0",
            log=logging.getLogger("test"),
        )
        recorder.restore(interval_id)
        await recorder.ended(None, ran=True)
        closed = await second.call(Ledger.get, interval_id)
        assert closed is not None and (closed.last_seen, closed.stopped) == (T0 + 30, T0 + 30)
    finally:
        second.shutdown()


async def test_a_server_found_gone_ends_at_its_noted_sighting(ledger: AsyncLedger) -> None:
    (interval_id,) = await running_intervals(ledger, 1)
    recorder = UsageRecorder(
        ledger=lambda: ledger,
        instance=load_profiles(HUB_PROFILES).instance,
        user=UserContext(name="ada"),
        server="s0",
        log=logging.getLogger("test"),
    )
    recorder.restore(interval_id)
    ledger.seen(interval_id, T0 + 90, within=3600)  # noted by an earlier poll, not yet written
    batches = ledger.batches
    await recorder.ended(None, ran=True)  # this poll finds it gone
    closed = await ledger.call(Ledger.get, interval_id)
    assert closed is not None and (closed.last_seen, closed.stopped) == (T0 + 90, T0 + 90)
    assert ledger.batches == batches + 1  # its sighting and its end, one transaction
    assert ledger.pending_seen() == 0


async def test_a_graceful_shutdown_writes_every_noted_sighting(db_url: str) -> None:
    first = AsyncLedger(db_url)
    ids = await running_intervals(first, 3)
    for interval_id in ids:
        first.seen(interval_id, T0 + 45, within=3600)
    await asyncio.to_thread(first.shutdown)  # as the runtime closes it at hub shutdown
    first.seen(ids[0], T0 + 99, within=3600)  # after shutdown: ignored, no timer left behind
    reopened = Ledger(db_url)
    try:
        assert {reopened.get(i).last_seen for i in ids} == {T0 + 45}  # type: ignore[union-attr]
    finally:
        reopened.dispose()


async def test_a_failed_flush_is_logged_and_the_next_writes_newer_sightings(
    ledger: AsyncLedger, caplog: pytest.LogCaptureFixture
) -> None:
    (interval_id,) = await running_intervals(ledger, 1)
    real_ledger = ledger._ledger_now()
    real_run = real_ledger.engine

    class Broken:
        def begin(self) -> object:
            raise RuntimeError("database gone")

    real_ledger.engine = Broken()  # type: ignore[assignment]
    ledger.seen(interval_id, T0 + 30, within=0.01)
    for _ in range(200):
        if "could not record servers as running" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "could not record servers as running" in caplog.text
    real_ledger.engine = real_run  # the database is back
    ledger.seen(interval_id, T0 + 60, within=3600)
    await ledger.flush_seen()
    assert (await ledger.call(Ledger.get, interval_id)).last_seen == T0 + 60  # type: ignore[union-attr]


async def test_lookups_of_one_iteration_share_one_read(ledger: AsyncLedger) -> None:
    ids = await running_intervals(ledger, 40)
    reads = []
    real_get_many = Ledger.get_many

    def counting(self: Ledger, interval_ids: list[int]) -> Any:
        reads.append(len(interval_ids))
        return real_get_many(self, interval_ids)

    Ledger.get_many = counting  # type: ignore[method-assign,assignment]
    try:
        found = await asyncio.gather(*(ledger.lookup(i) for i in [*ids, ids[0], 10**9]))
    finally:
        Ledger.get_many = real_get_many  # type: ignore[method-assign]
    assert reads == [41]  # 42 lookups (one id twice), one query
    assert [f.id for f in found[:40] if f is not None] == ids
    assert found[40] is not None and found[40].id == ids[0]
    assert found[41] is None
