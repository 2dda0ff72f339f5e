"""Rendering a server's storage: the pod's volumes and mounts, its home claim, and the
PersistentVolumes (with their claims) made for it from ``pv`` mount templates.

Called by :func:`~einfra_spawner.render.render_manifests`, which assembles the pod. Names come
from :mod:`.storage` (home generations, per-server volumes) and :mod:`.names`; the ``{user}`` and
``{server}`` of storage texts are replaced as plain text by :func:`.storage.fill`. Pure and
deterministic: every mapping is built in a fixed order, so that the spec hash is stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .labels import APP_COMPONENT, LABEL_PROFILE, server_annotations
from .manifests import ServerIdentity, UserVolume
from .models import SHM_PATH, CsiSource, NfsSource, PvcSource, PvTemplate
from .names import ServerNames
from .options import ResolvedMount, ResolvedOptions
from .pod_fields import HOME_VOLUME
from .quantities import format_memory
from .storage import LABEL_HOME_GENERATION, LABEL_MOUNT, LABEL_REMOVE, fill, user_volume_name

__all__ = ["SHM_VOLUME", "home_claim", "pod_volumes", "secret_name", "user_volume"]

SHM_VOLUME = "dshm"


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


def user_volume(
    mount: ResolvedMount,
    source: PvTemplate,
    identity: ServerIdentity,
    names: ServerNames,
    labels: Mapping[str, str],
    instance: str,
) -> UserVolume:
    """The PersistentVolume of a ``pv`` mount for this server, and its claim. The PV names its
    claim (``claimRef``) and the claim its PV (``volumeName``), so they bind only to each
    other, in whatever namespace the server runs. ``labels``: the pod's."""
    name = user_volume_name(instance, identity.user, identity.server, mount.id)
    volume_labels = {k: v for k, v in labels.items() if k != LABEL_PROFILE}
    volume_labels[APP_COMPONENT] = "singleuser-volume"
    volume_labels[LABEL_MOUNT] = mount.id
    volume_labels[LABEL_REMOVE] = source.remove
    annotations = server_annotations(identity.user, identity.server)
    metadata = {"name": name, "labels": volume_labels, "annotations": annotations}
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


def pod_volumes(
    options: ResolvedOptions,
    identity: ServerIdentity,
    names: ServerNames,
    labels: Mapping[str, str],
    claim: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the notebook container's mounts of them: the home (its claim
    ``claim``, or an ephemeral one labelled with the pod's ``labels``), the shared memory,
    then the profile's mounts in order."""
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
            volumes.append({"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
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


def home_claim(
    options: ResolvedOptions,
    identity: ServerIdentity,
    labels: Mapping[str, str],
    claim: str,
    generation: int,
) -> dict[str, Any] | None:
    """The PVC of a persistent home, named ``claim``, of home ``generation``; ``None`` for no
    home or an ephemeral one. ``labels``: the pod's."""
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
    claim_labels[APP_COMPONENT] = "singleuser-home"
    claim_labels[LABEL_HOME_GENERATION] = str(generation)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim,
            "namespace": identity.namespace,
            "labels": claim_labels,
            "annotations": server_annotations(identity.user, identity.server),
        },
        "spec": spec,
    }
