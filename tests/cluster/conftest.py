"""The real-cluster suite: runs only when ``EINFRA_TEST_KUBECONFIG`` names a kubeconfig.

It is never run in CI (no cluster can run there). See docs/testing-harness.md for creating a
kind cluster with fake GPU nodes (node labels and extended resources) to run it against.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from traitlets.config import Config

from einfra_spawner_kubernetes import KubernetesBackend

KUBECONFIG = os.environ.get("EINFRA_TEST_KUBECONFIG")

pytestmark = pytest.mark.skipif(not KUBECONFIG, reason="EINFRA_TEST_KUBECONFIG names no cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not KUBECONFIG:
        skip = pytest.mark.skip(reason="set EINFRA_TEST_KUBECONFIG to a real cluster's kubeconfig to run")
        for item in items:
            if "tests/cluster" in str(item.fspath):
                item.add_marker(skip)


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
    made = KubernetesBackend(config=config, log=logging.getLogger("test.cluster"))
    yield made
    await made.close()


@pytest.fixture
def run_id() -> str:
    """A unique user name per test, so runs never collide on a shared cluster."""
    return f"einfra-test-{uuid.uuid4().hex[:8]}"
