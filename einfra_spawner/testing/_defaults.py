"""Server-side defaulting of created objects, and small helpers for raw object dicts.

A real API server fills in many fields on create (restartPolicy, schedulerName, requests
taken from limits, the PVC protection finalizer, a Secret's ``stringData`` folded into
``data``...). A client that reads its objects back sees them, so the fake fills in the same
ones; it skips what only matters inside a cluster (service account token volumes).
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from datetime import datetime, timezone
from typing import Any

JsonDict = dict[str, Any]

# Characters the real server uses for generateName suffixes (no vowels, no confusables).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
PVC_PROTECTION = "kubernetes.io/pvc-protection"


def now() -> str:
    """The current time as the API server writes timestamps (RFC 3339, seconds, UTC)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp_in(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def name_suffix() -> str:
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data; much cheaper than ``copy.deepcopy`` (no memo, no dispatch)."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _default_container(container: JsonDict) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    if isinstance(container.get("image"), str):
        container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))
    resources = container.setdefault("resources", {})
    if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
        # Requests default to limits when a container gives only limits.
        requests = resources.setdefault("requests", {})
        if isinstance(requests, dict):
            for name, value in resources["limits"].items():
                requests.setdefault(name, value)
    for port in container.get("ports") or ():
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def qos_class(spec: JsonDict) -> str:
    containers = [c for c in spec.get("containers") or () if isinstance(c, dict)]
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        any_set = any_set or bool(requests) or bool(limits)
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def default_pod(pod: JsonDict) -> None:
    spec = pod.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    if isinstance(tolerations, list):
        keys = {t.get("key") for t in tolerations if isinstance(t, dict)}
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if key not in keys:
                tolerations.append(
                    {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                )
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or ():
            if isinstance(container, dict):
                _default_container(container)
    for volume in spec.get("volumes") or ():
        if isinstance(volume, dict) and isinstance(volume.get("secret"), dict):
            volume["secret"].setdefault("defaultMode", 420)


def default_pvc(pvc: JsonDict) -> None:
    spec = pvc.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
        # The DefaultStorageClass admission plugin of a typical cluster.
        spec.setdefault("storageClassName", "standard")


def default_secret(secret: JsonDict) -> None:
    secret.setdefault("type", "Opaque")
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = secret.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def default_namespace(namespace: JsonDict) -> None:
    metadata = namespace["metadata"]
    labels = metadata.setdefault("labels", {})
    if isinstance(labels, dict) and isinstance(metadata.get("name"), str):
        labels["kubernetes.io/metadata.name"] = metadata["name"]
    namespace.setdefault("spec", {"finalizers": ["kubernetes"]})


def initial_status(kind: str, obj: JsonDict) -> JsonDict | None:
    """The status a freshly created object has, or None for kinds without a status."""
    if kind == "Pod":
        return {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}
    if kind == "PersistentVolumeClaim":
        return {"phase": "Pending"}
    if kind == "PersistentVolume":
        return {"phase": "Available"}
    if kind == "Namespace":
        return {"phase": "Active"}
    return None
