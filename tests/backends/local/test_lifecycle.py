"""A local server's life: start, answer, poll, stop; failures that leave nothing behind."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from einfra_spawner import BackendError
from einfra_spawner.backend import Backend, ProgressEvent

from .harness import (
    TOKEN,
    Harness,
    alive,
    http_get,
    marked_processes,
    options,
    start_time_of,
    wait_until,
)


async def test_start_answers_poll_and_stop(harness: Harness) -> None:
    backend = harness.backend()
    assert isinstance(backend, Backend)
    request = harness.request()
    started = await harness.start(backend, request)
    assert started.endpoint.ip == "127.0.0.1"
    status, body = await http_get(started.endpoint.port, "/user/ana/api")
    assert status == 200 and body == {"path": "/user/ana/api"}
    assert await backend.poll(request.identity, started.state) is None

    pid = started.state["pid"]
    await backend.stop(request.identity, started.state)
    assert not alive(pid)
    status_after = await backend.poll(request.identity, started.state)
    assert status_after is not None
    # Stopping what is gone is fine.
    await backend.stop(request.identity, started.state)


async def test_state_is_json_and_names_the_process(harness: Harness) -> None:
    backend = harness.backend()
    started = await harness.start(backend, harness.request())
    state = json.loads(json.dumps(started.state))
    assert state["pid"] > 0 and state["port"] == started.endpoint.port
    assert start_time_of(state["pid"]) == state["start_time"]
    assert state["home"].startswith(str(harness.root / "homes"))
    assert state["gpu"] is None


async def test_environment(harness: Harness) -> None:
    backend = harness.backend()
    resolved = dataclasses.replace(
        options({"cpu": "4", "memory": "16Gi"}),
        # The profile's variables come first: the hub's own (the token) cannot be overridden.
        env=(("PROFILE_VARIABLE", "from the profile"), ("JUPYTERHUB_API_TOKEN", "forged")),
    )
    started = await harness.start(backend, harness.request(resolved=resolved))
    port = started.endpoint.port
    _, seen = await http_get(port, "/user/ana/env")
    env = seen["env"]
    assert env["CPU_LIMIT"] == "4.0"
    assert env["CPU_GUARANTEE"] == "1.0"
    assert env["MEM_LIMIT"] == str(16 * 1024**3)
    assert env["MEM_GUARANTEE"] == str(4 * 1024**3)
    assert env["JUPYTERHUB_SERVICE_URL"] == f"http://127.0.0.1:{port}/user/ana/"
    assert env["JUPYTERHUB_API_TOKEN"] == TOKEN
    assert env["PROFILE_VARIABLE"] == "from the profile"
    assert env["HOME"] == started.state["home"] == seen["cwd"]


async def test_named_server_gets_its_own_home_and_url(harness: Harness) -> None:
    backend = harness.backend()
    default = await harness.start(backend, harness.request())
    named = await harness.start(backend, harness.request(server="gpu run"))
    assert default.state["home"] != named.state["home"]
    assert default.endpoint.port != named.endpoint.port
    _, seen = await http_get(named.endpoint.port, "/user/ana/gpu%20run/env")
    assert seen["env"]["JUPYTERHUB_SERVICE_URL"].endswith("/user/ana/gpu%20run/")


async def test_a_command_that_exits_fails_fast_with_its_output(harness: Harness) -> None:
    backend = harness.backend()
    # It leaves a process of its own behind, in a session of its own, before it fails.
    script = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
        " start_new_session=True)\n"
        "print('Traceback (most recent call last):')\n"
        "print('ModuleNotFoundError: No module named jupyterlab', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    request = harness.request(cmd=(sys.executable, "-c", script))
    with pytest.raises(BackendError) as failure:
        await backend.start(request)
    message = str(failure.value)
    # Ended by the exit (the wait wakes on it), not by the HTTP timeout, whose headline differs.
    assert message.startswith("JupyterLab stopped while starting (exit status 3). Its last messages were:")
    assert "ModuleNotFoundError: No module named jupyterlab" in message
    assert marked_processes(harness.markers[-1]) == []
    assert await backend.poll(request.identity, {}) == 0


async def test_a_command_that_is_missing(harness: Harness) -> None:
    backend = harness.backend()
    request = harness.request(cmd=("/nonexistent/jupyterhub-singleuser",))
    with pytest.raises(BackendError, match="could not be started"):
        await backend.start(request)


async def test_a_server_that_never_answers_is_stopped(harness: Harness) -> None:
    backend = harness.backend(http_timeout=1.0)
    request = harness.request(cmd=(sys.executable, "-c", "import time; time.sleep(300)"))
    with pytest.raises(BackendError, match="did not answer within 1 seconds"):
        await backend.start(request)
    assert marked_processes(harness.markers[-1]) == []


async def test_a_cancelled_start_leaves_nothing(harness: Harness) -> None:
    backend = harness.backend()
    request = harness.request(cmd=(sys.executable, "-c", "import time; time.sleep(300)"))
    start = asyncio.create_task(backend.start(request))
    assert await wait_until(lambda: marked_processes(harness.markers[-1]) != [])
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert marked_processes(harness.markers[-1]) == []


async def test_stop_while_starting(harness: Harness) -> None:
    backend = harness.backend()
    request = harness.request(cmd=(sys.executable, "-c", "import time; time.sleep(300)"))
    start = asyncio.create_task(backend.start(request))
    assert await wait_until(lambda: marked_processes(harness.markers[-1]) != [])
    await backend.stop(request.identity, {})
    with pytest.raises(BackendError, match="stopped while it was starting"):
        await start
    assert marked_processes(harness.markers[-1]) == []


async def test_stop_ends_the_process_group_and_kernels(harness: Harness) -> None:
    backend = harness.backend()
    request = harness.request()
    started = await harness.start(backend, request)
    _, spawned = await http_get(started.endpoint.port, "/user/ana/spawn")
    children = spawned["pids"]
    assert all(alive(pid) for pid in children)
    await backend.stop(request.identity, started.state)
    assert not alive(started.state["pid"])
    assert not any(alive(pid) for pid in children)


async def test_kernels_left_by_a_crashed_server_are_ended(harness: Harness) -> None:
    backend = harness.backend()
    request = harness.request()
    started = await harness.start(backend, request)
    _, spawned = await http_get(started.endpoint.port, "/user/ana/spawn")
    os.kill(started.state["pid"], signal.SIGKILL)  # the server dies, its kernel stays
    assert await wait_until(lambda: not alive(started.state["pid"]))
    assert alive(spawned["pids"][1])
    assert await backend.poll(request.identity, started.state) == -signal.SIGKILL
    await backend.stop(request.identity, started.state)
    assert not any(alive(pid) for pid in spawned["pids"])


async def test_progress_follows_the_start(harness: Harness) -> None:
    backend = harness.backend()
    request = harness.request()
    start = asyncio.create_task(harness.start(backend, request))
    await asyncio.sleep(0)  # the start registers itself before its first await
    events: list[ProgressEvent] = [e async for e in backend.progress(request.identity, {})]
    started = await start
    messages = [e.message for e in events]
    assert messages == [
        "Preparing your home folder",
        f"Starting JupyterLab ({Path(sys.executable).name}) on port {started.endpoint.port}",
        "Waiting for the server to answer",
        "Server is ready",
    ]
    assert events[-1].progress == 100 and not any(e.failed for e in events)
    # No start in progress: the iterator ends at once.
    assert [e async for e in backend.progress(request.identity, started.state)] == []


async def test_progress_reports_a_failure(harness: Harness) -> None:
    backend = harness.backend()
    request = harness.request(cmd=(sys.executable, "-c", "raise SystemExit(2)"))
    start = asyncio.create_task(backend.start(request))
    await asyncio.sleep(0)
    events = [e async for e in backend.progress(request.identity, {})]
    with pytest.raises(BackendError):
        await start
    assert events[-1].failed
    assert events[-1].message == "JupyterLab stopped while starting (exit status 2)."
