"""GPU capacity from the nodes and pods caches: free and total of each GPU type. Pure.

A GPU type counts the allocatable amount of its extended resource on the schedulable nodes that
match its node selector, minus what the pods that are running or waiting there request. Pending
pods not yet bound to a node count against the type they ask for, so a queue of waiting spawns
is not reported as free GPUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from einfra_spawner.backend import GpuCapacity
from einfra_spawner.models import GpuType
from einfra_spawner.quantities import parse_quantity

__all__ = ["gpu_capacity"]


def _amount(text: object) -> int:
    try:
        return int(parse_quantity(str(text)).to_integral_value(rounding="ROUND_FLOOR"))
    except ValueError:
        return 0


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _requested(pod: Mapping[str, Any], resource: str) -> int:
    spec = pod.get("spec") or {}
    total = 0
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        amount = (resources.get("limits") or {}).get(resource) or (resources.get("requests") or {}).get(
            resource
        )
        if amount is not None:
            total += _amount(amount)
    return total


def gpu_capacity(
    gpu_types: Mapping[str, GpuType], nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> dict[str, GpuCapacity]:
    """Free and total of every GPU type, from raw Node and Pod objects."""
    usable = [n for n in nodes if not (n.get("spec") or {}).get("unschedulable")]
    live = [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    result: dict[str, GpuCapacity] = {}
    for gpu_id, gpu in gpu_types.items():
        matching = {
            (n.get("metadata") or {}).get("name"): n
            for n in usable
            if _matches((n.get("metadata") or {}).get("labels") or {}, gpu.node_selector)
            and _amount(((n.get("status") or {}).get("allocatable") or {}).get(gpu.resource, 0)) > 0
        }
        total = sum(_amount(n["status"]["allocatable"][gpu.resource]) for n in matching.values())
        used = 0
        for pod in live:
            wanted = _requested(pod, gpu.resource)
            if not wanted:
                continue
            spec = pod.get("spec") or {}
            node = spec.get("nodeName")
            if node:
                used += wanted if node in matching else 0
            elif _matches(spec.get("nodeSelector") or {}, gpu.node_selector):
                used += wanted
        result[gpu_id] = GpuCapacity(gpu=gpu_id, free=max(0, total - used), total=total)
    return result
