"""Fault injection and request counters, in process and through the /_harness/ routes."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from einfra_spawner.testing import FakeKubernetes

from .core_v1 import CoreV1, status_of
from .manifests import pod_body


async def test_latency_applies_to_every_request(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.list_namespaced_pod("default")  # a warm connection
    fake_k8s.faults.latency = 0.05
    began = time.perf_counter()
    await v1.list_namespaced_pod("default")
    assert time.perf_counter() - began >= 0.05


async def test_one_shot_faults_answer_with_status_bodies(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    fake_k8s.inject_fault(503, verb="create", resource="pods", count=2)
    fake_k8s.inject_fault(429, verb="list")
    for _ in range(2):
        with pytest.raises(ApiException) as unavailable:
            await v1.create_namespaced_pod("default", pod_body("nb"))
        assert unavailable.value.status == 503
        status = status_of(unavailable.value)
        assert (status["kind"], status["reason"], status["code"]) == ("Status", "ServiceUnavailable", 503)
    assert fake_k8s.get("pods", "default", "nb") is None  # a failed write changed nothing
    await v1.create_namespaced_secret("default", {"metadata": {"name": "other-verb"}})
    await v1.create_namespaced_pod("default", pod_body("nb"))
    with pytest.raises(ApiException) as throttled:
        await v1.list_namespaced_pod("default")
    assert throttled.value.status == 429
    assert throttled.value.headers is not None and throttled.value.headers["Retry-After"] == "1"
    status = status_of(throttled.value)
    assert status["reason"] == "TooManyRequests"
    assert status["details"] == {"retryAfterSeconds": 1}
    assert len((await v1.list_namespaced_pod("default")).items) == 1
    assert fake_k8s.faults.injected_count == 3


async def outcomes(fake: FakeKubernetes, count: int) -> list[int]:
    statuses = []
    async with fake.api_client() as api:
        v1 = CoreV1(api)
        for _ in range(count):
            try:
                await v1.list_namespaced_pod("default")
                statuses.append(200)
            except ApiException as error:
                statuses.append(error.status)
    return statuses


async def test_random_faults_are_reproducible(fake_k8s_factory: Any) -> None:
    options = {"error_rate": 0.3, "throttle_rate": 0.2, "seed": 7}
    first = await outcomes(await fake_k8s_factory(**options), 40)
    second = await outcomes(await fake_k8s_factory(**options), 40)
    assert first == second
    assert {200, 429, 503} == set(first)


async def test_request_counters_and_the_debug_routes(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespaced_pod("default", pod_body("nb"))
    await v1.read_namespaced_pod("nb", "default")
    await v1.list_namespaced_pod("default")
    await v1.list_node()
    await v1.patch_namespaced_pod("nb", "default", {"metadata": {"labels": {"a": "b"}}})
    await v1.delete_namespaced_pod("nb", "default")
    assert fake_k8s.request_count("create", "pods") == 1
    assert fake_k8s.request_count("get") == 1
    assert fake_k8s.request_count("list") == 2
    assert fake_k8s.request_count(resource="pods") == 5
    async with aiohttp.ClientSession() as session:
        async with session.get(fake_k8s.url + "/_harness/stats") as response:
            stats = await response.json()
        assert {"verb": "patch", "resource": "pods", "count": 1} in stats["requests"]
        assert stats["total"] == 6 and stats["objects"]["nodes"] == 7
        async with session.post(
            fake_k8s.url + "/_harness/faults/inject", json={"status": 500, "verb": "get", "count": 1}
        ) as response:
            assert response.status == 200
        async with session.post(fake_k8s.url + "/_harness/faults", json={"latency_ms": 1}) as response:
            assert (await response.json())["latency_ms"] == 1
        async with session.post(fake_k8s.url + "/_harness/stats/reset") as response:
            assert (await response.json())["total"] == 0
    with pytest.raises(ApiException) as injected:
        await v1.read_namespace("default")
    assert injected.value.status == 500
    assert fake_k8s.faults.latency == 0.001
    assert fake_k8s.request_count() == 1  # debug routes are not counted
