"""The progress record of one start (einfra_spawner.progress), shared by both backends."""

from __future__ import annotations

import asyncio

from einfra_spawner.backend import ProgressEvent
from einfra_spawner.progress import StartProgress

HOME = ProgressEvent("Preparing your home", 10)
SUBMITTED = ProgressEvent("Your server was submitted to the cluster", 20)
READY = ProgressEvent("Your server is ready", 100)


async def read(progress: StartProgress) -> list[ProgressEvent]:
    return [event async for event in progress.follow()]


async def settle() -> None:
    """Let every reader that can run do so (readers are woken by writes, not by timers)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_every_reader_sees_every_event_in_order() -> None:
    progress = StartProgress()
    readers = [asyncio.ensure_future(read(progress)) for _ in range(3)]
    await settle()
    progress.add(HOME)
    await settle()
    progress.add(SUBMITTED)
    progress.add(READY)
    progress.end()
    assert await asyncio.gather(*readers) == [[HOME, SUBMITTED, READY]] * 3


async def test_a_reader_that_comes_late_sees_everything_from_the_first_event() -> None:
    progress = StartProgress()
    early = asyncio.ensure_future(read(progress))
    progress.add(HOME)
    progress.add(SUBMITTED)
    await settle()
    late = asyncio.ensure_future(read(progress))
    await settle()
    progress.add(READY)
    progress.end()
    assert await early == await late == [HOME, SUBMITTED, READY]
    # After the end too: the whole record, then the iterator ends at once.
    assert await read(progress) == [HOME, SUBMITTED, READY]


async def test_readers_wait_for_the_end_and_then_finish() -> None:
    progress = StartProgress()
    reader = asyncio.ensure_future(read(progress))
    progress.add(HOME)
    await settle()
    assert not reader.done()  # the start goes on: the reader waits for more
    progress.end()
    await settle()
    assert reader.done()
    assert reader.result() == [HOME]
    assert progress.ended


async def test_the_last_event_before_the_end_is_delivered() -> None:
    # The Kubernetes backend once ended the record before adding "Your server is ready": a
    # reader waiting at that moment must get it, as must one that comes after the end.
    progress = StartProgress()
    waiting = asyncio.ensure_future(read(progress))
    progress.add(SUBMITTED)
    await settle()
    progress.add(READY)
    progress.end()
    assert (await waiting)[-1] == READY
    assert (await read(progress))[-1] == READY


async def test_nothing_is_added_after_the_end() -> None:
    progress = StartProgress()
    progress.add(READY)
    progress.end()
    progress.add(ProgressEvent("late news", 50))
    progress.end()  # twice is fine
    assert progress.events == (READY,)
    assert await read(progress) == [READY]


def test_failed_tells_whether_the_last_event_reports_a_failure() -> None:
    progress = StartProgress()
    assert not progress.failed
    progress.add(HOME)
    assert not progress.failed
    progress.add(ProgressEvent("No NVIDIA A40 is free right now.", None, failed=True))
    assert progress.failed


async def test_a_reader_that_stops_early_does_not_hold_up_the_others() -> None:
    progress = StartProgress()
    first: list[ProgressEvent] = []

    async def read_one() -> None:
        async for event in progress.follow():
            first.append(event)
            break

    quitter = asyncio.ensure_future(read_one())
    reader = asyncio.ensure_future(read(progress))
    progress.add(HOME)
    await quitter
    progress.add(READY)
    progress.end()
    assert first == [HOME]
    assert await reader == [HOME, READY]
