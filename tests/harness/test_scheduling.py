"""The simulated scheduler, kubelet and volume controllers, observed through the API."""

from __future__ import annotations

from typing import Any

import pytest

from einfra_spawner.testing import FakeKubernetes, FakeNode

from .core_v1 import CoreV1
from .manifests import gpu_pod, pod_body, pvc_body, secret_body

A40 = {"nvidia.com/gpu.product": "NVIDIA-A40"}


def reasons(fake: FakeKubernetes, name: str) -> list[str]:
    return [event["reason"] for event in fake.events_for(name)]


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in pod["status"]["conditions"] if c["type"] == kind)


def waiting_reason(fake: FakeKubernetes, name: str) -> str | None:
    pod = fake.get("pods", "default", name) or {}
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    reason: str | None = statuses[0].get("state", {}).get("waiting", {}).get("reason")
    return reason


async def test_gpu_pods_land_on_nodes_with_that_gpu(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespaced_pod("default", gpu_pod("a100", "NVIDIA-A100-80GB-PCIe"))
    await v1.create_namespaced_pod("default", gpu_pod("h100", "NVIDIA-H100-PCIe", 2))
    await v1.create_namespaced_pod("default", gpu_pod("mig", "", 1, "nvidia.com/mig-1g.10gb"))
    await v1.create_namespaced_pod("default", pod_body("cpu", resources={"requests": {"cpu": "1"}}))
    placed = {}
    for name in ("a100", "h100", "mig", "cpu"):
        pod = await fake_k8s.wait_for_pod_phase("default", name, "Running")
        placed[name] = pod["spec"]["nodeName"]
        assert condition(pod, "Ready")["status"] == "True"
    assert placed["a100"] == "gpu-a100-1" and placed["h100"] == "gpu-h100-1"
    assert placed["mig"] == "gpu-mig-1"
    scheduled = fake_k8s.events_for("a100")[0]
    assert scheduled["reason"] == "Scheduled"
    assert scheduled["message"] == "Successfully assigned default/a100 to gpu-a100-1"
    assert scheduled["source"] == {"component": "default-scheduler"}


async def test_unschedulable_until_a_gpu_frees_up(fake_k8s_factory: Any) -> None:
    fake: FakeKubernetes = await fake_k8s_factory(
        nodes=[
            FakeNode("cpu-1"),
            FakeNode("cpu-2"),
            FakeNode("gpu-a40-1", gpus={"nvidia.com/gpu": 1}, labels=A40),
        ]
    )
    async with fake.api_client() as api:
        v1 = CoreV1(api)
        await v1.create_namespaced_pod("default", gpu_pod("first", "NVIDIA-A40"))
        await fake.wait_for_pod_phase("default", "first", "Running")
        await v1.create_namespaced_pod("default", gpu_pod("second", "NVIDIA-A40"))
        await fake.wait_for(lambda: "FailedScheduling" in reasons(fake, "second"))
        message = (
            "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't "
            "match Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 "
            "No preemption victims found for incoming pod, 2 Preemption is not helpful "
            "for scheduling."
        )
        event = fake.events_for("second")[-1]
        assert (event["type"], event["message"]) == ("Warning", message)
        pending = fake.get("pods", "default", "second")
        assert pending is not None and pending["status"]["phase"] == "Pending"
        scheduled = condition(pending, "PodScheduled")
        assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
        await v1.delete_namespaced_pod("first", "default")
        pod = await fake.wait_for_pod_phase("default", "second", "Running", timeout=3)
        assert pod["spec"]["nodeName"] == "gpu-a40-1"
        assert condition(pod, "PodScheduled")["status"] == "True"


async def test_taints_need_tolerations(fake_k8s_factory: Any) -> None:
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    fake: FakeKubernetes = await fake_k8s_factory(
        nodes=[FakeNode("gpu-1", gpus={"nvidia.com/gpu": 1}, labels=A40, taints=[taint])]
    )
    async with fake.api_client() as api:
        v1 = CoreV1(api)
        await v1.create_namespaced_pod("default", gpu_pod("intolerant", "NVIDIA-A40"))
        await fake.wait_for(lambda: "FailedScheduling" in reasons(fake, "intolerant"))
        assert fake.events_for("intolerant")[-1]["message"].startswith(
            "0/1 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}."
        )
        tolerant = gpu_pod(
            "tolerant",
            "NVIDIA-A40",
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        )
        await v1.create_namespaced_pod("default", tolerant)
        await fake.wait_for_pod_phase("default", "tolerant", "Running")


@pytest.mark.fake_k8s(image_pull_failures=["cerit.io/no/such:1"])
async def test_image_pull_failure(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespaced_pod("default", pod_body("bad", image="cerit.io/no/such:1"))
    await fake_k8s.wait_for(lambda: waiting_reason(fake_k8s, "bad") == "ErrImagePull")
    await fake_k8s.wait_for(lambda: waiting_reason(fake_k8s, "bad") == "ImagePullBackOff")
    events = fake_k8s.events_for("bad")
    failed = next(e for e in events if e["reason"] == "Failed")
    assert failed["type"] == "Warning"
    assert failed["message"].startswith('Failed to pull image "cerit.io/no/such:1": ')
    assert failed["message"].endswith("cerit.io/no/such:1: not found")
    assert failed["involvedObject"]["fieldPath"] == "spec.containers{notebook}"
    assert {"Scheduled", "Pulling", "Failed", "BackOff"} <= {e["reason"] for e in events}
    assert "Started" not in {e["reason"] for e in events}
    pod = fake_k8s.get("pods", "default", "bad")
    assert pod is not None and pod["status"]["phase"] == "Pending"


@pytest.mark.fake_k8s(crashing_images=["cerit.io/crashes:1"])
async def test_crash_on_start(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespaced_pod(
        "default", pod_body("once", image="cerit.io/crashes:1", restartPolicy="Never")
    )
    pod = await fake_k8s.wait_for_pod_phase("default", "once", "Failed")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
    await v1.create_namespaced_pod("default", pod_body("loop", image="cerit.io/crashes:1"))
    await fake_k8s.wait_for(lambda: waiting_reason(fake_k8s, "loop") == "CrashLoopBackOff")
    looping = fake_k8s.get("pods", "default", "loop")
    assert looping is not None and looping["status"]["phase"] == "Running"
    status = looping["status"]["containerStatuses"][0]
    assert status["restartCount"] >= 1 and not status["ready"]
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert "BackOff" in reasons(fake_k8s, "loop")


async def test_pvc_binding_and_protection(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespaced_persistent_volume_claim("default", pvc_body("home", "10Gi"))
    await fake_k8s.wait_for(
        lambda: (
            (fake_k8s.get("persistentvolumeclaims", "default", "home") or {}).get("status", {}).get("phase")
            == "Bound"
        )
    )
    pvc = await v1.read_namespaced_persistent_volume_claim("home", "default")
    assert pvc.status.capacity == {"storage": "10Gi"}
    assert pvc.metadata.finalizers == ["kubernetes.io/pvc-protection"]
    body = pod_body(
        "nb",
        volumeMounts=[{"name": "home", "mountPath": "/home/jovyan"}],
        volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "home"}}],
    )
    await v1.create_namespaced_pod("default", body)
    await fake_k8s.wait_for_pod_phase("default", "nb", "Running")
    deleting = await v1.delete_namespaced_persistent_volume_claim("home", "default")
    assert deleting.metadata.deletion_timestamp is not None
    held = fake_k8s.get("persistentvolumeclaims", "default", "home")
    assert held is not None and held["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    # A new pod cannot use a PVC that is being deleted.
    await v1.create_namespaced_pod("default", dict(body, metadata={"name": "late"}))
    await fake_k8s.wait_for(lambda: "FailedScheduling" in reasons(fake_k8s, "late"))
    assert 'persistentvolumeclaim "home" is being deleted' in fake_k8s.events_for("late")[-1]["message"]
    await v1.delete_namespaced_pod("late", "default")
    await v1.delete_namespaced_pod("nb", "default")
    await fake_k8s.wait_for(lambda: fake_k8s.get("persistentvolumeclaims", "default", "home") is None, 3)


async def test_missing_pvc_and_secret_keep_the_pod_waiting(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    body = pod_body(
        "needs-home",
        volumeMounts=[{"name": "home", "mountPath": "/home"}],
        volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "home"}}],
    )
    await v1.create_namespaced_pod("default", body)
    await fake_k8s.wait_for(lambda: "FailedScheduling" in reasons(fake_k8s, "needs-home"))
    assert fake_k8s.events_for("needs-home")[-1]["message"].startswith(
        '0/7 nodes are available: persistentvolumeclaim "home" not found.'
    )
    await v1.create_namespaced_persistent_volume_claim("default", pvc_body("home"))
    await fake_k8s.wait_for_pod_phase("default", "needs-home", "Running")

    body = pod_body(
        "needs-secret",
        volumeMounts=[{"name": "creds", "mountPath": "/creds"}],
        volumes=[{"name": "creds", "secret": {"secretName": "sshfs"}}],
    )
    await v1.create_namespaced_pod("default", body)
    await fake_k8s.wait_for(lambda: "FailedMount" in reasons(fake_k8s, "needs-secret"))
    mount = fake_k8s.events_for("needs-secret")[-1]
    assert mount["message"] == ('MountVolume.SetUp failed for volume "creds" : secret "sshfs" not found')
    assert waiting_reason(fake_k8s, "needs-secret") == "ContainerCreating"
    env = pod_body(
        "needs-key", env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sshfs", "key": "token"}}}]
    )
    await v1.create_namespaced_pod("default", env)
    await fake_k8s.wait_for(lambda: waiting_reason(fake_k8s, "needs-key") == "CreateContainerConfigError")
    await v1.create_namespaced_secret("default", secret_body("sshfs", token="x"))
    await fake_k8s.wait_for_pod_phase("default", "needs-secret", "Running")
    await fake_k8s.wait_for_pod_phase("default", "needs-key", "Running")


