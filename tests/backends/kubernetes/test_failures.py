"""The Kubernetes backend when things fail (issue 11): an API outage during starts and stops, a
create whose answer is lost, a foreign pod in the way, and the last progress step."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from einfra_spawner import BackendError
from einfra_spawner.backend import ProgressEvent, StartRequest
from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes import KubernetesBackend
from einfra_spawner_kubernetes._api import KubeApi
from einfra_spawner_kubernetes._api_errors import ApiError, MaybeCreated

from ..inventories import inventory_of
from .conftest import BackendFactory, MakeRequest
from .test_backend import pods


def outage(cluster: FakeKubernetes, seconds: float) -> None:
    """Every API request answers 503 for ``seconds`` from now (as during an API server restart)."""
    cluster.faults.error_rate = 1.0
    asyncio.get_running_loop().call_later(seconds, setattr, cluster.faults, "error_rate", 0.0)


async def test_starts_in_flight_outlast_an_api_outage(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    # The old retry budget (six attempts, about 1.5 s) failed every one of these.
    await backend.warm_up()
    requests = [dataclasses.replace(make_request(user=f"u{i}"), timeout=60.0) for i in range(8)]
    injected_before = cluster.faults.injected_count
    outage(cluster, 4.0)
    started = await asyncio.gather(*(backend.start(r) for r in requests))
    assert cluster.faults.injected_count > injected_before + len(requests)  # each met the outage
    assert len(pods(cluster)) == 8
    for request, result in zip(requests, started, strict=True):
        await backend.stop(request.identity, result.state)


async def test_a_start_gives_up_at_its_own_deadline_and_leaves_no_pod(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    await backend.warm_up()
    request = dataclasses.replace(make_request(), timeout=1.0)
    cluster.faults.error_rate = 1.0
    try:
        with pytest.raises(BackendError) as failed:
            await backend.start(request)
    finally:
        cluster.faults.error_rate = 0.0
    assert "503" in str(failed.value)
    assert pods(cluster) == []


async def test_a_stop_during_a_long_outage_fails_and_the_pod_stays_for_the_reconciler(
    cluster: FakeKubernetes, backend_factory: BackendFactory, make_request: MakeRequest
) -> None:
    backend = backend_factory(api_retry_budget=0.5)
    request = make_request()
    started = await backend.start(request)
    cluster.faults.error_rate = 1.0
    try:
        with pytest.raises(BackendError):
            await backend.stop(request.identity, started.state)
    finally:
        cluster.faults.error_rate = 0.0
    (left,) = await inventory_of(backend, "hub")  # still there, still ours: the reconciler's to remove
    assert left.ref["uid"] == started.state["uid"]
    await backend.remove(left)
    assert pods(cluster) == []


async def test_a_create_whose_answer_is_lost_leaves_no_pod(
    cluster: FakeKubernetes,
    backend: KubernetesBackend,
    make_request: MakeRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The API server made the pod, but the hub never learnt it (the answer timed out through the
    # whole budget): a time-out does not mean "not created".
    real_create = KubeApi.create

    async def create_then_lose_the_answer(
        self: KubeApi, resource: str, namespace: str, body: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        made = await real_create(self, resource, namespace, body, **kwargs)
        if resource != "pods":
            return made
        lost = ApiError(0, {"message": "timed out"}, "create pods")
        raise MaybeCreated(lost, "create pods", namespace, body["metadata"]["name"])

    monkeypatch.setattr(KubeApi, "create", create_then_lose_the_answer)
    with pytest.raises(BackendError):
        await backend.start(make_request())
    assert pods(cluster) == []


async def test_a_foreign_pod_in_the_way_is_reported_and_left_alone(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    request = make_request()
    foreign = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": request.manifests.pod["metadata"]["name"], "labels": {"app": "not-ours"}},
        "spec": {"containers": [{"name": "x", "image": "busybox:1"}]},
    }
    cluster.api.create("pods", "default", foreign, trusted=True)
    with pytest.raises(BackendError) as refused:
        await backend.start(request)
    name = request.manifests.pod["metadata"]["name"]
    assert str(refused.value) == (
        f"A pod named {name} exists in namespace default and is not this hub's; nothing was changed. "
        "Please ask an operator to remove it."
    )
    assert pods(cluster) == [name]  # untouched


async def test_the_last_progress_step_is_delivered(
    backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    request: StartRequest = make_request()
    seen: list[ProgressEvent] = []

    async def follow() -> None:
        while not seen:
            async for event in backend.progress(request.identity, {}):
                seen.append(event)
            await asyncio.sleep(0)

    follower = asyncio.ensure_future(follow())
    started = await backend.start(request)
    await asyncio.wait_for(follower, 5)
    assert seen[-1] == ProgressEvent("Your server is ready", 100)
    await backend.stop(request.identity, started.state)


async def test_a_start_cancelled_during_an_outage_ends_at_once_and_its_pod_goes_later(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    # The hub's start time-out cancels a start whose pod exists while the API is away: the
    # cancellation is not held up by the removal, which goes on in the background and succeeds
    # once the API answers again.
    cluster.timings.running_delay = 3600.0  # the pod never gets to run: the start waits
    request = dataclasses.replace(make_request(), timeout=60.0)
    starting = asyncio.ensure_future(backend.start(request))
    for _ in range(500):  # until the pod exists
        if pods(cluster):
            break
        await asyncio.sleep(0.01)
    cluster.faults.error_rate = 1.0
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert cluster.faults.error_rate == 1.0  # the start ended while the API was still away
    assert pods(cluster) != []  # not removed yet
    cluster.faults.error_rate = 0.0
    for _ in range(500):
        if not pods(cluster):
            break
        await asyncio.sleep(0.02)
    assert pods(cluster) == []
