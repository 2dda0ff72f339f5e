"""Fixtures for the Kubernetes backend against the test harness (a fake API server on loopback).

When ``EINFRA_TEST_KUBECONFIG`` names a real cluster, ``tests/cluster/`` runs the same scenarios
there; these tests always use the harness.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from traitlets.config import Config

from einfra_spawner import ServerIdentity, SingleUser, UserContext, render_manifests, resolve_options
from einfra_spawner.backend import StartRequest
from einfra_spawner.testing import FakeKubernetes, FakeNode
from einfra_spawner_kubernetes import KubernetesBackend

from ...unit.strategies import instance

HUB = instance("hub")
A40 = {"nvidia.com/gpu.product": "NVIDIA-A40"}


def nodes(a40: int = 2) -> list[FakeNode]:
    return [
        FakeNode("cpu-1", cpu="64", memory="512Gi"),
        FakeNode("gpu-a40-1", cpu="64", memory="512Gi", gpus={"nvidia.com/gpu": a40}, labels=A40),
        FakeNode("gpu-mig-1", cpu="64", memory="512Gi", gpus={"nvidia.com/mig-1g.10gb": 7}),
    ]


MakeRequest = Callable[..., StartRequest]


def existing(k8s: FakeKubernetes, resource: str, namespace: str, name: str) -> dict[str, Any]:
    """The object the test expects the harness to hold (a failed assert names it otherwise)."""
    found = k8s.get(resource, namespace, name)
    assert found is not None, f"no {resource} {namespace}/{name}"
    return found


@pytest.fixture
def make_request() -> MakeRequest:
    """A StartRequest for ``user``'s ``server`` asking for ``request`` on the reference hub."""

    def make(
        user: str = "ada",
        server: str = "",
        request: dict[str, Any] | None = None,
        groups: frozenset[str] = frozenset({"gpu", "meta", "projects"}),
        state: dict[str, Any] | None = None,
        token: str = "t0ken",
        namespace: str = "default",
    ) -> StartRequest:
        options = resolve_options(HUB, UserContext(name=user, groups=groups), request or {})
        identity = ServerIdentity(user=user, server=server, namespace=namespace)
        single_user = SingleUser(env=(("JUPYTERHUB_API_TOKEN", token), ("JUPYTERHUB_USER", user)))
        manifests = render_manifests(options, identity, single_user)
        return StartRequest(
            identity=identity,
            options=options,
            manifests=manifests,
            single_user=single_user,
            state=state or {},
        )

    return make


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "harness(**kwargs): extra FakeKubernetes arguments for a test")


async def create_site_claims(k8s: FakeKubernetes) -> None:
    """The claims the reference hub expects a site to have made: the shared project directory
    (for the group "projects") and the shared scratch (every user's default mount). A coroutine:
    the harness tells its watchers on the running loop."""
    for claim in ("projects", "jupyterhub-scratch"):
        k8s.api.create(
            "persistentvolumeclaims",
            "default",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}},
            },
            trusted=True,
        )


@pytest_asyncio.fixture
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[FakeKubernetes]:
    marker = request.node.get_closest_marker("harness")
    extra = dict(marker.kwargs) if marker else {}
    async with FakeKubernetes(
        nodes=nodes(),
        image_pull_failures=["cerit.io/no/such:1"],
        crashing_images=["cerit.io/crashes:1"],
        **extra,
    ) as k8s:
        await create_site_claims(k8s)
        yield k8s


BackendFactory = Callable[..., KubernetesBackend]


@pytest_asyncio.fixture
async def backend_factory(cluster: FakeKubernetes) -> AsyncIterator[BackendFactory]:
    """Builds backends (one per simulated hub process) pointed at the harness; closes them all."""
    made: list[KubernetesBackend] = []

    def make(**settings: Any) -> KubernetesBackend:
        config = Config()
        config.KubernetesBackend.api_url = cluster.url
        config.KubernetesBackend.namespace = "default"
        config.KubernetesBackend.delete_grace_seconds = 1
        config.KubernetesBackend.stop_timeout = 10.0
        for key, value in settings.items():
            setattr(config.KubernetesBackend, key, value)
        backend = KubernetesBackend(config=config, log=logging.getLogger("test.kubernetes"))
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest_asyncio.fixture
async def backend(backend_factory: BackendFactory) -> KubernetesBackend:
    return backend_factory()
