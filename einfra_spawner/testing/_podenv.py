"""What a pod needs from its namespace before its containers can start, and their environment.

The fake kubelet asks :func:`config_problem` whether a pod refers to a Secret or ConfigMap
that does not exist (a volume: FailedMount; ``env``/``envFrom``: CreateContainerConfigError),
and in process mode builds the process environment with :func:`container_environment` the way
a kubelet does: ``envFrom`` first, then ``env`` in order, with ``$(VAR)`` references to
earlier variables expanded and ``valueFrom`` resolved from Secrets, ConfigMaps and the pod's
own fields.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ._processes import expand_references
from ._store import Store

JsonDict = dict[str, Any]


def _all_containers(pod: JsonDict) -> list[JsonDict]:
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _decode(value: str) -> str:
    try:
        return base64.b64decode(value).decode(errors="replace")
    except (binascii.Error, ValueError):
        return ""


def config_problem(store: Store, pod: JsonDict) -> tuple[str, str, str, str] | None:
    """(event reason, event message, waiting reason, waiting message) for a missing object."""
    namespace = pod["metadata"]["namespace"]

    def missing(kind: str, name: str) -> bool:
        resource = "secrets" if kind == "secret" else "configmaps"
        return store.get(resource, namespace, name) is None

    for volume in pod["spec"].get("volumes") or ():
        sources: list[tuple[str, JsonDict]] = []
        if volume.get("secret"):
            sources.append(("secret", volume["secret"] | {"name": volume["secret"].get("secretName")}))
        if volume.get("configMap"):
            sources.append(("configmap", volume["configMap"]))
        for projected in (volume.get("projected") or {}).get("sources") or ():
            if projected.get("secret"):
                sources.append(("secret", projected["secret"]))
            if projected.get("configMap"):
                sources.append(("configmap", projected["configMap"]))
        csi_secret = ((volume.get("csi") or {}).get("nodePublishSecretRef") or {}).get("name")
        if csi_secret and missing("secret", csi_secret):
            # The wording of the kubelet's CSI mounter, which fetches the secret at mount time.
            text = (
                f"kubernetes.io/csi: mounter.SetUpAt failed: fetching NodePublishSecretRef "
                f"{namespace}/{csi_secret} failed: kubernetes.io/csi: failed to find the secret "
                f'{csi_secret} in the namespace {namespace} with error: secrets "{csi_secret}" not found'
            )
            return (
                "FailedMount",
                f'MountVolume.SetUp failed for volume "{volume.get("name")}" : {text}',
                "ContainerCreating",
                "",
            )
        for kind, source in sources:
            if source.get("name") and not source.get("optional") and missing(kind, source["name"]):
                text = f'{kind} "{source["name"]}" not found'
                return (
                    "FailedMount",
                    f'MountVolume.SetUp failed for volume "{volume.get("name")}" : {text}',
                    "ContainerCreating",
                    "",
                )
    for container in _all_containers(pod):
        references: list[tuple[str, JsonDict]] = []
        for item in container.get("envFrom") or ():
            if item.get("secretRef"):
                references.append(("secret", item["secretRef"]))
            if item.get("configMapRef"):
                references.append(("configmap", item["configMapRef"]))
        for item in container.get("env") or ():
            source = item.get("valueFrom") or {}
            if source.get("secretKeyRef"):
                references.append(("secret", source["secretKeyRef"]))
            if source.get("configMapKeyRef"):
                references.append(("configmap", source["configMapKeyRef"]))
        for kind, ref in references:
            if not ref.get("name") or ref.get("optional"):
                continue
            resource = "secrets" if kind == "secret" else "configmaps"
            obj = store.get(resource, namespace, ref["name"])
            if obj is None:
                text = f'{kind} "{ref["name"]}" not found'
                return "Failed", f"Error: {text}", "CreateContainerConfigError", text
            key = ref.get("key")
            data = {**(obj.get("data") or {}), **(obj.get("binaryData") or {})}
            if key is not None and key not in data:
                label = "Secret" if kind == "secret" else "ConfigMap"
                text = f"couldn't find key {key} in {label} {namespace}/{ref['name']}"
                return "Failed", f"Error: {text}", "CreateContainerConfigError", text
    return None


def container_environment(
    store: Store, pod: JsonDict, container: JsonDict, ip: str, host_ip: str
) -> dict[str, str]:
    """The container's environment as a kubelet builds it (envFrom, then env in order)."""
    namespace = pod["metadata"]["namespace"]

    def lookup(kind: str, ref: JsonDict) -> dict[str, str]:
        resource = "secrets" if kind == "secret" else "configmaps"
        obj = store.get(resource, namespace, ref.get("name", "")) or {}
        data = {key: _decode(value) for key, value in (obj.get("binaryData") or {}).items()}
        if kind == "secret":
            data.update({key: _decode(value) for key, value in (obj.get("data") or {}).items()})
        else:
            data.update(obj.get("data") or {})
        return data

    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": namespace,
        "metadata.uid": pod["metadata"]["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": ip,
        "status.hostIP": host_ip,
    }
    env: dict[str, str] = {}
    for item in container.get("envFrom") or ():
        prefix = item.get("prefix", "")
        for kind, key in (("secret", "secretRef"), ("configmap", "configMapRef")):
            if item.get(key):
                env.update({prefix + k: v for k, v in lookup(kind, item[key]).items()})
    for item in container.get("env") or ():
        if "value" in item:
            env[item["name"]] = expand_references(str(item["value"]), env)
            continue
        source = item.get("valueFrom") or {}
        if source.get("secretKeyRef"):
            value = lookup("secret", source["secretKeyRef"]).get(source["secretKeyRef"]["key"])
        elif source.get("configMapKeyRef"):
            ref = source["configMapKeyRef"]
            value = lookup("configmap", ref).get(ref["key"])
        elif source.get("fieldRef"):
            value = fields.get(source["fieldRef"].get("fieldPath", ""))
        else:
            value = None  # resourceFieldRef and friends are not simulated
        if value is not None:
            env[item["name"]] = value
        elif "name" in item:
            env.setdefault(item["name"], "")
    return env
