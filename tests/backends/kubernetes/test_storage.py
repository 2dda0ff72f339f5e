"""Storage on the harness: per-server PersistentVolumes, homes kept after resets, deleted servers.

Each test runs the real kubernetes-asyncio client against the fake API server, which binds a
claim that names its PersistentVolume only to that volume (``einfra_spawner.testing._volumes``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

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
from einfra_spawner.reconcile import Reconciler
from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes import KubernetesBackend
from einfra_spawner_kubernetes._storage import expired_homes

from ...unit.strategies import instance

HUB = instance("hub")
DAY = 86400.0
META = UserContext(name="ada", groups=frozenset({"meta"}))


def start_request(
    request: dict[str, Any] | None = None,
    *,
    user: str = "ada",
    server: str = "lab",
    generation: int = 0,
    state: dict[str, Any] | None = None,
    keep_for: int | None = None,
) -> StartRequest:
    """A start of ``user``'s ``server`` on the reference hub, with its home of ``generation``
    (as the spawner keeps it); ``keep_for`` overrides the instance's ``homes.reset.keep_for``."""
    options = resolve_options(HUB, dataclasses.replace(META, name=user), request or {"mounts": []})
    if keep_for is not None and options.home is not None:
        options = dataclasses.replace(options, home=dataclasses.replace(options.home, keep_old_for=keep_for))
    identity = ServerIdentity(user=user, server=server, namespace="default", home_generation=generation)
    single_user = SingleUser(env=(("JUPYTERHUB_API_TOKEN", "t"), ("JUPYTERHUB_USER", user)))
    return StartRequest(
        identity=identity,
        options=options,
        manifests=render_manifests(options, identity, single_user),
        single_user=single_user,
        state=state or {},
    )


def add_secret(cluster: FakeKubernetes, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"key": "k"}}
    cluster.api.create("secrets", "default", body, trusted=True)


def claim(cluster: FakeKubernetes, name: str) -> dict[str, Any] | None:
    return cluster.get("persistentvolumeclaims", "default", name)


def pvs(cluster: FakeKubernetes) -> list[str]:
    return sorted(pv["metadata"]["name"] for pv in cluster.objects("persistentvolumes", ""))


# --- per-server PersistentVolumes ----------------------------------------------------------------


