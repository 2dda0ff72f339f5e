"""Bookmarks move the shared watch on, through the backend's own API layer.

The backend reads a watch as the raw stream (``_api.KubeApi.watch``), not through
kubernetes_asyncio's ``Watch`` class, whose bookmark handling fails before kubernetes-asyncio 33
(``tests/harness/test_watch.py``). These tests prove the backend's path on whichever
kubernetes-asyncio is installed: 32.3 in the floors environment, the newest otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kubernetes_asyncio import client

from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes._api import KubeApi
from einfra_spawner_kubernetes._informer import Informer
from einfra_spawner_kubernetes._retry import RetryPolicy

LOG = logging.getLogger("test_informer_bookmarks")


def secret(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}}


@pytest.mark.harness(bookmark_interval=0.1)
async def test_a_quiet_watch_resumes_from_its_last_bookmark(cluster: FakeKubernetes) -> None:
    api_client = client.ApiClient(client.Configuration(host=cluster.url))
    api = KubeApi(api_client, RetryPolicy(timeout=5.0), LOG)
    informer = Informer(api, "pods", "default", LOG, watch_timeout=30)
    informer.start()
    try:
        await cluster.wait_for(lambda: informer.resource_version != "")
        listed = informer.resource_version
        cached = dict(informer.cache)
        # Changes the pod watch never sees (secrets), in the one resourceVersion sequence: with no
        # pod event at all, only a bookmark can bring the pod watch to the current version.
        for index in range(3):
            cluster.api.create("secrets", "default", secret(f"s{index}"), trusted=True)
        current = str(cluster.store.resource_version)
        assert int(current) > int(listed)
        await cluster.wait_for(lambda: informer.resource_version == current)
        assert informer.cache == cached  # a bookmark carries no object
        assert api.counts[("watch", "pods")] >= 1
    finally:
        await informer.close()
        await api.close()
        await api_client.close()
