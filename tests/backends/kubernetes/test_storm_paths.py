"""What the Kubernetes backend does for spawn storms: its submission gate, the request path that
skips the generated client, and the per-pod index of cached events."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.typedefs import StrOrURL
from kubernetes_asyncio import client

from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes._api import KubeApi
from einfra_spawner_kubernetes._api_errors import ApiError
from einfra_spawner_kubernetes._informer import Informer
from einfra_spawner_kubernetes._pace import Gate
from einfra_spawner_kubernetes._retry import RetryPolicy

from .conftest import BackendFactory, MakeRequest


async def test_the_gate_admits_width_holders_in_arrival_order() -> None:
    gate = Gate(2)
    order: list[int] = []
    inside = 0
    most = 0

    async def hold(i: int) -> None:
        nonlocal inside, most
        async with gate.held():
            inside += 1
            most = max(most, inside)
            order.append(i)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(hold(i) for i in range(8)))
    assert most == 2
    assert order == list(range(8))


@pytest.mark.harness()
async def test_a_burst_of_starts_and_stops_goes_through_a_narrow_gate(
    cluster: FakeKubernetes, backend_factory: BackendFactory, make_request: MakeRequest
) -> None:
    backend = backend_factory(concurrent_submissions=1, api_connections=1)
    requests = [make_request(user=f"u{i}", request={"gpu": "none"}) for i in range(6)]
    started = await asyncio.gather(*(backend.start(r) for r in requests))
    assert len({s.state["pod"] for s in started}) == 6
    await asyncio.gather(*(backend.stop(r.identity, s.state) for r, s in zip(requests, started, strict=True)))
    assert cluster.objects("pods", "default") == []


async def test_the_fast_path_sends_the_token_and_reports_statuses(
    cluster: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    configuration = cluster.client_configuration()
    configuration.api_key = {"BearerToken": "s3cret"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    seen: list[str | None] = []
    api_client = client.ApiClient(configuration)
    api = KubeApi(api_client, RetryPolicy(attempts=1), logging.getLogger("test"))
    original = api.transport.session._request

    async def spy(method: str, url: StrOrURL, **kwargs: Any) -> aiohttp.ClientResponse:
        headers = kwargs.get("headers")
        seen.append(headers.get("authorization") if isinstance(headers, dict) else None)
        return await original(method, url, **kwargs)

    monkeypatch.setattr(api.transport.session, "_request", spy)
    try:
        with pytest.raises(ApiError) as missing:
            await api.get("pods", "default", "nobody")
        assert missing.value.status == 404 and missing.value.reason == "NotFound"
    finally:
        await api.close()
        await api_client.close()
    assert seen == ["Bearer s3cret"]
    assert api.counts == {("get", "pods"): 1}


async def test_events_are_found_by_their_pod_without_a_scan() -> None:
    def involved(event: dict[str, object]) -> str:
        target = event["involvedObject"]
        assert isinstance(target, dict)
        return f"{target['namespace']}/{target['name']}"

    informer = Informer(None, "events", "default", logging.getLogger("test"), index=involved)  # type: ignore[arg-type]

    def event(name: str, pod: str, kind: str = "ADDED") -> dict[str, object]:
        return {
            "type": kind,
            "object": {
                "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": "default"},
            },
        }

    informer._apply(event("e1", "a"))
    informer._apply(event("e2", "a"))
    informer._apply(event("e3", "b"))
    assert sorted(e["metadata"]["name"] for e in informer.indexed("default/a")) == ["e1", "e2"]
    informer._apply(event("e1", "a", "DELETED"))
    assert [e["metadata"]["name"] for e in informer.indexed("default/a")] == ["e2"]
    assert informer.indexed("default/c") == []


def _tracked(obj: object) -> int:
    """Objects the garbage collector tracks in ``obj`` (dicts of plain values are not tracked)."""
    import gc

    seen: set[int] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen or not gc.is_tracked(item):
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return len(seen)


def test_the_pod_cache_keeps_what_the_backend_reads_and_little_else(make_request: MakeRequest) -> None:
    from einfra_spawner.models import GpuType
    from einfra_spawner_kubernetes._capacity import gpu_capacity
    from einfra_spawner_kubernetes._explain import failure_from_pod, pod_is_ready
    from einfra_spawner_kubernetes._informer import slim_pod

    request = make_request(user="ada", request={"gpu": "a40", "gpu_count": 2})
    pod = {
        **request.manifests.pod,
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "notebook", "ready": True, "state": {"running": {}}}],
        },
    }
    pod["metadata"] = {**pod["metadata"], "uid": "u-1", "resourceVersion": "9", "deletionTimestamp": "x"}
    pod["spec"] = {**pod["spec"], "nodeName": "gpu-node-1"}
    slim = slim_pod(pod)
    assert slim["status"] == pod["status"]
    for key in ("name", "namespace", "uid", "labels", "annotations", "resourceVersion", "deletionTimestamp"):
        assert slim["metadata"][key] == pod["metadata"][key]
    assert slim["spec"]["nodeName"] == "gpu-node-1"
    assert slim["spec"]["containers"][0]["resources"] == pod["spec"]["containers"][0]["resources"]
    assert "env" not in slim["spec"]["containers"][0] and "volumes" not in slim["spec"]
    assert pod_is_ready(slim) and failure_from_pod(slim, request.options) is None
    crashed = {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 1}}}]}
    assert failure_from_pod(slim_pod({**pod, "status": crashed}), request.options) == failure_from_pod(
        {**pod, "status": crashed}, request.options
    )
    (resource,) = [r for r in pod["spec"]["containers"][0]["resources"]["limits"] if r.startswith("nvidia")]
    a40 = {"a40": GpuType(display_name="NVIDIA A40", resource=resource, node_selector={"gpu": "a40"})}
    node = {
        "metadata": {"name": "gpu-node-1", "labels": {"gpu": "a40"}},
        "status": {"allocatable": {resource: "4"}},
    }
    live = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": None}}
    assert gpu_capacity(a40, [node], [slim_pod(live)]) == gpu_capacity(a40, [node], [live])
    assert gpu_capacity(a40, [node], [slim_pod(live)])["a40"].free == 2
    assert _tracked(slim) <= _tracked(pod) / 2  # half the objects for the collector to scan
