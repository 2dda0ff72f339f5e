"""The fake volume controller's static binding: a claim that names its PersistentVolume binds to
that volume only, once it exists and names the claim back; the volume is Released when the
claim goes. Observed through the real kubernetes-asyncio client."""

from __future__ import annotations

from typing import Any

from einfra_spawner.testing import FakeKubernetes

from .core_v1 import CoreV1
from .manifests import pvc_body


def volume(name: str, claim: str | None = "data", namespace: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capacity": {"storage": "5Gi"},
        "accessModes": ["ReadWriteMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "csi": {"driver": "csi-sshfs", "volumeHandle": name},
    }
    if claim is not None:
        spec["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": namespace, "name": claim}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec}


def static_claim(name: str, pv: str) -> dict[str, Any]:
    body = pvc_body(name, "5Gi")
    body["spec"].update(volumeName=pv, storageClassName="", accessModes=["ReadWriteMany"])
    return body


def phase(fake: FakeKubernetes, resource: str, namespace: str, name: str) -> str | None:
    return ((fake.get(resource, namespace, name) or {}).get("status") or {}).get("phase")


async def test_a_claim_waits_for_its_volume_then_binds_to_it_alone(
    fake_k8s: FakeKubernetes, v1: CoreV1
) -> None:
    await v1.create_namespaced_persistent_volume_claim("default", static_claim("data", "pv-data"))
    await v1.create_namespaced_persistent_volume_claim("default", pvc_body("dynamic", "1Gi"))
    await fake_k8s.wait_for(
        lambda: phase(fake_k8s, "persistentvolumeclaims", "default", "dynamic") == "Bound"
    )
    assert phase(fake_k8s, "persistentvolumeclaims", "default", "data") == "Pending"  # no volume yet
    await v1.create_persistent_volume(volume("pv-data"))
    await fake_k8s.wait_for(lambda: phase(fake_k8s, "persistentvolumeclaims", "default", "data") == "Bound")
    pv = fake_k8s.get("persistentvolumes", "", "pv-data")
    claim = fake_k8s.get("persistentvolumeclaims", "default", "data")
    assert pv is not None and claim is not None
    assert pv["status"]["phase"] == "Bound"
    assert pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert claim["status"]["capacity"] == {"storage": "5Gi"}
    # Deleting the claim releases the volume (Retain: it stays, and no new claim takes it).
    await v1.delete_namespaced_persistent_volume_claim("data", "default")
    await fake_k8s.wait_for(lambda: phase(fake_k8s, "persistentvolumes", "", "pv-data") == "Released")


async def test_a_volume_reserved_for_another_claim_is_not_taken(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_persistent_volume(volume("pv-other", claim="other"))
    await v1.create_namespaced_persistent_volume_claim("default", static_claim("thief", "pv-other"))
    await v1.create_namespaced_persistent_volume_claim("default", pvc_body("marker", "1Gi"))
    # Once a later claim has bound, the first would have too: it did not.
    await fake_k8s.wait_for(lambda: phase(fake_k8s, "persistentvolumeclaims", "default", "marker") == "Bound")
    assert phase(fake_k8s, "persistentvolumeclaims", "default", "thief") == "Pending"
    assert phase(fake_k8s, "persistentvolumes", "", "pv-other") == "Available"
