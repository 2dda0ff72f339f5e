"""Rendering: ``ResolvedOptions`` + the server's identity -> Kubernetes manifests as plain dicts.

Pure and deterministic: the same input gives byte-identical JSON. The pod runs as the instance's
non-root user under the "restricted" Pod Security Standard (no privilege escalation, every
capability dropped, the RuntimeDefault seccomp profile). Names and labels come from
:mod:`einfra_spawner.names`, so they are valid and unique for any Unicode user and server name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import CsiSource, NfsSource, PvcSource, Toleration
from .names import ServerNames
from .options import ResolvedMount, ResolvedOptions
from .quantities import format_cpu, format_memory

__all__ = [
    "ANNOTATION_SERVER",
    "ANNOTATION_USER",
    "LABEL_SERVER",
    "LABEL_SPEC_HASH",
    "LABEL_USER",
    "Manifests",
    "ServerIdentity",
    "SingleUser",
    "render_manifests",
    "singleuser_env",
]

_PREFIX = "einfra-spawner"
LABEL_USER = f"{_PREFIX}/user"
LABEL_SERVER = f"{_PREFIX}/server"
LABEL_PROFILE = f"{_PREFIX}/profile"
LABEL_SPEC_HASH = f"{_PREFIX}/spec-hash"
LABEL_GPU = f"{_PREFIX}/gpu"
ANNOTATION_USER = f"{_PREFIX}/username"
ANNOTATION_SERVER = f"{_PREFIX}/servername"
CONTAINER = "notebook"
HOME_VOLUME = "home"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerIdentity:
    """Whose server this is: the JupyterHub user and server names (``""``: the default server)
    and the namespace it runs in."""

    user: str
    server: str = ""
    namespace: str = "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class SingleUser:
    """How the single-user server is started: the command, and the hub's environment for it."""

    cmd: tuple[str, ...] = ("jupyterhub-singleuser",)
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    port: int = 8888


@dataclass(frozen=True, slots=True)
class Manifests:
    """What a backend submits: the pod, the home PVC (a persistent home only), and the names of
    secrets the pod needs but does not own (per-user credentials for mounts). Plain dicts, to be
    treated as read-only."""

    pod: dict[str, Any]
    home: dict[str, Any] | None
    secret_names: tuple[str, ...]
    spec_hash: str
    names: ServerNames = field(repr=False, compare=False)

    def objects(self) -> list[dict[str, Any]]:
        """Every object to create, the pod first."""
        return [self.pod] if self.home is None else [self.pod, self.home]


def _labels(options: ResolvedOptions, names: ServerNames) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "jupyterhub-singleuser",
        "app.kubernetes.io/instance": options.instance,
        "app.kubernetes.io/component": "singleuser-server",
        "app.kubernetes.io/managed-by": "einfra-spawner",
        LABEL_USER: names.user_label,
        LABEL_SERVER: names.server_label,
        LABEL_PROFILE: options.profile,
    }


def _annotations(identity: ServerIdentity) -> dict[str, str]:
    return {ANNOTATION_USER: identity.user, ANNOTATION_SERVER: identity.server}


def singleuser_env(options: ResolvedOptions, single_user: SingleUser) -> dict[str, str]:
    """The single-user server's environment, for every backend.

    The profile's variables first, then the resource figures JupyterHub itself would set, then
    the hub's own variables, which nothing may override (the API token, the service URL...).
    """
    env: dict[str, str] = dict(options.env)
    env["CPU_LIMIT"] = str(options.cpu_limit / 1000)
    env["CPU_GUARANTEE"] = str(options.cpu_guarantee / 1000)
    env["MEM_LIMIT"] = str(options.memory_limit)
    env["MEM_GUARANTEE"] = str(options.memory_guarantee)
    if options.gpu is not None:
        env["EINFRA_GPU_TYPE"] = options.gpu.id
        env["EINFRA_GPU_COUNT"] = str(options.gpu.count)
    env.update(single_user.env)
    return env


def _resources(options: ResolvedOptions) -> dict[str, dict[str, str]]:
    requests = {
        "cpu": format_cpu(options.cpu_guarantee),
        "memory": format_memory(options.memory_guarantee),
    }
    limits = {"cpu": format_cpu(options.cpu_limit), "memory": format_memory(options.memory_limit)}
    if options.gpu is not None:
        # Extended resources cannot be overcommitted: the request must equal the limit.
        requests[options.gpu.resource] = limits[options.gpu.resource] = str(options.gpu.count)
    return {"requests": requests, "limits": limits}


def _toleration(toleration: Toleration) -> dict[str, str]:
    rendered: dict[str, str] = {"operator": toleration.operator}
    if toleration.key is not None:
        rendered["key"] = toleration.key
    if toleration.value is not None:
        rendered["value"] = toleration.value
    if toleration.effect is not None:
        rendered["effect"] = toleration.effect
    return rendered


