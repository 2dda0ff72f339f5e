"""A burst of polls (JupyterHub polls every server at once when it starts) takes turns: no loop
iteration reads more than ``polls_per_iteration`` servers' state, so the loop keeps serving
in between; every poll still answers, and one that fails does not hold its turn."""

from __future__ import annotations

import asyncio
from typing import Any

from einfra_spawner.errors import BackendError

from .test_spawner import FakeBackend, backend, make_spawner, runtime

__all__ = ["backend", "runtime"]


async def test_a_burst_of_polls_reads_the_backend_in_turns(backend: FakeBackend) -> None:
    iteration = 0
    loop = asyncio.get_running_loop()

    def tick() -> None:
        nonlocal iteration
        iteration += 1
        ticker[0] = loop.call_soon(tick)

    ticker = [loop.call_soon(tick)]
    polled_at: list[int] = []
    real_poll = backend.poll

    async def counting_poll(identity: Any, state: Any) -> int | None:
        polled_at.append(iteration)
        if state.get("broken"):
            raise BackendError("the API server did not answer")
        return await real_poll(identity, state)

    backend.poll = counting_poll  # type: ignore[method-assign]
    spawners = [make_spawner(name=f"u{i:02}", polls_per_iteration=4) for i in range(40)]
    for number, spawner in enumerate(spawners):
        spawner.load_state({"backend": "fake", "server": {"pid": 7, "broken": number % 10 == 0}})
    try:
        statuses = await asyncio.gather(*(s.poll() for s in spawners))
    finally:
        ticker[0].cancel()
    assert statuses == [None] * 40  # running, and "assumed running" where the poll failed
    assert len(polled_at) == 40
    assert max(polled_at.count(i) for i in set(polled_at)) <= 4  # four reads per iteration
    assert len(set(polled_at)) >= 10
