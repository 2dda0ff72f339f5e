"""Watches through kubernetes_asyncio: resume, bookmarks (on the raw stream, as the backend reads them,
and through ``watch.Watch().stream``), 410, drops."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from einfra_spawner.testing import FakeKubernetes

from .core_v1 import CoreV1, unloaded
from .manifests import pod_body

# kubernetes-asyncio 33 reads a BOOKMARK's resourceVersion from the raw event (32.3, the floor,
# cannot: see test_the_client_s_watch_follows_bookmarks).
_RELEASE = importlib.metadata.version("kubernetes_asyncio")
WATCH_DESERIALISES_BOOKMARKS = int(_RELEASE.split(".")[0]) < 33


async def collect(v1: CoreV1, count: int, **kwargs: Any) -> list[tuple[str, str]]:
    """The first ``count`` (type, name) pairs of a pod watch in "default"."""
    seen: list[tuple[str, str]] = []
    async with watch.Watch() as stream:
        async for event in stream.stream(v1.list_namespaced_pod, "default", **kwargs):
            seen.append((event["type"], event["raw_object"]["metadata"].get("name", "")))
            if len(seen) == count:
                break
    return seen


async def test_watch_resumes_from_a_resource_version(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    listed = await v1.list_namespaced_pod("default")
    await v1.create_namespaced_pod("default", pod_body("a"))
    async with watch.Watch() as stream:
        async for event in stream.stream(
            v1.list_namespaced_pod,
            "default",
            timeout_seconds=5,
            resource_version=listed.metadata.resource_version,
        ):
            assert (event["type"], event["object"].metadata.name) == ("ADDED", "a")
            assert isinstance(event["object"], client.V1Pod)
            break
        resume_from = stream.resource_version
    await fake_k8s.wait_for_pod_phase("default", "a", "Running")
    await v1.create_namespaced_pod("default", pod_body("b"))
    seen = await collect(v1, 4, timeout_seconds=5, resource_version=resume_from)
    # a: bound, ContainerCreating, Running; then b is added. No second ADDED for a.
    assert seen == [("MODIFIED", "a"), ("MODIFIED", "a"), ("MODIFIED", "a"), ("ADDED", "b")]


async def test_watch_without_a_version_starts_with_the_current_objects(
    fake_k8s: FakeKubernetes, v1: CoreV1
) -> None:
    for name in ("x", "y"):
        await v1.create_namespaced_pod("default", pod_body(name))
    assert await collect(v1, 2, timeout_seconds=5) == [("ADDED", "x"), ("ADDED", "y")]
    assert await collect(v1, 1, timeout_seconds=5, resource_version="0") == [("ADDED", "x")]


async def test_bookmarks_carry_the_current_version(fake_k8s_factory: Any) -> None:
    """On the wire, as the backend reads a watch (``_api.watch``: the raw stream, one JSON event
    a line): a BOOKMARK is the kind and the current resourceVersion, nothing else."""
    fake: FakeKubernetes = await fake_k8s_factory(bookmark_interval=0.1)
    async with fake.api_client() as api:
        v1 = CoreV1(api)
        await v1.create_namespaced_secret("default", {"metadata": {"name": "s"}})
        response = await unloaded(
            v1.list_namespaced_secret(
                "default", watch=True, timeout_seconds=5, allow_watch_bookmarks=True, _preload_content=False
            )
        )
        try:
            first = json.loads(await response.content.readline())
            assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "s")
            bookmark = json.loads(await response.content.readline())
        finally:
            response.release()
    assert bookmark == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(fake.store.resource_version)},
        },
    }


@pytest.mark.xfail(
    WATCH_DESERIALISES_BOOKMARKS,
    raises=TypeError,
    strict=True,
    reason="kubernetes-asyncio < 33's Watch deserialises a BOOKMARK's object into a model, then "
    "reads it as a dict (TypeError: 'V1Secret' object is not subscriptable; "
    "tomplus/kubernetes_asyncio#363). The backend reads the raw stream, so it is not affected.",
)
async def test_the_client_s_watch_follows_bookmarks(fake_k8s_factory: Any) -> None:
    fake: FakeKubernetes = await fake_k8s_factory(bookmark_interval=0.1)
    async with fake.api_client() as api, watch.Watch() as stream:
        v1 = CoreV1(api)
        await v1.create_namespaced_secret("default", {"metadata": {"name": "s"}})
        async for event in stream.stream(
            v1.list_namespaced_secret, "default", timeout_seconds=5, allow_watch_bookmarks=True
        ):
            if event["type"] == "BOOKMARK":
                version = event["raw_object"]["metadata"]["resourceVersion"]
                assert version == str(fake.store.resource_version)
                assert event["raw_object"]["kind"] == "Secret"
                assert stream.resource_version == version
                break
            assert event["type"] == "ADDED"


async def test_a_compacted_version_is_expired(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    old = (await v1.list_namespaced_pod("default")).metadata.resource_version
    await v1.create_namespaced_pod("default", pod_body("a"))
    fake_k8s.compact()
    # With a server-side timeout kubernetes_asyncio raises at once ...
    with pytest.raises(ApiException) as expired:
        await collect(v1, 1, timeout_seconds=5, resource_version=old)
    assert expired.value.status == 410
    assert "too old resource version" in str(expired.value.reason)
    # ... without one it retries once with the same version, then raises too.
    with pytest.raises(ApiException) as forever:
        await collect(v1, 1, resource_version=old)
    assert forever.value.status == 410
    # On the wire: a 200 response whose one event is an ERROR with a 410 Status.
    url = f"{fake_k8s.url}/api/v1/namespaces/default/pods?watch=1&resourceVersion={old}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        event = await response.json(content_type=None)
    assert event["type"] == "ERROR"
    assert event["object"]["kind"] == "Status" and event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    # A fresh list gives a version to watch from (once "a" has settled: its kubelet's status
    # updates would otherwise come first).
    await fake_k8s.wait_for_pod_phase("default", "a", "Running")
    fresh = (await v1.list_namespaced_pod("default")).metadata.resource_version
    await v1.create_namespaced_pod("default", pod_body("b"))
    assert await collect(v1, 1, timeout_seconds=5, resource_version=fresh) == [("ADDED", "b")]


async def test_history_is_bounded(fake_k8s_factory: Any) -> None:
    fake: FakeKubernetes = await fake_k8s_factory(history_limit=5)
    async with fake.api_client() as api:
        v1 = CoreV1(api)
        start = (await v1.list_namespaced_secret("default")).metadata.resource_version
        for index in range(6):
            await v1.create_namespaced_secret("default", {"metadata": {"name": f"s{index}"}})
        with pytest.raises(ApiException) as expired:
            async with watch.Watch() as stream:
                async for _ in stream.stream(
                    v1.list_namespaced_secret, "default", timeout_seconds=5, resource_version=start
                ):
                    break
        assert expired.value.status == 410


async def test_timeout_and_dropped_watches_end_cleanly(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    # Ended by the server once the timeoutSeconds it granted ran out, cleanly: no event, no error.
    assert await asyncio.wait_for(collect(v1, 1, timeout_seconds=1, resource_version="1000000"), 30) == []
    assert fake_k8s.stats.watch_ends == [("pods", 1.0, "timeout")]
    watching = asyncio.create_task(collect(v1, 10, timeout_seconds=30))
    await fake_k8s.wait_for(lambda: fake_k8s.store.watcher_count() == 1)
    assert fake_k8s.drop_watches() == 1
    assert await asyncio.wait_for(watching, 30) == []  # ended without an error
    assert fake_k8s.stats.watch_ends[1:] == [("pods", 30.0, "closed")]  # by the drop, long before its time
    # A watch without timeoutSeconds is resumed by the client after a drop.
    resumed = asyncio.create_task(collect(v1, 1, resource_version="1"))
    await fake_k8s.wait_for(lambda: fake_k8s.store.watcher_count() == 1)
    watches = fake_k8s.request_count("watch", "pods")
    fake_k8s.drop_watches("pods")
    await fake_k8s.wait_for(lambda: fake_k8s.request_count("watch", "pods") == watches + 1)
    await v1.create_namespaced_pod("default", pod_body("after-drop"))
    assert await asyncio.wait_for(resumed, 30) == [("ADDED", "after-drop")]


async def test_selector_transitions_are_added_and_deleted(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespaced_pod("default", pod_body("p", labels={"app": "hub"}))
    version = (await v1.list_namespaced_pod("default")).metadata.resource_version
    watching = asyncio.create_task(
        collect(
            v1,
            3,
            timeout_seconds=5,
            resource_version=version,
            label_selector="app=hub",
            field_selector="metadata.name=p",
        )
    )
    await fake_k8s.wait_for(lambda: fake_k8s.store.watcher_count() == 1)
    await v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "other"}}})
    await v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "hub"}}})
    await v1.delete_namespaced_pod("p", "default", grace_period_seconds=0)
    # Kubelet updates while the label was "other" are not shown to this watcher.
    events = [kind for kind, _ in await asyncio.wait_for(watching, 5)]
    assert events[0] in ("MODIFIED", "DELETED")
    assert "ADDED" in events
