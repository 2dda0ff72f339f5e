"""Rendering: ``ResolvedOptions`` + the server's identity -> Kubernetes manifests as plain dicts.

Pure and deterministic: the same input gives byte-identical JSON. The pod runs as the instance's
non-root user under the "restricted" Pod Security Standard (no privilege escalation, every
capability dropped, the RuntimeDefault seccomp profile). Names and labels come from
:mod:`einfra_spawner.names` and :mod:`einfra_spawner.labels`, so they are valid and unique for
any Unicode user and server name.

This module assembles the pod (the notebook container, its resources, environment and
scheduling) and takes its spec hash; the storage is rendered by :mod:`.render_volumes`, the
operator's pod settings applied by :mod:`.render_pod`. What it takes and gives
(:class:`ServerIdentity`, :class:`SingleUser`, :class:`Manifests`, :class:`UserVolume`) is
defined in :mod:`.manifests` and the labels in :mod:`.labels`; both are re-exported here, the
import path of the package and the backends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .labels import (
    ANNOTATION_SERVER,
    ANNOTATION_USER,
    LABEL_GPU,
    LABEL_SERVER,
    LABEL_SPEC_HASH,
    LABEL_USER,
    server_annotations,
    server_labels,
)
from .manifests import Manifests, ServerIdentity, SingleUser, UserVolume
from .models import CsiSource, PvTemplate, Toleration
from .names import ServerNames
from .options import ResolvedOptions
from .pod_fields import CONTAINER_NAME, HOME_VOLUME
from .pod_security import container_security_context, pod_security_context
from .quantities import format_cpu, format_memory
from .render_pod import apply_pod_settings
from .render_volumes import home_claim, pod_volumes, secret_name, user_volume
from .storage import home_claim_name

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
    labels = server_labels(options.instance, options.profile, names)
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
    claim = home_claim_name(names, identity.user, identity.server, generation)
    volumes, volume_mounts = pod_volumes(options, identity, names, labels, claim)
    security = options.pod_security
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
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
            "annotations": server_annotations(identity.user, identity.server),
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
        user_volume(mount, mount.source, identity, names, labels, options.instance)
        for mount in options.mounts
        if isinstance(mount.source, PvTemplate)
    )
    return Manifests(
        pod=pod,
        home=home_claim(options, identity, labels, claim, generation),
        secret_names=secrets,
        spec_hash=digest,
        names=names,
        user_volumes=user_volumes,
        home_generation=generation,
        retired_home=retired,
    )