async def test_a_pod_bound_by_its_creator_skips_the_scheduler(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespaced_pod("default", pod_body("pinned", nodeName="cpu-2"))
    pod = await fake_k8s.wait_for_pod_phase("default", "pinned", "Running")
    assert pod["spec"]["nodeName"] == "cpu-2"
    assert "Scheduled" not in reasons(fake_k8s, "pinned")
    # The second pod on that node finds the image already there.
    await v1.create_namespaced_pod("default", pod_body("again", nodeName="cpu-2"))
    await fake_k8s.wait_for_pod_phase("default", "again", "Running")
    pulled = next(e for e in fake_k8s.events_for("again") if e["reason"] == "Pulled")
    assert pulled["message"].endswith("already present on machine")


async def test_nodes_can_be_added_while_running(fake_k8s_factory: Any) -> None:
    fake: FakeKubernetes = await fake_k8s_factory(nodes=[FakeNode("cpu-1", cpu="1")])
    async with fake.api_client() as api:
        v1 = CoreV1(api)
        await v1.create_namespaced_pod(
            "default", pod_body("big", resources={"requests": {"cpu": "8", "memory": "1Gi"}})
        )
        await fake.wait_for(lambda: "FailedScheduling" in reasons(fake, "big"))
        assert "1 Insufficient cpu" in fake.events_for("big")[-1]["message"]
        fake.add_node(FakeNode("cpu-2", cpu="16"))
        pod = await fake.wait_for_pod_phase("default", "big", "Running")
        assert pod["spec"]["nodeName"] == "cpu-2"
