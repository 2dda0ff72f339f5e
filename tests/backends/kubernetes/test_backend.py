"""The Kubernetes backend against the harness, through the real kubernetes-asyncio client."""

from __future__ import annotations

import asyncio

import pytest

from einfra_spawner import BackendError
from einfra_spawner.backend import ProgressEvent
from einfra_spawner.testing import FakeKubernetes, Timings
from einfra_spawner_kubernetes import KubernetesBackend

from .conftest import BackendFactory, MakeRequest, existing


def pods(cluster: FakeKubernetes) -> list[str]:
    return sorted(p["metadata"]["name"] for p in cluster.objects("pods", "default"))


async def test_spawn_progress_poll_stop(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    request = make_request(request={"gpu": "a40", "cpu": "4"})
    seen: list[ProgressEvent] = []

    async def follow() -> None:
        await asyncio.sleep(0)
        async for event in backend.progress(request.identity, {}):
            seen.append(event)

    follower = asyncio.create_task(follow())
    started = await backend.start(request)
    await follower
    name = request.manifests.pod["metadata"]["name"]
    pod = cluster.get("pods", "default", name)
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert started.endpoint.ip == pod["status"]["podIP"] and started.endpoint.port == 8888
    assert pod["spec"]["nodeName"] == "gpu-a40-1"
    assert started.state["pod"] == name and started.state["home"] == request.manifests.names.home
    assert cluster.get("persistentvolumeclaims", "default", request.manifests.names.home) is not None
    messages = [e.message for e in seen]
    assert "Your server has a place on node gpu-a40-1" in messages
    assert any(m.startswith("Downloading the image") for m in messages)
    assert await backend.poll(request.identity, started.state) is None
    await backend.stop(request.identity, started.state)
    assert pods(cluster) == []
    assert await backend.poll(request.identity, started.state) == 0
    # The home outlives the server.
    assert cluster.get("persistentvolumeclaims", "default", request.manifests.names.home) is not None


async def test_the_start_path_reads_nothing(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    first = await backend.start(make_request(user="warm-up"))  # starts the shared watches
    reads_before = cluster.request_count("get") + cluster.request_count("list")
    watches_before = cluster.request_count("watch")
    creates_before = cluster.request_count("create")
    started = await backend.start(make_request(user="bob", server="two"))
    assert cluster.request_count("get") + cluster.request_count("list") == reads_before
    assert cluster.request_count("watch") == watches_before
    assert cluster.request_count("create") - creates_before == 2  # the home PVC and the pod
    assert await backend.poll(make_request(user="bob", server="two").identity, started.state) is None
    assert cluster.request_count("get") + cluster.request_count("list") == reads_before
    # A later start of the same server skips the PVC it already made.
    await backend.stop(make_request(user="bob", server="two").identity, started.state)
    creates_before = cluster.request_count("create")
    again = await backend.start(make_request(user="bob", server="two", state=started.state))
    assert cluster.request_count("create") - creates_before == 1
    for state, user, server in ((first.state, "warm-up", ""), (again.state, "bob", "two")):
        await backend.stop(make_request(user=user, server=server).identity, state)


async def test_restarted_hub_finds_stops_and_re_adopts(
    cluster: FakeKubernetes, backend_factory: BackendFactory, make_request: MakeRequest
) -> None:
    request = make_request(request={"gpu": "mig-1g.10gb"})
    started = await backend_factory().start(request)
    uid = started.state["uid"]
    # A new hub process: a new backend object that knows only the persisted state.
    restarted = backend_factory()
    assert await restarted.poll(request.identity, started.state) is None
    # Starting the very same spec again (a spawn retried after a crash) adopts the pod.
    adopted = await restarted.start(request)
    assert adopted.state["uid"] == uid
    assert pods(cluster) == [request.manifests.pod["metadata"]["name"]]
    await restarted.stop(request.identity, adopted.state)
    assert pods(cluster) == []


async def test_a_stale_pod_of_the_same_name_is_replaced(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    old = await backend.start(make_request(token="old-token"))
    new = await backend.start(make_request(token="new-token"))
    assert new.state["uid"] != old.state["uid"]
    (pod,) = cluster.objects("pods", "default")
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["JUPYTERHUB_API_TOKEN"] == "new-token"
    await backend.stop(make_request().identity, new.state)


async def test_no_free_gpu_fails_fast_and_cleans_up(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    holder = await backend.start(make_request(user="holder", request={"gpu": "a40", "gpu_count": 2}))
    late = make_request(user="late", request={"gpu": "a40"})
    creates, deletes = cluster.request_count("create", "pods"), cluster.request_count("delete", "pods")
    with pytest.raises(BackendError) as caught:
        await backend.start(late)
    # Ended by the scheduler's answer (its FailedScheduling event, read with the free count),
    # not by waiting: nothing else makes this sentence, and no grace period is configured.
    assert backend.unschedulable_grace == 0
    assert (
        str(caught.value) == "No NVIDIA A40 is free right now (0 of 2); choose another GPU type or try later."
    )
    late_pod = late.manifests.pod["metadata"]["name"]
    warnings = [e["reason"] for e in cluster.events_for(late_pod) if e["type"] == "Warning"]
    assert warnings == ["FailedScheduling"]
    # The pod it made is removed before the error reaches the user.
    assert cluster.request_count("create", "pods") - creates == 1
    assert cluster.request_count("delete", "pods") - deletes == 1
    assert pods(cluster) == [holder.state["pod"]]
    await backend.stop(make_request(user="holder").identity, holder.state)


async def test_a_gpu_type_the_cluster_lacks(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.start(make_request(request={"gpu": "h100"}))
    assert str(caught.value) == "This cluster has no NVIDIA H100 right now; choose another GPU type."
    assert pods(cluster) == []


async def test_bad_image_and_crash_fail_fast(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    # Each start ends on the first sign of its failure, which the message names; without it
    # the start would wait for a readiness that never comes.
    with pytest.raises(BackendError) as caught:
        await backend.start(make_request(request={"image": "cerit.io/no/such:1"}))
    unpullable = str(caught.value)
    assert unpullable.startswith("The image cerit.io/no/such:1 could not be downloaded: ")
    # The first failed pull (ErrImagePull), not the back-off the kubelet enters afterwards.
    assert "rpc error: code = NotFound" in unpullable
    assert "Back-off" not in unpullable and "BackOff" not in unpullable
    with pytest.raises(BackendError) as crashed:
        await backend.start(make_request(user="eve", request={"image": "cerit.io/crashes:1"}))
    assert str(crashed.value).startswith("Your server crashed as it started (exit code 1, Error). ")
    assert pods(cluster) == []


@pytest.mark.harness(timings=Timings(running_delay=0.3))
async def test_watch_dropped_and_expired_mid_spawn(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    await backend.start(make_request(user="warm-up"))
    spawn = asyncio.create_task(backend.start(make_request(user="ada", server="dropped")))
    await asyncio.sleep(0.1)
    assert cluster.drop_watches() >= 1
    started = await asyncio.wait_for(spawn, 5)
    assert started.state["uid"]
    spawn = asyncio.create_task(backend.start(make_request(user="ada", server="expired")))
    await asyncio.sleep(0.1)
    relists = cluster.request_count("list", "pods")
    cluster.compact()
    cluster.drop_watches()
    started = await asyncio.wait_for(spawn, 5)
    assert started.state["uid"]
    assert cluster.request_count("list", "pods") == relists + 1  # relisted once, on 410 only


async def test_5xx_and_429_bursts_are_retried(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    cluster.inject_fault(503, verb="create", resource="pods", count=2)
    cluster.inject_fault(429, verb="create", resource="persistentvolumeclaims", count=2)
    started = await backend.start(make_request())
    assert started.state["uid"]
    assert len(cluster.objects("pods", "default")) == 1
    cluster.inject_fault(500, verb="delete", resource="pods", count=3)
    await backend.stop(make_request().identity, started.state)
    assert pods(cluster) == []


async def test_errors_that_retrying_cannot_fix_are_reported(
    cluster: FakeKubernetes, backend_factory: BackendFactory, make_request: MakeRequest
) -> None:
    backend = backend_factory(request_attempts=2)
    await backend.start(make_request(user="warm-up"))
    cluster.inject_fault(503, verb="create", resource="pods", count=5)
    with pytest.raises(BackendError) as caught:
        await backend.start(make_request())
    assert "The cluster refused to start your server" in str(caught.value)
    assert [p for p in pods(cluster) if "ada" in p] == []


async def test_reset_home_only_when_asked_and_only_ours(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    mine = await backend.start(make_request())
    other = await backend.start(make_request(user="bob"))
    home = make_request().manifests.names.home
    first_uid = existing(cluster, "persistentvolumeclaims", "default", home)["metadata"]["uid"]
    bob_uid = existing(cluster, "persistentvolumeclaims", "default", other.state["home"])["metadata"]["uid"]
    # Not asked: the same home.
    again = await backend.start(make_request(state=mine.state))
    assert existing(cluster, "persistentvolumeclaims", "default", home)["metadata"]["uid"] == first_uid
    # Asked (the server is still running): the old pod goes first, then a fresh home. The
    # reference hub keeps the old one for 7 days (tests/backends/kubernetes/test_storage.py).
    reset = await backend.start(make_request(request={"home": "reset"}, state=again.state))
    assert reset.state["home"] != home and reset.state["home_generation"] == 1
    kept = existing(cluster, "persistentvolumeclaims", "default", home)
    assert kept["metadata"]["uid"] == first_uid
    assert kept["metadata"]["labels"]["app.kubernetes.io/component"] == "singleuser-old-home"
    bob_home = existing(cluster, "persistentvolumeclaims", "default", other.state["home"])
    assert bob_home["metadata"]["uid"] == bob_uid
    assert reset.state["uid"] != again.state["uid"]
    await backend.stop(make_request().identity, reset.state)
    await backend.stop(make_request(user="bob").identity, other.state)


async def test_reset_refuses_a_volume_that_is_not_this_servers(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    home = make_request().manifests.names.home
    cluster.api.create(
        "persistentvolumeclaims",
        "default",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": home, "labels": {"einfra-spawner/user": "u-someone-else-aaaaaaaaaa"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        trusted=True,
    )
    uid = existing(cluster, "persistentvolumeclaims", "default", home)["metadata"]["uid"]
    with pytest.raises(BackendError) as caught:
        await backend.start(make_request(request={"home": "reset"}))
    assert "is not labelled as this server's home. Nothing was changed" in str(caught.value)
    assert existing(cluster, "persistentvolumeclaims", "default", home)["metadata"]["uid"] == uid
    assert existing(cluster, "persistentvolumeclaims", "default", home)["metadata"]["labels"] == {
        "einfra-spawner/user": "u-someone-else-aaaaaaaaaa"
    }


async def test_gpu_capacity_for_the_form(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    from ...unit.strategies import instance

    gpu_types = instance("hub").instance.gpu_types
    figures = await backend.gpu_capacity(gpu_types)
    assert (figures["a40"].free, figures["a40"].total) == (2, 2)
    assert (figures["mig-1g.10gb"].free, figures["mig-1g.10gb"].total) == (7, 7)
    assert figures["h100"].total == 0
    started = await backend.start(make_request(request={"gpu": "a40", "gpu_count": 2}))
    await asyncio.sleep(backend.capacity_cache_seconds + 0.01) if backend.capacity_cache_seconds < 1 else None
    backend._capacity.cached = None  # the figures are cached for a few seconds; this test wants fresh ones
    figures = await backend.gpu_capacity(gpu_types)
    assert (figures["a40"].free, figures["a40"].total) == (0, 2)
    await backend.stop(make_request().identity, started.state)


async def test_stop_of_a_server_that_is_gone(backend: KubernetesBackend, make_request: MakeRequest) -> None:
    state = {"namespace": "default", "pod": make_request().manifests.pod["metadata"]["name"]}
    await backend.stop(make_request().identity, state)
    assert await backend.poll(make_request().identity, state) == 0
    assert await backend.poll(make_request().identity, {}) == 0


async def test_missing_storage_credentials_fail_fast(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.start(make_request(request={"mounts": ["metacentrum"]}))
    # The mount's own sentence (also in the form), before any volume or pod is made.
    assert "Register your MetaCentrum SSH key" in str(caught.value)
    assert pods(cluster) == []
    assert cluster.objects("persistentvolumes", "") == []