async def test_a_pv_mount_gets_its_volume_and_claim_bound_to_each_other(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    request = start_request({"mounts": ["metacentrum"]})
    (volume,) = request.manifests.user_volumes
    assert volume.secret is not None
    add_secret(cluster, volume.secret)
    started = await backend.start(request)
    name = volume.pv["metadata"]["name"]
    pv = cluster.get("persistentvolumes", "", name)
    pvc = claim(cluster, name)
    assert pv is not None and pvc is not None
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == name
    assert pv["status"]["phase"] == "Bound" and pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert pv["metadata"]["labels"]["einfra-spawner/server"] == request.manifests.names.server_label
    assert pv["spec"]["csi"]["volumeAttributes"]["privateKey"] == f"default/{volume.secret}"
    pod = cluster.get("pods", "default", request.manifests.pod["metadata"]["name"])
    assert pod is not None and pod["status"]["phase"] == "Running"
    await backend.stop(request.identity, started.state)
    # A later start finds both made (409) and checks they are ours and the same.
    again = await backend.start(start_request({"mounts": ["metacentrum"]}))
    assert pvs(cluster) == [name]
    assert claim(cluster, name)["metadata"]["uid"] == pvc["metadata"]["uid"]  # type: ignore[index]
    await backend.stop(request.identity, again.state)


async def test_a_pv_of_that_name_that_is_not_ours_is_refused_never_adopted(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    request = start_request({"mounts": ["metacentrum"]})
    (volume,) = request.manifests.user_volumes
    add_secret(cluster, str(volume.secret))
    foreign: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume.pv["metadata"]["name"], "labels": {"owner": "someone"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "csi": {"driver": "other", "volumeHandle": "theirs"},
        },
    }
    cluster.api.create("persistentvolumes", "", foreign, trusted=True)
    uid = cluster.get("persistentvolumes", "", foreign["metadata"]["name"])["metadata"]["uid"]  # type: ignore[index]
    with pytest.raises(BackendError, match="is not this server's"):
        await backend.start(request)
    kept = cluster.get("persistentvolumes", "", foreign["metadata"]["name"])
    assert (
        kept is not None
        and kept["metadata"]["uid"] == uid
        and kept["metadata"]["labels"] == {"owner": "someone"}
    )
    assert claim(cluster, volume.claim["metadata"]["name"]) is None
    assert cluster.objects("pods", "default") == []


async def test_a_pv_made_before_its_claim_failed_is_completed_by_the_next_start(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    first = await backend.start(start_request())  # the home exists from here on
    await backend.stop(start_request().identity, first.state)
    request = start_request({"mounts": ["metacentrum"]}, state=first.state)
    (volume,) = request.manifests.user_volumes
    add_secret(cluster, str(volume.secret))
    name = volume.pv["metadata"]["name"]
    cluster.inject_fault(403, verb="create", resource="persistentvolumeclaims", count=1)
    with pytest.raises(BackendError):
        await backend.start(request)
    # In the middle: the PV is there (labelled as this server's), its claim is not, no pod.
    assert pvs(cluster) == [name] and claim(cluster, name) is None
    assert cluster.objects("pods", "default") == []
    pv = cluster.get("persistentvolumes", "", name)
    assert (
        pv is not None
        and pv["metadata"]["labels"]["einfra-spawner/server"] == request.manifests.names.server_label
    )
    started = await backend.start(request)
    pvc = claim(cluster, name)
    assert pvc is not None and pvc["status"]["phase"] == "Bound"
    await backend.stop(request.identity, started.state)


async def test_deleting_a_server_removes_its_volumes_and_its_homes_as_configured(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    request = start_request({"mounts": ["metacentrum"]})
    (volume,) = request.manifests.user_volumes
    add_secret(cluster, str(volume.secret))
    started = await backend.start(request)
    await backend.stop(request.identity, started.state)
    other = await backend.start(start_request(server="other"))
    await backend.stop(start_request(server="other").identity, other.state)
    # A PV left by an interrupted start of a third server is that server's alone.
    home = request.manifests.names.home
    await backend.delete_storage(request.identity, "hub", homes=False)
    assert pvs(cluster) == [] and claim(cluster, volume.claim["metadata"]["name"]) is None
    assert claim(cluster, home) is not None  # homes.on_delete: keep
    # A server re-created with the same name gets its home back.
    assert await backend.current_home(request.identity, "hub") == 0
    await backend.delete_storage(request.identity, "hub", homes=True)
    assert claim(cluster, home) is None or claim(cluster, home)["metadata"].get("deletionTimestamp")  # type: ignore[index]
    other_home = start_request(server="other").manifests.names.home
    assert claim(cluster, other_home) is not None  # another server of the same user: untouched


# --- homes kept after a reset -------------------------------------------------------------------


async def test_a_reset_keeps_the_old_home_labelled_until_its_time_is_up(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    first = await backend.start(start_request())
    old = start_request().manifests.names.home
    old_uid = claim(cluster, old)["metadata"]["uid"]  # type: ignore[index]
    before = time.time()
    reset = await backend.start(start_request({"home": "reset", "mounts": []}, state=first.state))
    new = reset.state["home"]
    assert new != old and reset.state["home_generation"] == 1
    kept = claim(cluster, old)
    assert kept is not None and kept["metadata"]["uid"] == old_uid
    labels = kept["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "singleuser-old-home"
    assert labels["einfra-spawner/user"] == start_request().manifests.names.user_label
    assert labels["einfra-spawner/server"] == start_request().manifests.names.server_label
    assert set(labels) >= {"einfra-spawner/reset-at", "einfra-spawner/keep-until"}
    pod = cluster.get("pods", "default", reset.state["pod"])
    assert pod is not None
    (home_volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "home"]
    assert home_volume["persistentVolumeClaim"]["claimName"] == new
    assert await backend.current_home(start_request().identity, "hub") == 1
    # The reconciler removes it once its 7 days are up, and nothing else.
    log = logging.getLogger("test.reconcile")

    async def no_ledger() -> None:
        return None

    async def hub_view() -> list[Any]:
        return []

    def reconciler(at: float) -> Reconciler:
        return Reconciler(
            instance="hub",
            backend=backend,
            ledger=no_ledger,
            hub_view=hub_view,
            grace=3600.0,
            process_started=before,
            log=log,
            clock=lambda: at,
        )

    assert await reconciler(before + 6 * DAY).expire_homes() == []
    assert claim(cluster, old) is not None
    removed = await reconciler(before + 7 * DAY + 60).expire_homes()
    assert removed == [f"home default/{old} kept after a reset"]
    gone = claim(cluster, old)
    assert gone is None or gone["metadata"].get("deletionTimestamp")
    assert claim(cluster, new) is not None and not claim(cluster, new)["metadata"].get("deletionTimestamp")  # type: ignore[index]
    await backend.stop(start_request().identity, reset.state)


async def test_a_reset_with_keep_for_zero_deletes_the_old_home_at_once(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    first = await backend.start(start_request(keep_for=0))
    home = start_request().manifests.names.home
    uid = claim(cluster, home)["metadata"]["uid"]  # type: ignore[index]
    reset = await backend.start(start_request({"home": "reset", "mounts": []}, state=first.state, keep_for=0))
    assert reset.state["home"] == home and reset.state["home_generation"] == 0
    assert claim(cluster, home)["metadata"]["uid"] != uid  # type: ignore[index]
    assert [p["metadata"]["name"] for p in cluster.objects("persistentvolumeclaims", "default")].count(
        home
    ) == 1
    await backend.stop(start_request().identity, reset.state)


async def test_a_reset_that_fails_midway_leaves_the_old_home_in_place(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    first = await backend.start(start_request())
    old = start_request().manifests.names.home
    old_uid = claim(cluster, old)["metadata"]["uid"]  # type: ignore[index]
    # The old home is retired, then creating the new one fails: the start fails.
    cluster.inject_fault(403, verb="create", resource="persistentvolumeclaims", count=1)
    with pytest.raises(BackendError):
        await backend.start(start_request({"home": "reset", "mounts": []}, state=first.state))
    retired = claim(cluster, old)
    assert (
        retired is not None
        and retired["metadata"]["labels"]["app.kubernetes.io/component"] == "singleuser-old-home"
    )
    # The spawner keeps the generation it had (the reset did not finish): the next start gets
    # the old home back, current again, with its data.
    again = await backend.start(start_request())
    back = claim(cluster, old)
    assert back is not None and back["metadata"]["uid"] == old_uid
    assert back["metadata"]["labels"]["app.kubernetes.io/component"] == "singleuser-home"
    assert "einfra-spawner/keep-until" not in back["metadata"]["labels"]
    assert again.state["home"] == old
    await backend.stop(start_request().identity, again.state)


def test_only_this_instances_old_homes_whose_time_is_up_expire() -> None:
    def pvc(
        name: str, until: str, instance: str = "hub", component: str = "singleuser-old-home"
    ) -> dict[str, Any]:
        labels = {
            "app.kubernetes.io/managed-by": "einfra-spawner",
            "app.kubernetes.io/instance": instance,
            "app.kubernetes.io/component": component,
            "einfra-spawner/keep-until": until,
        }
        return {"metadata": {"name": name, "namespace": "ns", "labels": labels}}

    now = time.mktime(time.strptime("20261210T000000", "%Y%m%dT%H%M%S")) - time.timezone
    found = expired_homes(
        [
            pvc("due", "20261209T000000Z"),
            pvc("later", "20261211T000000Z"),
            pvc("other-hub", "20261201T000000Z", instance="course"),
            pvc("current", "20261201T000000Z", component="singleuser-home"),
            pvc("garbled", "soon"),
        ],
        "hub",
        now,
    )
    assert found == [("ns", "due")]


async def test_a_home_that_cannot_be_looked_up_fails_the_start_rather_than_guess(
    cluster: FakeKubernetes, backend_factory: Any
) -> None:
    backend = backend_factory(request_timeout=0.3)
    cluster.inject_fault(403, verb="list", resource="persistentvolumeclaims", count=1000)
    with pytest.raises(BackendError, match="Your home cannot be found right now"):
        await backend.current_home(start_request().identity, "hub")
    cluster.faults.clear()


async def test_a_pv_left_without_its_claim_goes_when_the_server_is_deleted(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    request = start_request({"mounts": ["metacentrum"]})
    (volume,) = request.manifests.user_volumes
    add_secret(cluster, str(volume.secret))
    first = await backend.start(start_request())
    await backend.stop(start_request().identity, first.state)
    cluster.inject_fault(403, verb="create", resource="persistentvolumeclaims", count=1)
    with pytest.raises(BackendError):
        await backend.start(start_request({"mounts": ["metacentrum"]}, state=first.state))
    assert pvs(cluster) == [volume.pv["metadata"]["name"]]
    # Another server's PV is not touched.
    other = start_request({"mounts": ["metacentrum"]}, server="keep")
    cluster.api.create("persistentvolumes", "", other.manifests.user_volumes[0].pv, trusted=True)
    await backend.delete_storage(request.identity, "hub", homes=False)
    assert pvs(cluster) == [other.manifests.user_volumes[0].pv["metadata"]["name"]]
