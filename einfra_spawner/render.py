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

from .models import SHM_PATH, CsiSource, NfsSource, PvcSource, PvTemplate, Toleration
from .names import ServerNames
from .options import ResolvedMount, ResolvedOptions
from .pod_security import container_security_context, pod_security_context
from .quantities import format_cpu, format_memory
from .render_pod import apply_pod_settings
from .storage import (
    LABEL_HOME_GENERATION,
    LABEL_MOUNT,
    LABEL_REMOVE,
    fill,
    home_claim_name,
    user_volume_name,
)

__all__ = [
    "ANNOTATION_SERVER",
    "ANNOTATION_USER",
    "LABEL_SERVER",
    "LABEL_SPEC_HASH",
    "LABEL_USER",
    "Manifests",
    "ServerIdentity",
    "SingleUser",
    "UserVolume",
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
SHM_VOLUME = "dshm"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerIdentity:
    """Whose server this is: the JupyterHub user and server names (``""``: the default server),
    the namespace it runs in, and the generation of its current home (0 until a reset that keeps
    the old home gives it a new one; the spawner keeps it in the server's state)."""

    user: str
    server: str = ""
    namespace: str = "default"
    home_generation: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SingleUser:
    """How the single-user server is started: the command, and the hub's environment for it."""

    cmd: tuple[str, ...] = ("jupyterhub-singleuser",)
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    port: int = 8888


@dataclass(frozen=True, slots=True, kw_only=True)
class UserVolume:
    """A PersistentVolume made for this server from a mount's ``pv`` template, and the claim
    bound to it. ``secret``: the credentials it needs (checked before anything is created);
    ``register_first``: what to tell the user when they are missing; ``remove``: the
    template's policy (``with_server`` or ``never``)."""

    mount: str
    pv: dict[str, Any]
    claim: dict[str, Any]
    secret: str | None
    register_first: str | None
    remove: str


@dataclass(frozen=True, slots=True)
class Manifests:
    """What a backend submits: the pod, the home PVC (a persistent home only), and the names of
    secrets the pod needs but does not own (per-user credentials for mounts). Plain dicts, to be
    treated as read-only. ``user_volumes``: the per-server PersistentVolumes and claims of
    ``pv`` mounts. ``home_generation``: the generation of the home the pod mounts;
    ``retired_home``: the claim a reset replaces and keeps for a while (``None``: no reset, or
    a reset that deletes the old home, which keeps its name)."""

    pod: dict[str, Any]
    home: dict[str, Any] | None
    secret_names: tuple[str, ...]
    spec_hash: str
    names: ServerNames = field(repr=False, compare=False)
    user_volumes: tuple[UserVolume, ...] = ()
    home_generation: int = 0
    retired_home: str | None = None

    def objects(self) -> list[dict[str, Any]]:
        """Every object to create, the pod first."""
        objects = [self.pod] if self.home is None else [self.pod, self.home]
        for volume in self.user_volumes:
            objects += [volume.pv, volume.claim]
        return objects


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


def _attributes(attributes: Mapping[str, str], names: ServerNames) -> dict[str, str]:
    return {key: fill(value, names) for key, value in sorted(attributes.items())}


def _mount_volume(
    mount: ResolvedMount, names: ServerNames, identity: ServerIdentity, instance: str
) -> dict[str, Any]:
    volume: dict[str, Any] = {"name": f"mount-{mount.id}"}
    source = mount.source
    if isinstance(source, PvcSource):
        volume["persistentVolumeClaim"] = {
            "claimName": fill(source.claim_name, names),
            "readOnly": mount.read_only,
        }
    elif isinstance(source, PvTemplate):
        claim = user_volume_name(instance, identity.user, identity.server, mount.id)
        volume["persistentVolumeClaim"] = {"claimName": claim, "readOnly": mount.read_only}
    elif isinstance(source, NfsSource):
        path = fill(source.path, names)
        volume["nfs"] = {"server": source.server, "path": path, "readOnly": mount.read_only}
    else:
        csi: dict[str, Any] = {"driver": source.driver, "readOnly": mount.read_only}
        if source.volume_attributes:
            csi["volumeAttributes"] = _attributes(source.volume_attributes, names)
        if source.fs_type:
            csi["fsType"] = source.fs_type
        secret = secret_name(source, names)
        if secret is not None:
            csi["nodePublishSecretRef"] = {"name": secret}
        volume["csi"] = csi
    return volume


def secret_name(source: CsiSource | PvTemplate, names: ServerNames) -> str | None:
    """The per-user secret a CSI or PV mount needs; ``{user}`` and ``{server}`` replaced as
    plain text, never evaluated."""
    if source.secret is None:
        return None
    return fill(source.secret, names)


def _user_volume(
    mount: ResolvedMount,
    source: PvTemplate,
    identity: ServerIdentity,
    names: ServerNames,
    labels: Mapping[str, str],
    instance: str,
) -> UserVolume:
    """The PersistentVolume of a ``pv`` mount for this server, and its claim. The PV names its
    claim (``claimRef``) and the claim its PV (``volumeName``), so they bind only to each
    other, in whatever namespace the server runs."""
    name = user_volume_name(instance, identity.user, identity.server, mount.id)
    volume_labels = {k: v for k, v in labels.items() if k != LABEL_PROFILE}
    volume_labels["app.kubernetes.io/component"] = "singleuser-volume"
    volume_labels[LABEL_MOUNT] = mount.id
    volume_labels[LABEL_REMOVE] = source.remove
    metadata = {"name": name, "labels": volume_labels, "annotations": _annotations(identity)}
    secret = secret_name(source, names)
    csi: dict[str, Any] = {"driver": source.driver, "volumeHandle": name}
    attributes = _attributes(source.volume_attributes, names)
    if secret is not None and source.secret_attribute is not None:
        attributes[source.secret_attribute] = f"{identity.namespace}/{secret}"
    elif secret is not None:
        csi["nodePublishSecretRef"] = {"name": secret, "namespace": identity.namespace}
    if attributes:
        csi["volumeAttributes"] = attributes
    if source.fs_type:
        csi["fsType"] = source.fs_type
    size = format_memory(source.size)
    pv_spec: dict[str, Any] = {
        "capacity": {"storage": size},
        "accessModes": list(source.access_modes),
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": source.storage_class,
        "claimRef": {"kind": "PersistentVolumeClaim", "namespace": identity.namespace, "name": name},
        "csi": csi,
    }
    if source.mount_options:
        pv_spec["mountOptions"] = list(source.mount_options)
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {**metadata, "namespace": identity.namespace},
        "spec": {
            "accessModes": list(source.access_modes),
            "resources": {"requests": {"storage": size}},
            "storageClassName": source.storage_class,
            "volumeName": name,
        },
    }
    return UserVolume(
        mount=mount.id,
        pv={"apiVersion": "v1", "kind": "PersistentVolume", "metadata": metadata, "spec": pv_spec},
        claim=claim,
        secret=secret,
        register_first=source.register_first,
        remove=source.remove,
    )


