"""The backend scenarios the docs promise, on a real cluster (kind, or any kubeconfig): a server
starts, runs and stops; a home is kept, and reset only when asked; a start fails within seconds,
with the reason, for an image that cannot be pulled and when no GPU of the type is free; the GPU
figures agree with the nodes and follow the servers that run.

Run by ``scripts/kind-up``, or: ``EINFRA_TEST_KUBECONFIG=... EINFRA_TEST_NAMESPACE=einfra-test
python -m pytest tests/cluster`` (settings in conftest.py). The servers come from the kind
instance (tests/cluster/instance.py); the GPU scenarios need a node that advertises NVIDIA A40s
as kind-up's does, and are skipped where none does.

No test asserts a duration. A start that does not fail fast would wait for the pod forever (the
backend is given no deadline), so every start is bounded by ``START_BOUND`` seconds and a hang
fails the test instead of the suite.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from einfra_spawner import (
    BackendError,
    ProfileSet,
    ServerIdentity,
    SingleUser,
    UserContext,
    render_manifests,
    resolve_options,
)
from einfra_spawner.backend import GpuCapacity, Started, StartRequest
from einfra_spawner_kubernetes import KubernetesBackend

from .instance import GPU

#: Seconds a start may take before the test fails: an image pull on a slow line, not a wait for
#: a timer (the failures below come from events within seconds).
START_BOUND = 300.0


def start_request(
    profiles: ProfileSet,
    user: str,
    namespace: str,
    request: dict[str, object],
    state: dict[str, Any] | None = None,
    *,
    server: str = "",
) -> StartRequest:
    options = resolve_options(profiles, UserContext(name=user, groups=frozenset({"gpu"})), request)
    identity = ServerIdentity(user=user, server=server, namespace=namespace)
    # A plain web server stands in for jupyterhub-singleuser: no hub is needed to see it run.
    single_user = SingleUser(cmd=("python3", "-m", "http.server", "8888"))
    manifests = render_manifests(options, identity, single_user)
    return StartRequest(
        identity=identity, options=options, manifests=manifests, single_user=single_user, state=state or {}
    )


async def start(backend: KubernetesBackend, request: StartRequest) -> Started:
    return await asyncio.wait_for(backend.start(request), START_BOUND)


async def home_uid(core: Any, request: StartRequest) -> str:
    assert request.manifests.home is not None
    claim = await core.read_namespaced_persistent_volume_claim(
        request.manifests.home["metadata"]["name"], request.identity.namespace
    )
    return str(claim.metadata.uid)


async def a40(backend: KubernetesBackend, profiles: ProfileSet) -> GpuCapacity:
    return (await backend.gpu_capacity(profiles.instance.gpu_types))[GPU]


async def test_spawn_poll_stop(
    backend: KubernetesBackend, profiles: ProfileSet, namespace: str, run_id: str, core: Any
) -> None:
    request = start_request(profiles, run_id, namespace, {})
    started = await start(backend, request)
    pod_name = request.manifests.pod["metadata"]["name"]
    pod = await core.read_namespaced_pod(pod_name, namespace)
    assert started.endpoint.ip == pod.status.pod_ip
    assert started.endpoint.port == 8888
    assert await backend.poll(request.identity, started.state) is None
    await backend.stop(request.identity, started.state)
    assert await backend.poll(request.identity, started.state) == 0
    remaining = await core.list_namespaced_pod(namespace, field_selector=f"metadata.name={pod_name}")
    assert remaining.items == []


async def test_an_image_that_cannot_be_pulled_fails_the_start_with_the_reason(
    backend: KubernetesBackend, profiles: ProfileSet, namespace: str, run_id: str, core: Any
) -> None:
    request = start_request(profiles, run_id, namespace, {"image": "missing"})
    with pytest.raises(BackendError) as caught:
        await start(backend, request)
    assert "could not be downloaded" in str(caught.value)
    assert request.options.image in str(caught.value)
    # The failed start leaves no pod behind.
    pod_name = request.manifests.pod["metadata"]["name"]
    remaining = await core.list_namespaced_pod(namespace, field_selector=f"metadata.name={pod_name}")
    assert [p for p in remaining.items if not p.metadata.deletion_timestamp] == []


async def test_a_home_is_kept_and_reset_only_when_asked(
    backend: KubernetesBackend, profiles: ProfileSet, namespace: str, run_id: str, core: Any
) -> None:
    first = start_request(profiles, run_id, namespace, {})
    started = await start(backend, first)
    original = await home_uid(core, first)
    await backend.stop(first.identity, started.state)

    kept = start_request(profiles, run_id, namespace, {}, started.state)
    started = await start(backend, kept)
    assert await home_uid(core, kept) == original
    await backend.stop(kept.identity, started.state)

    reset = start_request(profiles, run_id, namespace, {"home": "reset"}, started.state)
    started = await start(backend, reset)
    assert await home_uid(core, reset) != original
    await backend.stop(reset.identity, started.state)


async def test_gpu_figures_match_the_nodes_and_follow_the_servers(
    backend: KubernetesBackend, profiles: ProfileSet, namespace: str, run_id: str, core: Any
) -> None:
    # The nodes, read directly: the allocatable amount of each type on schedulable nodes.
    nodes = (await core.list_node()).items
    figures = await backend.gpu_capacity(profiles.instance.gpu_types)
    for gpu_id, gpu_type in profiles.instance.gpu_types.items():
        expected = sum(
            int((node.status.allocatable or {}).get(gpu_type.resource, 0))
            for node in nodes
            if not node.spec.unschedulable
            and all((node.metadata.labels or {}).get(k) == v for k, v in gpu_type.node_selector.items())
        )
        assert figures[gpu_id].total == expected, gpu_id
    before = figures[GPU]
    if before.free == 0:
        pytest.skip("no NVIDIA A40 is free (scripts/kind-up advertises two on one node)")

    request = start_request(profiles, run_id, namespace, {"gpu": GPU, "gpu_count": 1})
    started = await start(backend, request)
    try:
        running = await a40(backend, profiles)
        assert (running.free, running.total) == (before.free - 1, before.total)
    finally:
        await backend.stop(request.identity, started.state)
    after = await a40(backend, profiles)
    assert (after.free, after.total) == (before.free, before.total)


async def test_no_free_gpu_fails_the_start_with_the_reason(
    backend: KubernetesBackend, profiles: ProfileSet, namespace: str, run_id: str, core: Any
) -> None:
    selector = profiles.instance.gpu_types[GPU].node_selector
    label_selector = ",".join(f"{key}={value}" for key, value in selector.items())
    a40_nodes = (await core.list_node(label_selector=label_selector)).items
    if len(a40_nodes) != 1:
        pytest.skip("this scenario fills the one node with A40s, as scripts/kind-up makes it")
    capacity = await a40(backend, profiles)
    if capacity.free == 0:
        pytest.skip("no NVIDIA A40 is free to fill")

    filling = start_request(profiles, run_id, namespace, {"gpu": GPU, "gpu_count": capacity.free})
    started = await start(backend, filling)
    try:
        # A second server of the same user (so that the cleanup finds its home volume too).
        one_more = start_request(profiles, run_id, namespace, {"gpu": GPU, "gpu_count": 1}, server="second")
        with pytest.raises(BackendError) as caught:
            await start(backend, one_more)
        message = str(caught.value)
        assert "free right now" in message
        assert f"(0 of {capacity.total})" in message
    finally:
        await backend.stop(filling.identity, started.state)
