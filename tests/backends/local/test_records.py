"""The local backend's own records: a hub killed in the middle of a start leaves a server that
JupyterHub never heard of; the next hub must find it (``inventory``), end it before starting that
server again, and remove it when the reconciler calls it an orphan. A record is never trusted
further than ``/proc`` proves it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from einfra_spawner import BackendError, ResolvedOptions, ServerNames
from einfra_spawner.backend import BackendBase, GpuCapacity, ServerRecord
from einfra_spawner_local import LocalBackend
from einfra_spawner_local._recordfiles import LaunchRecord, RecordFiles
from einfra_spawner_local._records import ServerRef

from ..inventories import inventory_of
from .harness import (
    REPO,
    Harness,
    alive,
    http_get,
    listing,
    marked_processes,
    options,
    profiles,
    start_time_of,
    wait_until,
)

SLEEPER = (sys.executable, "-c", "import time; time.sleep(300)")
GPU_USER = ["gpu"]


def records(harness: Harness) -> Path:
    """The records folder by default: ``<home_root>/records``."""
    return harness.root / "homes" / "records"


def record_file(harness: Harness, user: str = "ana", server: str = "") -> Path:
    return records(harness) / f"{ServerNames(user, server).pod}.json"


async def orphan(
    harness: Harness,
    user: str = "ana",
    server: str = "",
    *,
    request: dict[str, Any] | None = None,
    groups: list[str] | None = None,
    gpu_inventory: dict[str, int] | None = None,
) -> int:
    """Run a hub in a process of its own, let it launch ``user``'s server, and SIGKILL it while
    its start waits for the server to answer. Returns the pid of the server it leaves behind."""
    pod = ServerNames(user, server).pod
    harness.markers.append(f"{pod}:")  # the harness's last resort kills it, whatever happens
    spec = {
        "root": str(harness.root),
        "fake_server": str(harness.fake_server),
        "user": user,
        "server": server,
        "request": request or {},
        "groups": groups or [],
        "gpu_inventory": gpu_inventory or {},
    }
    path = record_file(harness, user, server)
    with (harness.root / f"hub-{pod}.log").open("wb") as hub_log:
        hub = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.backends.local.dying_hub",
            json.dumps(spec),
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=hub_log,
            stderr=hub_log,
        )
    try:
        launched = await wait_until(lambda: path.exists() or hub.returncode is not None, timeout=20)
        assert launched and hub.returncode is None, (harness.root / f"hub-{pod}.log").read_text()
        pid: int = json.loads(path.read_text())["pid"]
    finally:
        if hub.returncode is None:
            hub.kill()
        await hub.wait()
    # Killed while starting (it never printed that the start returned), and its server lives on.
    assert await hub.wait() == -signal.SIGKILL
    assert "the start returned" not in (harness.root / f"hub-{pod}.log").read_text()
    assert alive(pid)
    return pid


def write_record(harness: Harness, user: str, **fields: Any) -> dict[str, Any]:
    """A record written by hand, in the documented format."""
    names = ServerNames(user, "")
    record = {
        "version": 1,
        "server": names.pod,
        "instance": "hub",
        "user_label": names.user_label,
        "server_label": names.server_label,
        "created": time.time(),
        "pid": os.getpid(),
        "start_time": start_time_of(os.getpid()),
        "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "marker": f"{names.pod}:0123456789abcdef",
        "ip": "127.0.0.1",
        "port": 9,
        "home": str(harness.root / "homes" / names.home),
        "log": str(harness.root / "homes" / "logs" / f"{names.pod}.log"),
        "gpu": None,
        "cpus": None,
        **fields,
    }
    records(harness).mkdir(parents=True, exist_ok=True)
    record_file(harness, user).write_text(json.dumps(record))
    return record


# -- a hub killed in the middle of a start -----------------------------------------------------


async def test_a_hub_killed_mid_start_leaves_a_server_the_next_hub_finds_and_replaces(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    old = await orphan(harness)
    names = ServerNames("ana", "")

    # The restarted hub: JupyterHub saved no state for the server, this object never saw it.
    reconciling = harness.backend()
    found = await inventory_of(reconciling, "hub")
    assert [(r.server_label, r.user_label, r.running, r.description) for r in found] == [
        (names.server_label, names.user_label, True, f"process {old}")
    ]
    assert found[0].created <= time.time()
    assert await reconciling.inventory("course") == []

    # Starting the same server again ends the earlier process first: never two of them. A
    # backend object that has not taken an inventory knows it from the record alone.
    after = harness.backend()
    with caplog.at_level(logging.WARNING, logger="test.local"):
        started = await harness.start(after, harness.request())
    assert not alive(old)
    assert marked_processes(f"{names.pod}:") == [started.state["pid"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(old) in message for message in warnings), warnings
    [current] = await inventory_of(after, "hub")
    assert current.running and current.description == f"process {started.state['pid']}"


async def test_remove_ends_an_orphan(harness: Harness) -> None:
    old = await orphan(harness, server="lab")
    after = harness.backend()
    [record] = await inventory_of(after, "hub")
    assert record.server_label == ServerNames("ana", "lab").server_label

    await after.remove(record)
    assert not alive(old)
    assert marked_processes(f"{ServerNames('ana', 'lab').pod}:") == []
    assert not record_file(harness, server="lab").exists()
    assert await after.inventory("hub") == []
    await after.remove(record)  # already gone: fine


async def test_an_orphan_found_in_the_records_holds_its_gpus(harness: Harness) -> None:
    inventory = {"a40": 1}
    old = await orphan(
        harness, request={"gpu": "a40", "gpu_count": 1}, groups=GPU_USER, gpu_inventory=inventory
    )
    after = harness.backend(gpu_inventory=inventory)
    [record] = await inventory_of(after, "hub")
    types = profiles().instance.gpu_types
    assert (await after.gpu_capacity(types))["a40"] == GpuCapacity("a40", 0, 1)
    bob = harness.request(user="bob", resolved=_gpu_options("bob"))
    with pytest.raises(BackendError, match="1 of 1 in use"):
        await after.start(bob)

    await after.remove(record)
    assert not alive(old)
    assert (await after.gpu_capacity(types))["a40"] == GpuCapacity("a40", 1, 1)


async def test_restarting_the_orphaned_server_takes_over_its_gpus(harness: Harness) -> None:
    inventory = {"a40": 1}
    old = await orphan(
        harness, request={"gpu": "a40", "gpu_count": 1}, groups=GPU_USER, gpu_inventory=inventory
    )
    after = harness.backend(gpu_inventory=inventory)
    assert len(await inventory_of(after, "hub")) == 1
    # The same server: its own earlier process does not count against it, and is ended.
    started = await harness.start(after, harness.request(resolved=_gpu_options("ana")))
    assert not alive(old)
    types = profiles().instance.gpu_types
    assert (await after.gpu_capacity(types))["a40"] == GpuCapacity("a40", 0, 1)
    assert started.state["gpu"] == {"id": "a40", "count": 1}


def _gpu_options(user: str) -> ResolvedOptions:
    return options({"gpu": "a40", "gpu_count": 1}, user=user, groups=frozenset(GPU_USER))


# -- records follow their servers ----------------------------------------------------------------


async def test_the_record_is_written_before_the_server_answers(harness: Harness) -> None:
    # The sleeper never answers: only the stop below may end this start, however slow the
    # machine (with the harness's 15 s answer timeout, a loaded CI run ended it first).
    backend = harness.backend(http_timeout=600.0, start_timeout=900.0)
    request = harness.request(cmd=SLEEPER)
    names = ServerNames("ana", "")
    start = asyncio.create_task(backend.start(request))
    try:
        assert await wait_until(record_file(harness).exists)
        assert not start.done()
        record = json.loads(record_file(harness).read_text())
        assert start_time_of(record["pid"]) == record["start_time"]
        assert marked_processes(record["marker"]) == [record["pid"]]
        assert record["instance"] == "hub" and record["server"] == names.pod
        assert (record["user_label"], record["server_label"]) == (names.user_label, names.server_label)
        assert record["boot_id"] and record["port"] > 0 and record["created"] <= time.time()
        # A start in progress is reported (the reconciler's grace period covers it).
        [found] = await inventory_of(backend, "hub")
        assert found.running and found.description == f"process {record['pid']}"
    finally:
        await backend.stop(request.identity, {})
        with pytest.raises(BackendError, match="stopped while it was starting"):
            await start
    assert not record_file(harness).exists()
    assert marked_processes(f"{names.pod}:") == []


async def test_stop_failure_and_death_remove_the_record(harness: Harness) -> None:
    backend = harness.backend()
    request = harness.request()
    started = await harness.start(backend, request)
    assert json.loads(record_file(harness).read_text())["pid"] == started.state["pid"]
    await backend.stop(request.identity, started.state)
    assert not record_file(harness).exists()

    with pytest.raises(BackendError, match="exit status 2"):
        await backend.start(harness.request(cmd=(sys.executable, "-c", "raise SystemExit(2)")))
    assert not record_file(harness).exists()

    started = await harness.start(backend, request)
    os.kill(started.state["pid"], signal.SIGKILL)
    assert await wait_until(lambda: not alive(started.state["pid"]))
    assert await backend.poll(request.identity, started.state) == -signal.SIGKILL
    assert not record_file(harness).exists()


async def test_a_server_that_cannot_be_recorded_is_not_started(harness: Harness) -> None:
    blocked = harness.root / "not-a-folder"
    blocked.write_text("")
    backend = harness.backend(record_root=str(blocked))
    with pytest.raises(BackendError, match="could not be recorded"):
        await backend.start(harness.request())
    assert marked_processes(harness.markers[-1]) == []


async def test_a_restarted_hub_polls_a_dead_server_and_drops_its_record(harness: Harness) -> None:
    before = harness.backend()
    request = harness.request()
    started = await harness.start(before, request)
    os.kill(started.state["pid"], signal.SIGKILL)
    assert await wait_until(lambda: not alive(started.state["pid"]))
    after = harness.backend()
    assert await after.poll(request.identity, started.state) == 0
    assert not record_file(harness).exists()


async def test_inventory_reports_only_the_instance_asked_for(harness: Harness) -> None:
    backend = harness.backend()
    hub = await harness.start(backend, harness.request(user="ana"))
    course_options = options(instance="course", user="bob")
    course = await harness.start(backend, harness.request(user="bob", resolved=course_options))
    assert [r.description for r in await inventory_of(backend, "hub")] == [f"process {hub.state['pid']}"]
    assert [r.description for r in await inventory_of(backend, "course")] == [
        f"process {course.state['pid']}"
    ]
    assert await backend.inventory("ai") == []
    # Another hub's records are neither reported nor removed.
    assert len(listing(records(harness)) or []) == 2


async def test_leftover_kernels_of_a_dead_server_are_reported_and_removed(harness: Harness) -> None:
    before = harness.backend()
    request = harness.request()
    started = await harness.start(before, request)
    _, spawned = await http_get(started.endpoint.port, "/user/ana/spawn")
    os.kill(started.state["pid"], signal.SIGKILL)  # the server dies, its kernels stay
    assert await wait_until(lambda: not alive(started.state["pid"]))

    after = harness.backend()
    [record] = await inventory_of(after, "hub")
    assert not record.running
    await after.remove(record)
    assert not any(alive(pid) for pid in spawned["pids"])
    assert await after.inventory("hub") == []
    assert not record_file(harness).exists()


# -- records are never trusted further than /proc proves them ----------------------------------

SIGNAL_LOGGER = r"""
import signal, sys, time
log = sys.argv[1]
def caught(signum, frame):
    with open(log, "a") as out:
        out.write(signal.Signals(signum).name + "\n")
