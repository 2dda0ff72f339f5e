"""Manifests shared by the harness tests (plain dicts, as a backend renders them)."""

from __future__ import annotations

from typing import Any

IMAGE = "quay.io/jupyter/base-notebook:2025-03-10"


def pod_body(
    name: str, *, image: str = IMAGE, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A valid pod with one container "notebook"; container keys may be given with the spec."""
    container: dict[str, Any] = {"name": "notebook", "image": image}
    for key in ("resources", "command", "args", "env", "ports", "volumeMounts", "readinessProbe"):
        if key in spec:
            container[key] = spec.pop(key)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [container], **spec},
    }


def gpu_pod(
    name: str, product: str, count: int = 1, resource: str = "nvidia.com/gpu", **spec: Any
) -> dict[str, Any]:
    """A pod asking for ``count`` GPUs of ``product`` (by node selector)."""
    selector = {"nvidia.com/gpu.product": product} if product else {}
    return pod_body(
        name,
        nodeSelector=selector,
        resources={"limits": {resource: str(count), "cpu": "2", "memory": "4Gi"}},
        **spec,
    )


def pvc_body(name: str, size: str = "1Gi") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def secret_body(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": dict(data)}