def _volumes(
    options: ResolvedOptions,
    identity: ServerIdentity,
    names: ServerNames,
    labels: Mapping[str, str],
    home_claim: str,
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
            volumes.append({"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": home_claim}})
        mounts.append({"name": HOME_VOLUME, "mountPath": home.mount_path})
    if options.shm_size is not None:
        shm = {"medium": "Memory", "sizeLimit": format_memory(options.shm_size)}
        volumes.append({"name": SHM_VOLUME, "emptyDir": shm})
        mounts.append({"name": SHM_VOLUME, "mountPath": SHM_PATH})
    for mount in options.mounts:
        volumes.append(_mount_volume(mount, names, identity, options.instance))
        volume_mount: dict[str, Any] = {
            "name": f"mount-{mount.id}",
            "mountPath": mount.mount_path,
            "readOnly": mount.read_only,
        }
        if mount.sub_path:
            volume_mount["subPath"] = fill(mount.sub_path, names)
        mounts.append(volume_mount)
    return volumes, mounts


def _home_claim(
    options: ResolvedOptions, identity: ServerIdentity, labels: dict[str, str], claim: str, generation: int
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
    claim_labels[LABEL_HOME_GENERATION] = str(generation)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim,
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
    # A reset that keeps the old home for a while gives the server a home of the next
    # generation (a PVC cannot be renamed); one that deletes it keeps the name.
    generation = identity.home_generation
    retired = None
    home = options.home
    if home is not None and home.reset and not home.ephemeral and home.keep_old_for > 0:
        retired = home_claim_name(names, identity.user, identity.server, generation)
        generation += 1
    home_claim = home_claim_name(names, identity.user, identity.server, generation)
    volumes, volume_mounts = _volumes(options, identity, names, labels, home_claim)
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
        "securityContext": container_security_context(),
        "volumeMounts": volume_mounts,
    }
    if options.home is not None:
        container["workingDir"] = options.home.mount_path
    pod_security = pod_security_context(security.run_as_user, security.run_as_group, security.fs_group)
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
    # The operator's pod settings and patches come last, and before the hash, which covers them.
    pod = apply_pod_settings(
        pod,
        options.pod,
        user_label=names.user_label,
        server_label=names.server_label,
        home=(HOME_VOLUME, options.home.mount_path) if options.home is not None else None,
    )
    digest = spec_hash(pod)
    pod["metadata"]["labels"] = {**pod["metadata"]["labels"], LABEL_SPEC_HASH: digest}
    secrets = tuple(
        name
        for mount in options.mounts
        if isinstance(mount.source, CsiSource) and (name := secret_name(mount.source, names)) is not None
    )
    user_volumes = tuple(
        _user_volume(mount, mount.source, identity, names, labels, options.instance)
        for mount in options.mounts
        if isinstance(mount.source, PvTemplate)
    )
    return Manifests(
        pod=pod,
        home=_home_claim(options, identity, labels, home_claim, generation),
        secret_names=secrets,
        spec_hash=digest,
        names=names,
        user_volumes=user_volumes,
        home_generation=generation,
        retired_home=retired,
    )
