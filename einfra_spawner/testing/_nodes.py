"""Simulated nodes: their description, the Node objects built from them, a YAML format.

A :class:`FakeNode` says what a node offers (CPU, memory, whole GPUs and MIG slices as
extended resources, labels, taints). The harness turns each into a complete ``v1/Node`` with
``status.capacity``/``allocatable`` (so that deserialising it into kubernetes_asyncio's
``V1Node`` works) and the fake scheduler places pods against those numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class FakeNode:
    """One simulated node. ``gpus`` maps extended resource names to counts, e.g.
    ``{"nvidia.com/gpu": 4}`` or ``{"nvidia.com/mig-1g.10gb": 7}``; ``taints`` are dicts with
    ``key``, ``value`` (optional) and ``effect``."""

    name: str
    cpu: str = "16"
    memory: str = "64Gi"
    gpus: Mapping[str, int] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    pods: int = 110
    ephemeral_storage: str = "100Gi"
    unschedulable: bool = False

    def capacity(self) -> dict[str, str]:
        capacity = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": self.ephemeral_storage,
        }
        capacity.update({name: str(count) for name, count in self.gpus.items()})
        return capacity


def default_nodes() -> list[FakeNode]:
    """Two CPU nodes and GPU nodes of several types, including an A100 split into MIG slices.

    The product labels are the ones NVIDIA's GPU feature discovery writes, and the ones the
    reference profiles in ``profiles/`` select on.
    """

    def gpu(name: str, product: str, count: int, cpu: str, memory: str) -> FakeNode:
        labels = {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.count": str(count),
        }
        return FakeNode(name, cpu=cpu, memory=memory, gpus={"nvidia.com/gpu": count}, labels=labels)

    return [
        FakeNode("cpu-1", cpu="32", memory="128Gi"),
        FakeNode("cpu-2", cpu="32", memory="128Gi"),
        gpu("gpu-a10-1", "NVIDIA-A10", 2, "32", "128Gi"),
        gpu("gpu-a40-1", "NVIDIA-A40", 4, "64", "256Gi"),
        gpu("gpu-a100-1", "NVIDIA-A100-80GB-PCIe", 2, "64", "512Gi"),
        gpu("gpu-h100-1", "NVIDIA-H100-PCIe", 2, "96", "1Ti"),
        FakeNode(
            "gpu-mig-1",
            cpu="64",
            memory="512Gi",
            gpus={"nvidia.com/mig-1g.10gb": 4, "nvidia.com/mig-2g.20gb": 1},
            labels={
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe-MIG-1g.10gb",
                "nvidia.com/mig.strategy": "mixed",
            },
        ),
    ]


def node_object(node: FakeNode, index: int, uid: str, created: str) -> JsonDict:
    """The ``v1/Node`` for a fake node (the store sets resourceVersion)."""
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        **node.labels,
    }
    spec: JsonDict = {"podCIDR": f"10.244.{index}.0/24", "podCIDRs": [f"10.244.{index}.0/24"]}
    if node.taints:
        spec["taints"] = [dict(taint) for taint in node.taints]
    if node.unschedulable:
        spec["unschedulable"] = True
    capacity = node.capacity()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "uid": uid,
            "creationTimestamp": created,
            "labels": labels,
            "annotations": {"einfra.cz/fake-node": "true"},
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": created,
                    "lastTransitionTime": created,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip(index)},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": uid,
                "containerRuntimeVersion": "containerd://2.0.0",
                "kernelVersion": "6.1.0",
                "kubeProxyVersion": "v1.33.0",
                "kubeletVersion": "v1.33.0",
                "machineID": uid.replace("-", ""),
                "operatingSystem": "linux",
                "osImage": "einfra-spawner fake node (test harness)",
                "systemUUID": uid,
            },
        },
    }


def node_ip(index: int) -> str:
    return f"10.0.{index // 250}.{index % 250 + 2}"


def _node_from_mapping(item: Mapping[str, Any]) -> FakeNode:
    known = {
        "name",
        "cpu",
        "memory",
        "gpus",
        "labels",
        "taints",
        "pods",
        "ephemeral_storage",
        "unschedulable",
    }
    unknown = set(item) - known
    if unknown:
        raise ValueError(
            f"unknown keys in node {item.get('name')!r}: {sorted(unknown)}; allowed: {sorted(known)}"
        )
    if "name" not in item:
        raise ValueError(f"a node needs a name: {dict(item)!r}")
    return FakeNode(
        name=str(item["name"]),
        cpu=str(item.get("cpu", "16")),
        memory=str(item.get("memory", "64Gi")),
        gpus={str(key): int(value) for key, value in (item.get("gpus") or {}).items()},
        labels={str(key): str(value) for key, value in (item.get("labels") or {}).items()},
        taints=tuple({str(k): str(v) for k, v in taint.items()} for taint in item.get("taints") or ()),
        pods=int(item.get("pods", 110)),
        ephemeral_storage=str(item.get("ephemeral_storage", "100Gi")),
        unschedulable=bool(item.get("unschedulable", False)),
    )


def load_nodes(path: str | Path) -> list[FakeNode]:
    """Nodes from a YAML file: a list of mappings (or ``{nodes: [...]}``) with FakeNode's fields."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("nodes")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of nodes (or a mapping with a 'nodes' list)")
    return [_node_from_mapping(item) for item in data]


def dump_nodes(nodes: Sequence[FakeNode]) -> str:
    """The YAML form read by :func:`load_nodes`."""
    items = []
    for node in nodes:
        item: JsonDict = {"name": node.name, "cpu": node.cpu, "memory": node.memory}
        if node.gpus:
            item["gpus"] = dict(node.gpus)
        if node.labels:
            item["labels"] = dict(node.labels)
        if node.taints:
            item["taints"] = [dict(taint) for taint in node.taints]
        if node.pods != 110:
            item["pods"] = node.pods
        if node.ephemeral_storage != "100Gi":
            item["ephemeral_storage"] = node.ephemeral_storage
        if node.unschedulable:
            item["unschedulable"] = True
        items.append(item)
    return yaml.safe_dump({"nodes": items}, sort_keys=False)
