"""Pytest fixtures for the test harness (the fake Kubernetes API server; not a cluster).

* ``fake_k8s``: a started :class:`FakeKubernetes` with the default nodes (CPU nodes, NVIDIA
  A40/A100/H100 nodes and a node with MIG slices). Options can be given per test with
  ``@pytest.mark.fake_k8s(process_mode=True, crashing_images=["..."])``.
* ``fake_k8s_factory``: ``await fake_k8s_factory(nodes=[...], **options)`` for more servers
  or custom options; every server it made is closed after the test.
* ``k8s_api_client``: a kubernetes_asyncio ``ApiClient`` for ``fake_k8s``, closed after the
  test.
* ``k8s_target``: a :class:`KubeTarget` for tests that can also run against a real cluster:
  the cluster of the kubeconfig named by ``EINFRA_TEST_KUBECONFIG`` (namespace from
  ``EINFRA_TEST_NAMESPACE``, default "default") when set, otherwise a fake server.

The fixtures are async and need pytest-asyncio. The plugin is opt-in (einfra-spawner registers
no ``pytest11`` entry point, so installing it adds no fixtures to other test suites): load it with
``pytest -p einfra_spawner.testing.pytest_plugin``, or with
``pytest_plugins = ["einfra_spawner.testing.pytest_plugin"]`` in the top-level conftest.py of a
test suite.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

from ._harness import FakeKubernetes

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes_asyncio.client import ApiClient, Configuration

__all__ = [
    "KubeTarget",
    "fake_k8s",
    "fake_k8s_factory",
    "k8s_api_client",
    "k8s_target",
    "pytest_configure",
]

FakeKubernetesFactory = Callable[..., Awaitable[FakeKubernetes]]
KUBECONFIG_VARIABLE = "EINFRA_TEST_KUBECONFIG"
NAMESPACE_VARIABLE = "EINFRA_TEST_NAMESPACE"

_Function = TypeVar("_Function", bound=Callable[..., Any])
_fixture: Callable[..., Any]
if find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    _fixture = pytest_asyncio.fixture
else:  # pragma: no cover - pytest then reports that async fixtures need a plugin
    _fixture = pytest.fixture


def async_fixture(function: _Function) -> _Function:
    """pytest-asyncio's fixture decorator, keeping the function's type for mypy."""
    return cast(_Function, _fixture(function))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fake_k8s(**options): options for the fake_k8s fixture (FakeKubernetes keyword arguments)"
    )


@dataclass(frozen=True, slots=True)
class KubeTarget:
    """Where a test's Kubernetes calls go: a real cluster (``fake`` is None) or the harness."""

    configuration: Configuration
    namespace: str
    fake: FakeKubernetes | None

    @property
    def is_fake(self) -> bool:
        return self.fake is not None


@async_fixture
async def fake_k8s_factory() -> AsyncIterator[FakeKubernetesFactory]:
    started: list[FakeKubernetes] = []

    async def make(**options: Any) -> FakeKubernetes:
        harness = FakeKubernetes(**options)
        await harness.start()
        started.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in reversed(started):
            await harness.close()


@async_fixture
async def fake_k8s(request: pytest.FixtureRequest, fake_k8s_factory: FakeKubernetesFactory) -> FakeKubernetes:
    marker = request.node.get_closest_marker("fake_k8s")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    return await fake_k8s_factory(**options)


@async_fixture
async def k8s_api_client(fake_k8s: FakeKubernetes) -> AsyncIterator[ApiClient]:
    client = fake_k8s.api_client()
    try:
        yield client
    finally:
        await client.close()


@async_fixture
async def k8s_target(fake_k8s_factory: FakeKubernetesFactory) -> AsyncIterator[KubeTarget]:
    kubeconfig = os.environ.get(KUBECONFIG_VARIABLE)
    if not kubeconfig:
        harness = await fake_k8s_factory()
        yield KubeTarget(harness.client_configuration(), "default", harness)
        return
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import Configuration

    configuration = Configuration()
    await config.load_kube_config(
        config_file=kubeconfig, client_configuration=configuration, persist_config=False
    )
    yield KubeTarget(configuration, os.environ.get(NAMESPACE_VARIABLE, "default"), None)
