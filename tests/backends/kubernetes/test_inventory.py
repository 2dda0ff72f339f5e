"""The Kubernetes backend's view for the reconciler: its inventory comes from the pod watch cache
and holds only this instance's pods; ``remove`` deletes an orphan and nothing else."""

from __future__ import annotations

import asyncio
import copy

from einfra_spawner import ServerNames
from einfra_spawner.testing import FakeKubernetes
from einfra_spawner.testing._status import ApiError as HarnessError
from einfra_spawner_kubernetes import KubernetesBackend

from ..inventories import inventory_of
from .conftest import BackendFactory, MakeRequest


def pod_exists(cluster: FakeKubernetes, name: str) -> bool:
    try:
        cluster.api.get("pods", "default", name)
    except HarnessError as error:
        assert error.code == 404
        return False
    return True


async def test_a_start_a_dead_hub_left_running_is_in_the_next_hubs_inventory(
    cluster: FakeKubernetes, backend_factory: BackendFactory, make_request: MakeRequest
) -> None:
    # The first hub process starts a server and is killed before it records it anywhere: all
    # that is left is the pod, with our labels.
    request = make_request("ada", "gpu", {"gpu": "a40", "gpu_count": 2})
    await backend_factory().start(request)
    restarted = backend_factory()
    (found,) = await inventory_of(restarted, "hub")
    names = ServerNames("ada", "gpu")
    assert (found.server_label, found.user_label) == (names.server_label, names.user_label)
    assert (found.user, found.server, found.running) == ("ada", "gpu", True)
    assert found.ref["pod"] == request.manifests.pod["metadata"]["name"]
    await restarted.remove(found)
    assert await restarted.inventory("hub") == []
    assert not pod_exists(cluster, found.ref["pod"])


async def test_pods_of_other_instances_and_foreign_pods_are_never_reported(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    mine = make_request("ada").manifests.pod
    other_instance = copy.deepcopy(make_request("ben").manifests.pod)
    other_instance["metadata"]["labels"]["app.kubernetes.io/instance"] = "course"
    foreign = copy.deepcopy(make_request("cleo").manifests.pod)
    foreign["metadata"]["labels"] = {"app": "something-else"}
    for pod in (mine, other_instance, foreign):
        cluster.api.create("pods", "default", pod, trusted=True)
    assert [r.user for r in await inventory_of(backend, "hub")] == ["ada"]
    assert [r.user for r in await inventory_of(backend, "course")] == ["ben"]


async def test_remove_leaves_a_new_pod_of_the_same_server_alone(
    cluster: FakeKubernetes, backend: KubernetesBackend, make_request: MakeRequest
) -> None:
    request = make_request("ada")
    await backend.start(request)
    (orphan,) = await inventory_of(backend, "hub")
    await backend.stop(request.identity, {"pod": orphan.ref["pod"], "namespace": "default"})
    await backend.start(request)  # the user started the server again meanwhile
    await backend.remove(orphan)  # the orphan seen before: gone already, and not this one
    (current,) = await inventory_of(backend, "hub")
    assert current.ref["uid"] != orphan.ref["uid"]
    assert pod_exists(cluster, current.ref["pod"])


async def test_no_inventory_before_the_pod_watch_can_sync(backend_factory: BackendFactory) -> None:
    unreachable = backend_factory(api_url="http://127.0.0.1:9", request_timeout=0.2)
    assert await unreachable.inventory("hub") is None
    await asyncio.sleep(0)
