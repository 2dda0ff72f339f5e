"""A restarted hub has a new backend object and only the state: it must find its servers again,
and never mistake another process for one of them."""

from __future__ import annotations

import asyncio
import sys

from einfra_spawner import ServerIdentity

from .harness import Harness, alive, http_get


async def test_a_new_backend_adopts_polls_and_stops_a_server(harness: Harness) -> None:
    before = harness.backend()
    request = harness.request()
    started = await harness.start(before, request)
    await before.close()  # the hub goes away; the server keeps running

    after = harness.backend()
    assert await after.poll(request.identity, started.state) is None
    status, _ = await http_get(started.endpoint.port, "/user/ana/api")
    assert status == 200
    await after.stop(request.identity, started.state)
    assert not alive(started.state["pid"])
    assert await after.poll(request.identity, started.state) == 0


async def test_a_new_backend_stops_kernels_of_an_adopted_server(harness: Harness) -> None:
    before = harness.backend()
    request = harness.request()
    started = await harness.start(before, request)
    _, spawned = await http_get(started.endpoint.port, "/user/ana/spawn")
    await before.close()

    after = harness.backend()
    await after.stop(request.identity, started.state)
    assert not any(alive(pid) for pid in [started.state["pid"], *spawned["pids"]])


async def _foreign_process() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(300)", start_new_session=True
    )


async def test_a_reused_pid_is_not_ours(harness: Harness) -> None:
    before = harness.backend()
    request = harness.request()
    started = await harness.start(before, request)
    foreign = await _foreign_process()
    try:
        # The state names the foreign process's pid, as if it had been reused after our server
        # ended: the start time tells them apart.
        stale = {**started.state, "pid": foreign.pid}
        after = harness.backend()
        assert await after.poll(request.identity, stale) == 0
        await after.stop(request.identity, stale)
        assert alive(foreign.pid)
    finally:
        foreign.kill()
        await foreign.wait()


async def test_a_state_from_another_boot_or_a_gone_process(harness: Harness) -> None:
    before = harness.backend()
    request = harness.request()
    started = await harness.start(before, request)
    after = harness.backend()
    other_boot = {**started.state, "boot_id": "00000000-0000-0000-0000-000000000000"}
    assert await after.poll(request.identity, other_boot) == 0
    await after.stop(request.identity, other_boot)
    assert alive(started.state["pid"])

    await before.stop(request.identity, started.state)
    assert await after.poll(request.identity, started.state) == 0


async def test_empty_or_foreign_states(harness: Harness) -> None:
    backend = harness.backend()
    identity = ServerIdentity(user="ana")
    for state in ({}, {"pod": "jupyter-ana"}, {"pid": "12", "start_time": 1}, {"pid": True}):
        assert await backend.poll(identity, state) == 0
        await backend.stop(identity, state)


async def test_an_adopted_server_that_no_longer_listens_is_ended(harness: Harness) -> None:
    before = harness.backend()
    request = harness.request()
    started = await harness.start(before, request)
    # The same process, but the state says another port: as if the server had closed its socket.
    wrong_port = {**started.state, "port": started.endpoint.port + 1}
    after = harness.backend()
    assert await after.poll(request.identity, wrong_port) == 0
    assert not alive(started.state["pid"])
