"""The Kubernetes backend's pure parts: plain-language failures and GPU capacity arithmetic."""

from __future__ import annotations

from typing import Any

from einfra_spawner import UserContext, resolve_options
from einfra_spawner.backend import GpuCapacity
from einfra_spawner_kubernetes._capacity import gpu_capacity
from einfra_spawner_kubernetes._explain import (
    failure_from_event,
    failure_from_pod,
    pod_is_ready,
    progress_from_event,
)

from ...unit.strategies import instance

HUB = instance("hub")
GPU_USER = UserContext(name="ada", groups=frozenset({"gpu"}))


def node(
    name: str, allocatable: dict[str, str], labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", **allocatable}},
    }


def pod(
    gpus: dict[str, str],
    node_name: str | None = None,
    phase: str = "Running",
    selector: dict[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {"containers": [{"resources": {"limits": gpus, "requests": gpus}}]}
    if node_name:
        spec["nodeName"] = node_name
    if selector:
        spec["nodeSelector"] = selector
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase}}


A40 = {"nvidia.com/gpu.product": "NVIDIA-A40"}
A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe"}


def test_capacity_by_type() -> None:
    nodes = [
        node("a40-1", {"nvidia.com/gpu": "4"}, A40),
        node("a40-2", {"nvidia.com/gpu": "4"}, A40),
        node("a40-cordoned", {"nvidia.com/gpu": "4"}, A40, unschedulable=True),
        node("a100-1", {"nvidia.com/gpu": "2"}, A100),
        node("mig-1", {"nvidia.com/mig-1g.10gb": "7"}),
        node("cpu-1", {}),
    ]
    pods = [
        pod({"nvidia.com/gpu": "3"}, "a40-1"),
        pod({"nvidia.com/gpu": "1"}, None, "Pending", A40),  # waiting: counts against a40
        pod({"nvidia.com/gpu": "2"}, "a40-2", "Succeeded"),  # finished: frees its GPUs
        pod({"nvidia.com/gpu": "1"}, "a40-2", deleting=True),  # going away
        pod({"nvidia.com/gpu": "2"}, "a100-1"),
        pod({"nvidia.com/mig-1g.10gb": "2"}, "mig-1"),
    ]
    figures = gpu_capacity(HUB.instance.gpu_types, nodes, pods)
    assert figures["a40"] == GpuCapacity("a40", free=4, total=8)
    assert figures["a100"] == GpuCapacity("a100", free=0, total=2)
    assert figures["mig-1g.10gb"] == GpuCapacity("mig-1g.10gb", free=5, total=7)
    assert figures["h100"] == GpuCapacity("h100", free=0, total=0)
    assert figures["mig-2g.20gb"].total == 0


def test_overcommitted_capacity_is_never_negative() -> None:
    figures = gpu_capacity(
        HUB.instance.gpu_types,
        [node("a40-1", {"nvidia.com/gpu": "1"}, A40)],
        [pod({"nvidia.com/gpu": "1"}, "a40-1"), pod({"nvidia.com/gpu": "1"}, None, "Pending", A40)],
    )
    assert figures["a40"] == GpuCapacity("a40", free=0, total=1)


def test_no_free_gpu_is_said_plainly() -> None:
    options = resolve_options(HUB, GPU_USER, {"gpu": "a40"})
    event = {
        "reason": "FailedScheduling",
        "type": "Warning",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    }
    assert failure_from_event(event, options, GpuCapacity("a40", 0, 8)) == (
        "No NVIDIA A40 is free right now (0 of 8); choose another GPU type or try later."
    )
    two = resolve_options(HUB, GPU_USER, {"gpu": "a40", "gpu_count": 2})
    assert failure_from_event(event, two, GpuCapacity("a40", 1, 8)) == (
        "No 2 NVIDIA A40 are free right now (1 of 8); choose another GPU type or try later."
    )
    assert failure_from_event(event, options, GpuCapacity("a40", 0, 0)) == (
        "This cluster has no NVIDIA A40 right now; choose another GPU type."
    )
    cpu_only = resolve_options(HUB, GPU_USER, {"cpu": "32"})
    message = failure_from_event(
        {"reason": "FailedScheduling", "message": "0/3 nodes are available: 3 Insufficient cpu."},
        cpu_only,
        None,
    )
    assert message is not None and message.startswith("The cluster has no room right now for 1 CPUs")


def insufficient(resource: str) -> dict[str, Any]:
    return {
        "reason": "FailedScheduling",
        "type": "Warning",
        "message": f"0/3 nodes are available: 3 Insufficient {resource}.",
    }


def test_more_gpus_than_the_cluster_has_in_all_is_not_a_matter_of_waiting() -> None:
    two = resolve_options(HUB, GPU_USER, {"gpu": "a40", "gpu_count": 2})
    for free in (0, 1):  # whether the one A40 is busy or not, 2 will never fit
        message = failure_from_event(insufficient("nvidia.com/gpu"), two, GpuCapacity("a40", free, 1))
        assert message == "This cluster has only 1 NVIDIA A40 in all; ask for at most 1."
    slices = resolve_options(HUB, GPU_USER, {"gpu": "mig-1g.10gb", "gpu_count": 4})
    message = failure_from_event(
        insufficient("nvidia.com/mig-1g.10gb"), slices, GpuCapacity("mig-1g.10gb", 3, 3)
    )
    assert message == "This cluster has only 3 NVIDIA A100 slice (MIG 1g.10gb) in all; ask for at most 3."


def test_enough_gpus_in_all_but_not_free_now_is_a_matter_of_waiting() -> None:
    two = resolve_options(HUB, GPU_USER, {"gpu": "a40", "gpu_count": 2})
    message = failure_from_event(insufficient("nvidia.com/gpu"), two, GpuCapacity("a40", 0, 2))
    assert message == "No 2 NVIDIA A40 are free right now (0 of 2); choose another GPU type or try later."


def test_images_crashes_and_secrets() -> None:
    options = resolve_options(HUB, GPU_USER, {"image": "cerit.io/no/such:1"})
    waiting = {
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}
            ],
        }
    }
    message = failure_from_pod(waiting, options)
    assert message is not None and "The image cerit.io/no/such:1 could not be downloaded" in message
    crashed = {
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 127, "reason": "Error"}}}],
        }
    }
    message = failure_from_pod(crashed, options)
    assert message is not None and "crashed as it started (exit code 127, Error)" in message
    mount = {
        "reason": "FailedMount",
        "type": "Warning",
        "message": 'MountVolume.SetUp failed for volume "m" : secret "sshfs-u-ada-x" not found',
    }
    message = failure_from_event(mount, options, None)
    assert message is not None and "secret 'sshfs-u-ada-x' not found" in message
    assert failure_from_pod({"status": {"phase": "Pending"}}, options) is None


def test_progress_and_readiness() -> None:
    step = progress_from_event({"reason": "Scheduled", "message": "Successfully assigned ns/p to gpu-node-3"})
    assert step is not None and step.message == "Your server has a place on node gpu-node-3"
    step = progress_from_event({"reason": "Pulling", "message": 'Pulling image "quay.io/x:1"'})
    assert step is not None and "Downloading the image" in step.message
    assert progress_from_event({"reason": "SandboxChanged", "type": "Normal"}) is None
    ready = {
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }
    assert pod_is_ready(ready)
    assert not pod_is_ready(
        {
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.5",
                "conditions": [{"type": "Ready", "status": "False"}],
            }
        }
    )
    assert not pod_is_ready({"status": {"phase": "Pending"}})
