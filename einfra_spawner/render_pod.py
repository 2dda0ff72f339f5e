"""Pod settings onto the rendered pod, and the load-time check of the operators' patches.

:func:`apply_pod_settings` is called by :func:`~einfra_spawner.render.render_manifests` on the
pod it built, before the spec hash is taken (so the hash covers the settings): labels and
annotations (ours always win), pull secrets and policy, priority class, affinity, service
account, init containers (under the notebook's restricted security context, forced), hooks,
environment, working directory, and last the JSON merge patches (the container's, then the
pod's, each in level order: instance, profile, GPU type).

:func:`pod_patch_problems` runs when an instance folder is loaded: for each profile and each of
its GPU choices it applies the merged settings and patches to a representative pod and checks the
result against the instance's Pod Security Standard (restricted unless ``pod_security`` says
``baseline``), so that a patch that would break it is refused before any user spawns.

Pure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .errors import Problem
from .models import NO_GPU, Instance, Profile
from .pod_containers import InitContainer, LifecycleHandler
from .pod_fields import CONTAINER_NAME, HOME_VOLUME, fill_placeholders
from .pod_security import (
    container_security_context,
    merge_patch,
    pod_security_context,
    pod_security_violations,
)
from .pod_settings import ResolvedPod, merge_pod_settings
from .quantities import format_cpu, format_memory

__all__ = ["apply_pod_settings", "pod_patch_problems"]


def _handler(handler: LifecycleHandler) -> dict[str, Any]:
    if handler.exec is not None:
        return {"exec": {"command": list(handler.exec)}}
    assert handler.http_get is not None  # the model requires exactly one
    get = handler.http_get
    return {"httpGet": {"path": get.path, "port": get.port, "scheme": get.scheme}}


def _init_container(container: InitContainer, fill: Any, home: tuple[str, str] | None) -> dict[str, Any]:
    resources = {"cpu": format_cpu(container.cpu), "memory": format_memory(container.memory)}
    rendered: dict[str, Any] = {"name": container.name, "image": container.image}
    if container.image_pull_policy is not None:
        rendered["imagePullPolicy"] = container.image_pull_policy
    if container.command:
        rendered["command"] = list(container.command)
    if container.args:
        rendered["args"] = list(container.args)
    if container.env:
        rendered["env"] = [{"name": k, "value": fill(v)} for k, v in sorted(container.env.items())]
    if container.working_dir is not None:
        rendered["workingDir"] = fill(container.working_dir)
    rendered["resources"] = {"requests": dict(resources), "limits": dict(resources)}
    rendered["securityContext"] = container_security_context()
    if container.mount_home and home is not None:
        rendered["volumeMounts"] = [{"name": home[0], "mountPath": home[1]}]
    return rendered


def apply_pod_settings(
    pod: dict[str, Any],
    settings: ResolvedPod,
    *,
    user_label: str,
    server_label: str,
    home: tuple[str, str] | None,
) -> dict[str, Any]:
    """``pod`` (as :mod:`.render` builds it, changed in place) with ``settings`` applied.

    ``home``: the name of the pod's home volume and where it is mounted, if it has one (for init
    containers that ask for it). Returns the pod, a new object when a ``pod_patch`` applies.
    """

    def fill(text: str) -> str:
        return fill_placeholders(text, user_label, server_label)

    metadata = pod["metadata"]
    spec = pod["spec"]
    (container,) = (c for c in spec["containers"] if c["name"] == CONTAINER_NAME)
    if settings.labels:
        metadata["labels"] = {**dict(settings.labels), **metadata["labels"]}
    if settings.annotations:
        metadata["annotations"] = {**dict(settings.annotations), **metadata["annotations"]}
    if settings.image_pull_policy is not None:
        container["imagePullPolicy"] = settings.image_pull_policy
    if settings.env:
        taken = {entry["name"] for entry in container["env"]}
        extra = [{"name": k, "value": fill(v)} for k, v in settings.env if k not in taken]
        container["env"] = [*extra, *container["env"]]
    if settings.working_dir is not None:
        container["workingDir"] = fill(settings.working_dir)
    if settings.lifecycle is not None:
        hooks: dict[str, Any] = {}
        if settings.lifecycle.post_start is not None:
            hooks["postStart"] = _handler(settings.lifecycle.post_start)
        if settings.lifecycle.pre_stop is not None:
            hooks["preStop"] = _handler(settings.lifecycle.pre_stop)
        container["lifecycle"] = hooks
    spec["automountServiceAccountToken"] = settings.automount_service_account_token
    if settings.service_account_name is not None:
        spec["serviceAccountName"] = settings.service_account_name
    if settings.priority_class_name is not None:
        spec["priorityClassName"] = settings.priority_class_name
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    if settings.affinity is not None:
        spec["affinity"] = settings.affinity.model_dump(mode="json", exclude_defaults=True)
    if settings.init_containers:
        spec["initContainers"] = [_init_container(c, fill, home) for c in settings.init_containers]
    for patch in settings.container_patches:
        patched = merge_patch(container, json.loads(patch))
        container.clear()
        container.update(patched)
    for patch in settings.pod_patches:
        pod = merge_patch(pod, json.loads(patch))
    return pod


# --- the load-time check ---------------------------------------------------------------------------


def _representative_pod(instance: Instance, has_home: bool) -> dict[str, Any]:
    """A pod shaped as :mod:`.render` renders one, with the same security contexts."""
    security = instance.pod_security
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": "registry.example/notebook:1",
        "imagePullPolicy": "IfNotPresent",
        "args": ["jupyterhub-singleuser"],
        "ports": [{"name": "notebook", "containerPort": 8888, "protocol": "TCP"}],
        "env": [{"name": "JUPYTERHUB_API_TOKEN", "value": "sample"}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": HOME_VOLUME, "mountPath": "/home/jovyan"}] if has_home else [],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "jupyter-sample",
            "namespace": "default",
            "labels": {"einfra-spawner/user": "u-sample"},
            "annotations": {"einfra-spawner/username": "sample"},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "restartPolicy": "Never",
            "securityContext": pod_security_context(
                security.run_as_user, security.run_as_group, security.fs_group
            ),
            "containers": [container],
            "volumes": [{"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": "home-sample"}}]
            if has_home
            else [],
        },
    }


def pod_patch_problems(instance: Instance, profiles: Sequence[tuple[str, Profile]]) -> list[Problem]:
    """Every way the patches of ``instance`` and ``profiles`` (file name, profile) break the
    instance's Pod Security Standard, for each profile and each of its GPU choices."""
    level = instance.pod_security.level
    problems: list[Problem] = []
    for name, profile in profiles:
        gpu_ids = [c.id for c in profile.gpu.choices if c.id != NO_GPU and c.id in instance.gpu_types]
        combos: list[str | None] = [None, *gpu_ids]
        for gpu_id in combos:
            levels = [instance.pod, profile.pod]
            if gpu_id is not None:
                levels.append(instance.gpu_types[gpu_id].pod)
            if not any(lv.pod_patch is not None or lv.container_patch is not None for lv in levels):
                continue
            settings = merge_pod_settings(levels)
            pod = apply_pod_settings(
                _representative_pod(instance, profile.home is not None),
                settings,
                user_label="u-sample",
                server_label="s-sample",
                home=(HOME_VOLUME, profile.home.mount_path) if profile.home is not None else None,
            )
            violations = pod_security_violations(pod, level)
            if not violations:
                continue
            where = f" with GPU type {gpu_id!r}" if gpu_id is not None else ""
            file, path = _blame(name, profile, instance, gpu_id)
            for violation in violations:
                problem = Problem(
                    file,
                    path,
                    f"the patched pod of profile {profile.slug!r}{where} breaks the {level} Pod "
                    f"Security Standard: {violation}"
                    + ("" if level == "baseline" else " (pod_security: baseline allows less strict pods)"),
                )
                if problem not in problems:
                    problems.append(problem)
    return problems


def _blame(name: str, profile: Profile, instance: Instance, gpu_id: str | None) -> tuple[str, str]:
    """Where to point the operator: the most specific level that has a patch."""
    if gpu_id is not None:
        gpu = instance.gpu_types[gpu_id].pod
        if gpu.pod_patch is not None or gpu.container_patch is not None:
            return "instance.yaml", f"gpu_types.{gpu_id}.pod"
    if profile.pod.pod_patch is not None or profile.pod.container_patch is not None:
        return name, "pod"
    return "instance.yaml", "pod"
