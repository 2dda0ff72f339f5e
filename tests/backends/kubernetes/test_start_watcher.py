"""How one start reads its pod's updates and events (``_start.StartWatcher``), without a cluster.

The watcher is fed by hand here, in the orders the two watches (pods, events) may deliver them:
they are separate streams, so a pod's "cannot be placed" event may arrive after the update that
shows the pod on a node, and reading the GPU capacity for the message takes a moment.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from einfra_spawner import BackendError, ResolvedGpu, ResolvedOptions
from einfra_spawner.backend import GpuCapacity
from einfra_spawner.progress import StartProgress
from einfra_spawner_kubernetes._start import StartWatcher

from .conftest import MakeRequest

UID = "4f0c6f7e-0000-0000-0000-000000000001"
NO_A40 = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
NO_CPU = "0/3 nodes are available: 3 Insufficient cpu."


def pod(node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "notebook"}]}
    if node is not None:
        spec["nodeName"] = node
    return {"metadata": {"name": "jupyter-ada", "uid": UID}, "spec": spec, "status": {"phase": "Pending"}}


def failed_scheduling(message: str) -> dict[str, Any]:
    return {
        "reason": "FailedScheduling",
        "type": "Warning",
        "message": message,
        "involvedObject": {"kind": "Pod", "name": "jupyter-ada", "uid": UID},
    }


class Capacity:
    """``capacity_of`` for the watcher: records the calls, answers when released."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, gpu: ResolvedGpu) -> GpuCapacity | None:
        self.asked.append(gpu.id)
        await self.release.wait()
        return GpuCapacity(gpu.id, 0, 2)


def watcher_for(options: ResolvedOptions, grace: float, capacity: Capacity) -> StartWatcher:
    outcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    return StartWatcher(options, outcome, StartProgress(), grace=grace, capacity_of=capacity)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def past(grace: float) -> None:
    """Return after a countdown of ``grace`` seconds armed before now has fired (timers fire in
    order of their deadlines): asserts the cause, not how long anything took."""
    await asyncio.sleep(grace * 2)


GRACE = 0.05


async def test_a_pod_placed_while_the_gpu_capacity_is_read_is_not_failed_later(
    make_request: MakeRequest,
) -> None:
    # The capacity read of a GPU start's "cannot be placed" ended after the pod had a node: the
    # countdown must not start then (it used to, and failed a running start after the grace).
    options = make_request(request={"gpu": "a40"}).options
    capacity = Capacity()
    watcher = watcher_for(options, GRACE, capacity)
    try:
        watcher.watch_uid(UID, pod(), [])
        watcher.on_event("ADDED", failed_scheduling(NO_A40))
        await settle()
        assert capacity.asked == ["a40"]
        watcher.on_pod("MODIFIED", pod(node="gpu-a40-1"))  # a GPU was freed: placed
        capacity.release.set()
        await settle()
        assert watcher.timer is None
        await past(GRACE)
        assert not watcher.outcome.done()
    finally:
        watcher.close()


async def test_a_late_cannot_be_placed_event_does_not_fail_a_placed_pod(make_request: MakeRequest) -> None:
    watcher = watcher_for(make_request().options, 0.0, Capacity())
    try:
        watcher.watch_uid(UID, pod(), [])
        watcher.on_pod("MODIFIED", pod(node="cpu-1"))
        watcher.on_event("ADDED", failed_scheduling(NO_CPU))  # from before, delivered after
        assert not watcher.outcome.done()
    finally:
        watcher.close()


async def test_replayed_events_of_a_pod_placed_since_do_not_fail_it(make_request: MakeRequest) -> None:
    # An adopted pod, or one whose events were cached before its uid was known: the latest
    # state of the pod is on a node, so its earlier "cannot be placed" is history.
    watcher = watcher_for(make_request().options, 0.0, Capacity())
    try:
        watcher.watch_uid(UID, pod(node="cpu-1"), [failed_scheduling(NO_CPU)])
        assert not watcher.outcome.done()
        assert [e.message for e in watcher.progress.events] == [f"Waiting for free resources: {NO_CPU}"]
    finally:
        watcher.close()


async def test_without_grace_a_pod_that_fits_nowhere_fails_at_once(make_request: MakeRequest) -> None:
    watcher = watcher_for(make_request().options, 0.0, Capacity())
    try:
        watcher.watch_uid(UID, pod(), [])
        watcher.on_event("ADDED", failed_scheduling(NO_CPU))
        with pytest.raises(BackendError, match="The cluster has no room right now"):
            watcher.outcome.result()
        assert watcher.progress.failed
    finally:
        watcher.close()


async def test_with_a_gpu_the_failure_names_the_free_count(make_request: MakeRequest) -> None:
    capacity = Capacity()
    capacity.release.set()
    watcher = watcher_for(make_request(request={"gpu": "a40"}).options, 0.0, capacity)
    try:
        watcher.watch_uid(UID, pod(), [])
        watcher.on_event("ADDED", failed_scheduling(NO_A40))
        await settle()
        with pytest.raises(BackendError, match=r"No NVIDIA A40 is free right now \(0 of 2\)"):
            watcher.outcome.result()
    finally:
        watcher.close()


@pytest.mark.parametrize("gpu", [False, True])
async def test_with_grace_the_start_fails_once_the_grace_has_passed_unplaced(
    make_request: MakeRequest, gpu: bool
) -> None:
    capacity = Capacity()
    capacity.release.set()
    options = make_request(request={"gpu": "a40"} if gpu else {}).options
    watcher = watcher_for(options, GRACE, capacity)
    try:
        watcher.watch_uid(UID, pod(), [])
        watcher.on_event("ADDED", failed_scheduling(NO_A40 if gpu else NO_CPU))
        watcher.on_event("MODIFIED", failed_scheduling(NO_A40 if gpu else NO_CPU))  # the scheduler retries
        await settle()
        assert not watcher.outcome.done()  # still waiting: an autoscaler may add a node
        first = watcher.timer
        assert first is not None
        await past(GRACE)
        assert watcher.timer is first  # one countdown, not one per event
        with pytest.raises(BackendError):
            watcher.outcome.result()
    finally:
        watcher.close()


async def test_with_grace_a_pod_placed_in_time_is_not_failed(make_request: MakeRequest) -> None:
    watcher = watcher_for(make_request().options, GRACE, Capacity())
    try:
        watcher.watch_uid(UID, pod(), [])
        watcher.on_event("ADDED", failed_scheduling(NO_CPU))
        countdown = watcher.timer
        assert countdown is not None
        watcher.on_pod("MODIFIED", pod(node="cpu-1"))
        assert watcher.timer is None and countdown.cancelled()
        await past(GRACE)
        assert not watcher.outcome.done()
    finally:
        watcher.close()
