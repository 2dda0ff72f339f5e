"""The backend scenarios on a real cluster (kind, or any kubeconfig): spawn, stop, failures, reset.

Run: ``EINFRA_TEST_KUBECONFIG=~/.kube/config scripts/test tests/cluster``. The image must be
pullable by the cluster (``EINFRA_TEST_IMAGE``, default a small Jupyter image); GPU scenarios need
nodes with the reference hub's GPU labels and extended resources (docs/testing-harness.md).
"""

from __future__ import annotations

import os

import pytest

from einfra_spawner import (
    BackendError,
    ServerIdentity,
    SingleUser,
    UserContext,
    render_manifests,
    resolve_options,
)
from einfra_spawner.backend import StartRequest
from einfra_spawner_kubernetes import KubernetesBackend

from ..unit.strategies import instance

IMAGE = os.environ.get("EINFRA_TEST_IMAGE", "quay.io/jupyter/minimal-notebook:2025-03-10")
HUB = instance("hub")


def start_request(
    user: str, namespace: str, request: dict[str, object], state: dict[str, object] | None = None
) -> StartRequest:
    options = resolve_options(HUB, UserContext(name=user, groups=frozenset({"gpu"})), request)
    identity = ServerIdentity(user=user, namespace=namespace)
    # A plain web server stands in for jupyterhub-singleuser: no hub is needed to see it run.
    single_user = SingleUser(cmd=("python3", "-m", "http.server", "8888"))
    manifests = render_manifests(options, identity, single_user)
    return StartRequest(
        identity=identity, options=options, manifests=manifests, single_user=single_user, state=state or {}
    )


async def test_spawn_poll_stop(backend: KubernetesBackend, namespace: str, run_id: str) -> None:
    request = start_request(run_id, namespace, {"image": "minimal"})
    started = await backend.start(request)
    assert started.endpoint.port == 8888
    assert await backend.poll(request.identity, started.state) is None
    await backend.stop(request.identity, started.state)
    assert await backend.poll(request.identity, started.state) == 0


async def test_bad_image_fails_with_a_reason(backend: KubernetesBackend, namespace: str, run_id: str) -> None:
    request = start_request(run_id, namespace, {"image": "cerit.io/einfra-test/does-not-exist:0"})
    with pytest.raises(BackendError) as caught:
        await backend.start(request)
    assert "could not be downloaded" in str(caught.value)


async def test_reset_home(backend: KubernetesBackend, namespace: str, run_id: str) -> None:
    first = await backend.start(start_request(run_id, namespace, {"image": "minimal"}))
    await backend.stop(ServerIdentity(user=run_id, namespace=namespace), first.state)
    again = await backend.start(
        start_request(run_id, namespace, {"image": "minimal", "home": "reset"}, first.state)
    )
    await backend.stop(ServerIdentity(user=run_id, namespace=namespace), again.state)