def _mount_volume(mount: ResolvedMount, names: ServerNames) -> dict[str, Any]:
    volume: dict[str, Any] = {"name": f"mount-{mount.id}"}
    source = mount.source
    if isinstance(source, PvcSource):
        volume["persistentVolumeClaim"] = {
            "claimName": source.claim_name,
            "readOnly": mount.read_only,
        }
    elif isinstance(source, NfsSource):
        volume["nfs"] = {"server": source.server, "path": source.path, "readOnly": mount.read_only}
    else:
        csi: dict[str, Any] = {"driver": source.driver, "readOnly": mount.read_only}
        if source.volume_attributes:
            csi["volumeAttributes"] = dict(sorted(source.volume_attributes.items()))
        if source.fs_type:
            csi["fsType"] = source.fs_type
        secret = secret_name(source, names)
        if secret is not None:
            csi["nodePublishSecretRef"] = {"name": secret}
        volume["csi"] = csi
    return volume


def secret_name(source: CsiSource, names: ServerNames) -> str | None:
    """The per-user secret a CSI mount needs; ``{user}`` replaced as plain text, never evaluated."""
    if source.secret is None:
        return None
    return source.secret.replace("{user}", names.user_label)


def _volumes(
    options: ResolvedOptions, names: ServerNames, labels: Mapping[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    home = options.home
    if home is not None:
        if home.ephemeral:
            spec: dict[str, Any] = {
                "accessModes": list(home.access_modes),
                "resources": {"requests": {"storage": format_memory(home.size)}},
            }
            if home.storage_class:
                spec["storageClassName"] = home.storage_class
            volumes.append(
                {
                    "name": HOME_VOLUME,
                    "ephemeral": {
                        "volumeClaimTemplate": {"metadata": {"labels": dict(labels)}, "spec": spec}
                    },
                }
            )
        else:
            volumes.append({"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": names.home}})
        mounts.append({"name": HOME_VOLUME, "mountPath": home.mount_path})
    for mount in options.mounts:
        volumes.append(_mount_volume(mount, names))
        volume_mount: dict[str, Any] = {
            "name": f"mount-{mount.id}",
            "mountPath": mount.mount_path,
            "readOnly": mount.read_only,
        }
        if mount.sub_path:
            volume_mount["subPath"] = mount.sub_path
        mounts.append(volume_mount)
    return volumes, mounts


def _home_claim(
    options: ResolvedOptions, identity: ServerIdentity, names: ServerNames, labels: dict[str, str]
) -> dict[str, Any] | None:
    home = options.home
    if home is None or home.ephemeral:
        return None
    spec: dict[str, Any] = {
        "accessModes": list(home.access_modes),
        "resources": {"requests": {"storage": format_memory(home.size)}},
    }
    if home.storage_class:
        spec["storageClassName"] = home.storage_class
    claim_labels = {k: v for k, v in labels.items() if k != LABEL_PROFILE}
    claim_labels["app.kubernetes.io/component"] = "singleuser-home"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": names.home,
            "namespace": identity.namespace,
            "labels": claim_labels,
            "annotations": _annotations(identity),
        },
        "spec": spec,
    }


def spec_hash(pod: Mapping[str, Any]) -> str:
    """A digest of everything the pod asks for, to tell our own earlier pod from a stale one.

    The renderer builds every mapping in a fixed order, so the serialisation is canonical without
    sorting keys (which would double the cost).
    """
    canonical = json.dumps(pod, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:20]


def render_manifests(
    options: ResolvedOptions, identity: ServerIdentity, single_user: SingleUser | None = None
) -> Manifests:
    """The manifests for ``identity``'s server with ``options``."""
    single_user = single_user or SingleUser()
    names = ServerNames(identity.user, identity.server)
    labels = _labels(options, names)
    if options.gpu is not None:
        labels[LABEL_GPU] = options.gpu.id
    volumes, volume_mounts = _volumes(options, names, labels)
    security = options.pod_security
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [*single_user.cmd, *single_user.args],
        "ports": [{"name": "notebook", "containerPort": single_user.port, "protocol": "TCP"}],
        "env": [
            {"name": name, "value": value} for name, value in singleuser_env(options, single_user).items()
        ],
        "resources": _resources(options),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": volume_mounts,
    }
    if options.home is not None:
        container["workingDir"] = options.home.mount_path
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": security.run_as_user,
        "runAsGroup": security.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if security.fs_group is not None:
        pod_security["fsGroup"] = security.fs_group
    node_selector = dict(options.node_selector)
    tolerations = [_toleration(t) for t in options.tolerations]
    if options.gpu is not None:
        node_selector.update(options.gpu.node_selector)
        tolerations += [_toleration(t) for t in options.gpu.tolerations if t not in options.tolerations]
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
    }
    if node_selector:
        spec["nodeSelector"] = dict(sorted(node_selector.items()))
    if tolerations:
        spec["tolerations"] = tolerations
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": names.pod,
            "namespace": identity.namespace,
            "labels": labels,
            "annotations": _annotations(identity),
        },
        "spec": spec,
    }
    digest = spec_hash(pod)
    pod["metadata"]["labels"] = {**labels, LABEL_SPEC_HASH: digest}
    secrets = tuple(
        name
        for mount in options.mounts
        if isinstance(mount.source, CsiSource) and (name := secret_name(mount.source, names)) is not None
    )
    return Manifests(
        pod=pod,
        home=_home_claim(options, identity, names, labels),
        secret_names=secrets,
        spec_hash=digest,
        names=names,
    )
