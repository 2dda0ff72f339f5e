"""The real-cluster suite: runs only when ``EINFRA_TEST_KUBECONFIG`` names a kubeconfig.

It is never run in CI (no cluster can run there). ``scripts/kind-up`` makes a kind cluster with
fake GPU nodes and runs it; ``docs/deploy/kind.md`` says how to run it against another cluster.

Settings (environment): ``EINFRA_TEST_KUBECONFIG`` (required), ``EINFRA_TEST_NAMESPACE`` (where
the tests' pods and volumes go; default ``default``), ``EINFRA_TEST_IMAGE`` (an image the
cluster can pull, with ``python3``; default the kind instance's), and
``EINFRA_TEST_UNSCHEDULABLE_GRACE`` (seconds before a pod that fits nowhere fails; default 5).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from traitlets.config import Config

from einfra_spawner import ProfileSet, server_names
from einfra_spawner.render import LABEL_USER
from einfra_spawner_kubernetes import KubernetesBackend

from .instance import DEFAULT_IMAGE, kind_instance

KUBECONFIG = os.environ.get("EINFRA_TEST_KUBECONFIG")
IMAGE = os.environ.get("EINFRA_TEST_IMAGE") or DEFAULT_IMAGE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not KUBECONFIG:
        skip = pytest.mark.skip(reason="set EINFRA_TEST_KUBECONFIG to a real cluster's kubeconfig to run")
        here = os.path.dirname(__file__)
        for item in items:
            if str(item.path).startswith(here + os.sep):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def profiles() -> ProfileSet:
    return kind_instance(IMAGE)


@pytest.fixture
def namespace() -> str:
    return os.environ.get("EINFRA_TEST_NAMESPACE", "default")


@pytest_asyncio.fixture
async def backend(namespace: str) -> AsyncIterator[KubernetesBackend]:
    config = Config()
    config.KubernetesBackend.kubeconfig = KUBECONFIG
    config.KubernetesBackend.namespace = namespace
    config.KubernetesBackend.unschedulable_grace = float(
        os.environ.get("EINFRA_TEST_UNSCHEDULABLE_GRACE", "5")
    )
    config.KubernetesBackend.capacity_cache_seconds = 0.0  # every figure read fresh from the watch
    made = KubernetesBackend(config=config, log=logging.getLogger("test.cluster"))
    yield made
    await made.close()


@pytest_asyncio.fixture
async def core(run_id: str, namespace: str) -> AsyncIterator[Any]:
    """The cluster's core/v1 API, read independently of the backend; at the end it deletes the
    home volumes of this test's user (pods are stopped by the tests themselves)."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=KUBECONFIG, client_configuration=configuration)
    async with client.ApiClient(configuration) as api_client:
        api = client.CoreV1Api(api_client)
        yield api
        await api.delete_collection_namespaced_persistent_volume_claim(
            namespace, label_selector=f"{LABEL_USER}={server_names(run_id, '').user_label}"
        )


@pytest.fixture
def run_id() -> str:
    """A unique user name per test, so runs never collide on a shared cluster."""
    return f"einfra-test-{uuid.uuid4().hex[:8]}"
