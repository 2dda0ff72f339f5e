"""Resources on the local machine: GPUs counted against an inventory, CPU affinity and memory
limits where the OS allows, and who the server runs as."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from einfra_spawner import BackendError
from einfra_spawner.backend import GpuCapacity

from .harness import FAKE_SERVER, Harness, http_get, listing, options, profiles


def owner_of(path: Path) -> int:
    return path.stat().st_uid


GPU_USER = frozenset({"gpu"})
MIB = 1024 * 1024


async def test_gpu_capacity_unknown_without_an_inventory(harness: Harness) -> None:
    backend = harness.backend()
    assert await backend.gpu_capacity(profiles().instance.gpu_types) == {}


async def test_gpu_capacity_counts_running_servers(harness: Harness) -> None:
    backend = harness.backend(gpu_inventory={"a40": 2, "mig-1g.10gb": 7})
    types = profiles().instance.gpu_types
    capacity = await backend.gpu_capacity(types)
    assert capacity["a40"] == GpuCapacity(gpu="a40", free=2, total=2)
    assert capacity["h100"] == GpuCapacity(gpu="h100", free=0, total=0)
    assert set(capacity) == set(types)

    one_a40 = options({"gpu": "a40", "gpu_count": 1}, groups=GPU_USER)
    request = harness.request(resolved=one_a40)
    started = await harness.start(backend, request)
    assert started.state["gpu"] == {"id": "a40", "count": 1}
    _, seen = await http_get(started.endpoint.port, "/user/ana/env")
    assert seen["env"]["EINFRA_GPU_TYPE"] == "a40" and seen["env"]["EINFRA_GPU_COUNT"] == "1"
    assert (await backend.gpu_capacity(types))["a40"] == GpuCapacity("a40", 1, 2)

    # Two more than are free: refused, with the figures.
    two_a40 = options({"gpu": "a40", "gpu_count": 2}, user="bob", groups=GPU_USER)
    with pytest.raises(BackendError, match="1 of 2 in use"):
        await backend.start(harness.request(user="bob", resolved=two_a40))
    no_h100 = options({"gpu": "h100"}, user="bob", groups=GPU_USER)
    with pytest.raises(BackendError, match="no NVIDIA H100"):
        await backend.start(harness.request(user="bob", resolved=no_h100))

    await backend.stop(request.identity, started.state)
    assert (await backend.gpu_capacity(types))["a40"] == GpuCapacity("a40", 2, 2)


async def test_adopted_servers_hold_their_gpus(harness: Harness) -> None:
    inventory = {"a40": 2}
    before = harness.backend(gpu_inventory=inventory)
    request = harness.request(resolved=options({"gpu": "a40", "gpu_count": 2}, groups=GPU_USER))
    started = await harness.start(before, request)
    after = harness.backend(gpu_inventory=inventory)
    assert await after.poll(request.identity, started.state) is None
    types = profiles().instance.gpu_types
    assert (await after.gpu_capacity(types))["a40"] == GpuCapacity("a40", 0, 2)


async def test_cpu_affinity_and_memory_limit(harness: Harness) -> None:
    backend = harness.backend()
    resolved = dataclasses.replace(options({"cpu": "1"}), memory_limit=256 * MIB)
    started = await harness.start(backend, harness.request(resolved=resolved))
    port = started.endpoint.port
    _, seen = await http_get(port, "/user/ana/env")
    available = sorted(os.sched_getaffinity(0))
    if len(available) > 1:
        assert len(seen["affinity"]) == 1 and seen["affinity"] == started.state["cpus"]
    else:
        assert seen["affinity"] == available and started.state["cpus"] is None
    assert seen["rlimit_data"] == 256 * MIB
    assert (await http_get(port, "/user/ana/alloc?mb=16"))[0] == 200
    assert (await http_get(port, "/user/ana/alloc?mb=512"))[0] == 507


async def test_servers_are_spread_over_cpus(harness: Harness) -> None:
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        pytest.skip("needs two CPUs")
    backend = harness.backend()
    pinned = []
    for user in ("ana", "bob"):
        resolved = options({"cpu": "1"}, user=user)
        started = await harness.start(backend, harness.request(user=user, resolved=resolved))
        pinned.append(started.state["cpus"])
    assert pinned[0] != pinned[1]


async def test_limits_can_be_turned_off(harness: Harness) -> None:
    backend = harness.backend(enforce_limits=False)
    resolved = dataclasses.replace(options({"cpu": "1"}), memory_limit=256 * MIB)
    started = await harness.start(backend, harness.request(resolved=resolved))
    _, seen = await http_get(started.endpoint.port, "/user/ana/env")
    assert seen["affinity"] == sorted(os.sched_getaffinity(0))
    assert seen["rlimit_data"] != 256 * MIB
    assert seen["env"]["MEM_LIMIT"] == str(256 * MIB)


async def test_allow_root_only_when_running_as_root(harness: Harness) -> None:
    backend = harness.backend()
    started = await harness.start(backend, harness.request(args=("--debug",)))
    _, seen = await http_get(started.endpoint.port, "/user/ana/env")
    expected = ["--debug", "--allow-root"] if os.geteuid() == 0 else ["--debug"]
    assert seen["argv"][1:] == expected


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder another account can reach (pytest's own temporary folders are private)."""
    folder = Path(tempfile.mkdtemp(prefix="einfra-local-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_run_as_user(harness: Harness, shared_folder: Path) -> None:
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' account")
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin")
    if python is None:
        pytest.skip("no system python3 that another account may run")
    script = shared_folder / "fake_singleuser.py"
    script.write_text(FAKE_SERVER)
    script.chmod(0o644)
    backend = harness.backend(run_as_user="nobody", home_root=str(shared_folder / "homes"))
    started = await harness.start(backend, harness.request(cmd=(python, str(script))))
    _, seen = await http_get(started.endpoint.port, "/user/ana/env")
    assert seen["uid"] == nobody.pw_uid
    assert seen["env"]["USER"] == "nobody"
    assert "--allow-root" not in seen["argv"]
    assert owner_of(Path(started.state["home"])) == nobody.pw_uid
    await backend.stop(harness.started[-1][0], started.state)


async def test_run_as_user_that_does_not_exist(harness: Harness) -> None:
    backend = harness.backend(run_as_user="no-such-account-here")
    with pytest.raises(BackendError, match="no-such-account-here"):
        await backend.start(harness.request())


async def test_a_refused_start_does_not_reset_the_home(harness: Harness) -> None:
    backend = harness.backend(gpu_inventory={"a40": 1})
    first = await harness.start(backend, harness.request())
    home = Path(first.state["home"])
    await backend.stop(harness.started[-1][0], first.state)
    marker = home / "keep-me.txt"
    marker.write_text("data")
    resolved = options({"gpu": "a10", "home": "reset"}, groups=GPU_USER)
    with pytest.raises(BackendError, match="no NVIDIA A10"):
        await backend.start(harness.request(resolved=resolved, state=first.state))
    assert marker.read_text() == "data"
    assert listing(home.parent) == sorted([home.name, "logs", "records"])