signal.signal(signal.SIGTERM, caught)
open(log, "a").close()
time.sleep(300)
"""


async def test_stale_and_forged_records_are_dropped_and_nothing_is_signalled(harness: Harness) -> None:
    caught = harness.root / "signals.txt"
    # An unrelated process that notes every SIGTERM it gets (and survives it).
    stranger = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SIGNAL_LOGGER, str(caught), start_new_session=True
    )
    try:
        assert await wait_until(caught.exists)
        me = os.getpid()
        stale: dict[str, dict[str, Any]] = {
            # Our own pid, reused: the record's start time is not ours.
            "bob": {"pid": me, "start_time": start_time_of(me) + 1},
            # A live process with its true start time, but without the server's marker: forged.
            "eve": {"pid": stranger.pid, "start_time": start_time_of(stranger.pid)},
            # The right process, but from another boot.
            "cy": {"pid": stranger.pid, "start_time": start_time_of(stranger.pid), "boot_id": "another-boot"},
        }
        written = {user: write_record(harness, user, **fields) for user, fields in stale.items()}
        backend = harness.backend()
        assert await backend.inventory("hub") == []
        assert listing(records(harness)) == []  # dropped, since nothing of them runs

        # Handed to remove() anyway, or found by a start of the same server: nothing is signalled.
        for user, record in written.items():
            names = ServerNames(user, "")
            await backend.remove(
                ServerRecord(
                    server_label=names.server_label,
                    user_label=names.user_label,
                    created=record["created"],
                    running=True,
                    ref=record,
                    description=f"process {record['pid']}",
                )
            )
        write_record(harness, "eve", **stale["eve"])
        await harness.start(backend, harness.request(user="eve"))
        assert alive(stranger.pid) and alive(me)
        assert caught.read_text() == ""
    finally:
        stranger.kill()
        await stranger.wait()


async def test_records_that_are_not_records_are_ignored(harness: Harness) -> None:
    folder = records(harness)
    folder.mkdir(parents=True)
    (folder / "jupyter-x-aaaaaaaaaa.json").write_text("{not json")
    (folder / "jupyter-y-bbbbbbbbbb.json").write_text(json.dumps({"pid": "1"}))
    # A record whose file name is not the server it names.
    (folder / "jupyter-z-cccccccccc.json").write_text(json.dumps(write_record(harness, "bob", pid=1)))
    record_file(harness, "bob").unlink()
    before = listing(folder)
    backend = harness.backend()
    assert await backend.inventory("hub") == []
    assert listing(folder) == before  # left for an operator to look at, never acted on


def test_the_local_backend_is_a_backend_base() -> None:
    assert issubclass(LocalBackend, BackendBase)


def _launch_record(marker_token: str) -> LaunchRecord:
    names = ServerNames("ana", "")
    ref = ServerRef(4242, 17, "boot", 40000, f"{names.pod}:{marker_token}", ("a40", 1), (0, 1))
    return LaunchRecord(
        server=names.pod,
        instance="hub",
        user_label=names.user_label,
        server_label=names.server_label,
        created=1764590400.5,
        ref=ref,
        home=Path("/h"),
        log=Path("/l"),
    )


def test_a_record_round_trips_and_foreign_data_is_not_a_record() -> None:
    record = _launch_record("aa")
    data = json.loads(json.dumps(record.to_json()))
    assert LaunchRecord.from_json(data) == record
    for foreign in (
        {},
        {**data, "version": 2},
        {**data, "instance": None},
        {**data, "created": True},
        {**data, "pid": "4242"},
        # The marker of another server: not a record this backend wrote.
        {**data, "marker": "jupyter-bob-abcdefghij:aa"},
    ):
        assert LaunchRecord.from_json(foreign) is None


def test_discarding_an_old_start_keeps_the_record_of_a_newer_one(tmp_path: Path) -> None:
    files = RecordFiles(tmp_path / "records", threading.Lock())
    old, new = _launch_record("old"), _launch_record("new")
    files.write(old)
    files.write(new)  # a later start of the same server replaces the record
    assert not files.discard(old.server, {old.ref.marker})
    assert files.read(new.server) == new
    assert files.discard(new.server, {new.ref.marker})
    assert files.read(new.server) is None
    assert listing(tmp_path / "records") == []  # no temporary file left either
