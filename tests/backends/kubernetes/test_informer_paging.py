"""The informer lists in pages (a hub restarted with thousands of servers lists tens of thousands
of events): every object arrives, the watch resumes from the list's version, the event loop runs
between pages, and a list that fails half-way replaces nothing and is tried again whole."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from kubernetes_asyncio import client

from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes._api import KubeApi
from einfra_spawner_kubernetes._api_errors import api_error
from einfra_spawner_kubernetes._informer import LIST_PAGE, Informer, slim_event
from einfra_spawner_kubernetes._retry import RetryPolicy

LOG = logging.getLogger("test")


def pod(number: int, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": f"p{number}", "namespace": "default", "resourceVersion": version}}


class PagedApi:
    """``list`` in pages of ``LIST_PAGE`` over ``objects``, each page as the server's continue
    token asks; optionally the second page of the first list fails (an API server restarting)."""

    def __init__(self, objects: list[dict[str, Any]], *, fail_second_page_once: bool = False) -> None:
        self.objects = objects
        self.fail_second_page_once = fail_second_page_once
        self.pages: list[tuple[int | None, str | None]] = []
        self.loop_turns_at_page: list[int] = []
        self.loop_turns = 0
        self.watched_from: list[str] = []

    async def list(
        self,
        resource: str,
        namespace: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
        **selectors: str,
    ) -> dict[str, Any]:
        self.pages.append((limit, continue_token))
        self.loop_turns_at_page.append(self.loop_turns)
        start = int(continue_token or 0)
        if start and self.fail_second_page_once:
            self.fail_second_page_once = False
            raise api_error(503, {"message": "apiserver restarting"}, "list pods")
        end = len(self.objects) if limit is None else start + limit
        metadata: dict[str, Any] = {"resourceVersion": f"{100 + len(self.pages)}"}
        if end < len(self.objects):
            metadata["continue"] = str(end)
        return {"items": self.objects[start:end], "metadata": metadata}

    async def watch(
        self, resource: str, namespace: str | None, resource_version: str, timeout: int, **selectors: str
    ) -> AsyncIterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        await asyncio.Event().wait()
        yield {}  # pragma: no cover - never reached


async def count_turns(api: PagedApi) -> None:
    """Another task of the hub: counts the loop iterations it gets."""
    while True:
        api.loop_turns += 1
        await asyncio.sleep(0)


async def test_a_large_list_comes_in_pages_and_the_loop_runs_between_them() -> None:
    api = PagedApi([pod(i) for i in range(2 * LIST_PAGE + 7)])
    seen: list[str] = []
    informer = Informer(cast(KubeApi, api), "pods", "default", LOG, max_backoff=0.01)
    informer.subscribe(None, lambda kind, obj: seen.append(kind))
    other = asyncio.create_task(count_turns(api))
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        assert api.pages == [(LIST_PAGE, None), (LIST_PAGE, str(LIST_PAGE)), (LIST_PAGE, str(2 * LIST_PAGE))]
        assert len(informer.cache) == 2 * LIST_PAGE + 7 and seen == ["ADDED"] * (2 * LIST_PAGE + 7)
        # The other task ran between the pages, not only after the whole list.
        first, second, third = api.loop_turns_at_page
        assert first < second < third
        for _ in range(5):
            await asyncio.sleep(0)
        assert api.watched_from == ["101"]  # the first page's version: the list's snapshot
    finally:
        other.cancel()
        await informer.close()


async def test_a_list_that_fails_half_way_replaces_nothing_and_is_tried_again_whole() -> None:
    api = PagedApi([pod(i) for i in range(LIST_PAGE + 3)], fail_second_page_once=True)
    informer = Informer(cast(KubeApi, api), "pods", "default", LOG, max_backoff=0.01)
    informer.cache = {"default/gone": pod(-1)}  # known before; the failed list must not drop it yet
    kinds: list[tuple[str, str]] = []
    informer.subscribe(None, lambda kind, obj: kinds.append((kind, obj["metadata"]["name"])))
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        # page 1, page 2 (fails), then the whole list again from its first page
        assert [token for _, token in api.pages] == [None, str(LIST_PAGE), None, str(LIST_PAGE)]
        assert len(informer.cache) == LIST_PAGE + 3 and "default/gone" not in informer.cache
        assert kinds.count(("DELETED", "p-1")) == 1  # announced once, after the complete list
        assert len([k for k in kinds if k[0] == "ADDED"]) == LIST_PAGE + 3
    finally:
        await informer.close()


async def test_a_real_list_is_paged_and_the_watch_sees_what_came_after() -> None:
    async with FakeKubernetes() as k8s:
        for number in range(LIST_PAGE + 20):
            event = {
                "metadata": {"name": f"e{number}", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": f"p{number}", "namespace": "default"},
                "reason": "Scheduled",
                "message": "assigned",
            }
            k8s.api.create("events", "default", event, trusted=True)
        api_client = client.ApiClient(k8s.client_configuration())
        api = KubeApi(api_client, RetryPolicy(attempts=1), LOG)
        informer = Informer(api, "events", "default", LOG)
        informer.start()
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            assert api.counts[("list", "events")] == 2  # two pages, nothing else
            assert len(informer.cache) == LIST_PAGE + 20
            later = {
                "metadata": {"name": "late", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "p0", "namespace": "default"},
                "reason": "Pulled",
            }
            k8s.api.create("events", "default", later, trusted=True)
            await k8s.wait_for(lambda: "default/late" in informer.cache)
            assert api.counts[("list", "events")] == 2  # the watch brought it, no new list
        finally:
            await informer.close()
            await api.close()
            await api_client.close()


def tracked_pod(number: int) -> dict[str, Any]:
    """A pod the collector tracks (it holds a list), as real pods do."""
    return {**pod(number), "spec": {"containers": [{"name": "notebook"}]}}


def scanned(objects: list[dict[str, Any]]) -> int:
    """How many of ``objects`` a full collection would scan (not frozen)."""
    import gc

    seen = {id(o) for o in gc.get_objects()}  # the permanent (frozen) generation is not listed
    return sum(1 for o in objects if id(o) in seen)


async def test_a_hub_that_froze_its_heap_gets_the_listed_cache_frozen_too() -> None:
    import gc

    assert gc.get_freeze_count() == 0  # the test process has not frozen anything
    plain = PagedApi([tracked_pod(i) for i in range(50)])
    informer = Informer(cast(KubeApi, plain), "pods", "default", LOG)
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        # a hub that does not freeze: the cache stays in the collector's generations
        assert scanned(list(informer.cache.values())) == 50
    finally:
        await informer.close()
    gc.freeze()  # as configure(freeze_heap=True) does at hub start
    api = PagedApi([tracked_pod(i) for i in range(LIST_PAGE + 50)])
    informer = Informer(cast(KubeApi, api), "pods", "default", LOG)
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        assert len(informer.cache) == LIST_PAGE + 50
        assert scanned(list(informer.cache.values())) == 0  # every cached pod frozen
    finally:
        await informer.close()
        gc.unfreeze()


def test_the_event_cache_keeps_what_the_backend_reads_and_drops_the_rest() -> None:
    from einfra_spawner_kubernetes._cluster import _involved_key
    from einfra_spawner_kubernetes._explain import progress_from_event

    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": "p.1",
            "namespace": "default",
            "uid": "u1",
            "resourceVersion": "7",
            "creationTimestamp": "2026-12-02T01:00:00Z",
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:count": {}}}],
        },
        "involvedObject": {
            "kind": "Pod",
            "name": "p",
            "namespace": "default",
            "uid": "pod-uid",
            "fieldPath": "x",
        },
        "reason": "Pulling",
        "message": 'Pulling image "quay.io/jupyter/minimal-notebook"',
        "type": "Normal",
        "count": 1,
        "lastTimestamp": "2026-12-02T01:00:00Z",
        "source": {"component": "kubelet", "host": "node-1"},
        "reportingComponent": "kubelet",
    }
    slim = slim_event(event)
    assert "managedFields" not in slim["metadata"] and "source" not in slim
    assert "reportingComponent" not in slim and "apiVersion" not in slim
    assert slim["involvedObject"] == {"kind": "Pod", "name": "p", "namespace": "default", "uid": "pod-uid"}
    assert _involved_key(slim) == _involved_key(event)
    assert progress_from_event(slim) == progress_from_event(event)
