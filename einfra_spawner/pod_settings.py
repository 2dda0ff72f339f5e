"""Pod settings: what an operator may add to the single-user pod, declared and checked at load.

The ``pod`` key of ``instance.yaml``, of a profile and of a GPU type holds a :class:`PodSettings`:
image pull secrets and policy, extra labels and annotations, a priority class, affinity, a service
account, init containers, ``lifecycle`` hooks, extra environment variables, the working directory,
and two escape hatches, ``pod_patch`` and ``container_patch`` (JSON merge patches, RFC 7386,
applied after rendering). The three levels are merged by :func:`merge_pod_settings` into one
frozen :class:`ResolvedPod` (instance < profile < GPU type: the more specific level wins); each
field's description says how (replaced, merged per key, or appended), and becomes the generated
profile reference.

Per-server text: ``{user}`` and ``{server}`` in environment values and working directories stand
for the DNS-safe labels of :class:`~einfra_spawner.names.ServerNames`, replaced as plain text by
:func:`fill_placeholders` (never ``str.format``, never a template engine); any other brace is
refused at load.

This module sits below :mod:`.models` (which declares the ``pod`` fields), so it imports nothing
from it. Its parts, each in a module of its own: the checked value types (:mod:`.pod_fields`),
the init containers and hooks (:mod:`.pod_containers`) and the affinity models
(:mod:`.pod_affinity`), re-exported here for the profile reference; the rules of the two patches
(:mod:`.pod_patches`); the labels that are ours (:mod:`.labels`). Rendering is
:mod:`.render_pod`'s. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field, StrictBool, StrictStr, field_validator

from ._model_base import EnvName, StrictModel
from .labels import OUR_LABEL_KEYS, OUR_PREFIX
from .pod_affinity import (
    Affinity,
    LabelSelector,
    LabelSelectorRequirement,
    NodeAffinity,
    NodeSelector,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodAffinity,
    PodAffinityTerm,
    PreferredSchedulingTerm,
    WeightedPodAffinityTerm,
)
from .pod_containers import HttpGetAction, InitContainer, Lifecycle, LifecycleHandler
from .pod_fields import (
    CONTAINER_NAME,
    LabelValue,
    PerServerPath,
    PerServerText,
    PullPolicy,
    QualifiedName,
    ResourceName,
    fill_placeholders,
)
from .pod_patches import Patch, check_container_patch, check_keys, check_pod_patch

__all__ = [
    "CONTAINER_NAME",
    "OUR_LABEL_KEYS",
    "OUR_PREFIX",
    "Affinity",
    "HttpGetAction",
    "InitContainer",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Lifecycle",
    "LifecycleHandler",
    "NodeAffinity",
    "NodeSelector",
    "NodeSelectorRequirement",
    "NodeSelectorTerm",
    "PodAffinity",
    "PodAffinityTerm",
    "PodSettings",
    "PreferredSchedulingTerm",
    "ResolvedPod",
    "WeightedPodAffinityTerm",
    "fill_placeholders",
    "merge_pod_settings",
]


# --- the settings of one level ------------------------------------------------------------------


class PodSettings(StrictModel):
    """What to add to the single-user pod (Kubernetes). The ``pod`` key of ``instance.yaml``, of
    a profile and of a GPU type; the three are merged, the more specific level winning:
    instance < profile < GPU type. Each key says how it is merged."""

    image_pull_secrets: tuple[ResourceName, ...] = Field(
        (),
        description="Secrets for pulling the images. Appended across levels (instance first), "
        "each name once.",
    )
    image_pull_policy: PullPolicy | None = Field(
        None,
        description="The notebook container's pull policy (IfNotPresent when no level sets it). "
        "The most specific level that sets it wins.",
    )
    labels: dict[QualifiedName, LabelValue] = Field(
        {},
        description="Extra pod labels, merged per key (the more specific level wins). Never our "
        "own: keys under einfra-spawner/ and the app.kubernetes.io labels we set are refused.",
    )
    annotations: dict[QualifiedName, Annotated[StrictStr, Field(max_length=65536)]] = Field(
        {},
        description="Extra pod annotations, merged per key (the more specific level wins); keys "
        "under einfra-spawner/ are refused.",
    )
    priority_class_name: ResourceName | None = Field(
        None, description="The pod's priority class. The most specific level that sets it wins."
    )
    affinity: Affinity | None = Field(
        None,
        description="Node and pod affinity, as in a pod spec. Merged per kind (nodeAffinity, "
        "podAffinity, podAntiAffinity): the most specific level that sets a kind wins.",
    )
    service_account_name: ResourceName | None = Field(
        None,
        description="The pod's service account. Its token is still not mounted unless "
        "automount_service_account_token is true. The most specific level that sets it wins.",
    )
    automount_service_account_token: StrictBool | None = Field(
        None,
        description="Mount the service account's API token into the pod (false when no level "
        "sets it). The most specific level that sets it wins.",
    )
    init_containers: tuple[InitContainer, ...] = Field(
        (),
        description="Containers run before the notebook, in order. Appended across levels "
        "(instance first); a container with the name of an earlier level's replaces it in place.",
    )
    lifecycle: Lifecycle | None = Field(
        None,
        description="postStart and preStop hooks of the notebook container, merged per hook "
        "(the more specific level wins).",
    )
    env: dict[EnvName, PerServerText] = Field(
        {},
        description="Extra environment variables of the notebook container; {user} and "
        "{server} in values are replaced. Merged per name (the more specific level wins). The "
        "lowest priority of all: the profile's env, the resource figures and the hub's own "
        "variables win over a variable of the same name.",
    )
    working_dir: PerServerPath | None = Field(
        None,
        description="The notebook container's working directory ({user} and {server} replaced); "
        "the home's mount path when unset. The most specific level that sets it wins.",
    )
    pod_patch: Patch | None = Field(
        None,
        description="A JSON merge patch (RFC 7386) applied to the rendered pod, for what no key "
        "covers. Every level's patch is applied, instance first. Checked at load: it may not "
        "change the pod's name, namespace, finalizers, restart policy, our labels, nor the lists "
        "other keys render (containers, init containers, volumes, tolerations, pull secrets); the "
        "patched pod must still meet the restricted Pod Security Standard (baseline when the "
        "instance's pod_security says so).",
    )
    container_patch: Patch | None = Field(
        None,
        description="A JSON merge patch (RFC 7386) applied to the notebook container, checked as "
        "pod_patch is; it may not change the container's name, image, command, args, env, "
        "ports, resources or volumeMounts.",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        check_keys(value, "label")
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        check_keys(value, "annotation")
        if sum(len(k) + len(v) for k, v in value.items()) > 256 * 1024:
            raise ValueError("the annotations are larger than 256 KiB in all")
        return value

    @field_validator("init_containers")
    @classmethod
    def _init_names(cls, value: tuple[InitContainer, ...]) -> tuple[InitContainer, ...]:
        names = [c.name for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"init container {twice[0]!r} is given twice")
        return value

    @field_validator("pod_patch")
    @classmethod
    def _pod_patch(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_pod_patch(value)
        return value

    @field_validator("container_patch")
    @classmethod
    def _container_patch(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_container_patch(value)
        return value


# --- merging the levels -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedPod:
    """The pod settings of one spawn: instance, profile and GPU type merged. Patches are kept as
    canonical JSON text, in the order they apply (immutable, and parsed afresh for each pod)."""

    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    priority_class_name: str | None = None
    affinity: Affinity | None = None
    service_account_name: str | None = None
    automount_service_account_token: bool = False
    init_containers: tuple[InitContainer, ...] = ()
    lifecycle: Lifecycle | None = None
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    pod_patches: tuple[str, ...] = ()
    container_patches: tuple[str, ...] = ()

    def __hash__(self) -> int:
        # The models hold mappings (an init container's env, label selectors), which do not hash;
        # equal settings dump to equal JSON, so that stands in for them.
        models = [m.model_dump(mode="json") for m in (self.affinity, self.lifecycle) if m is not None]
        models += [c.model_dump(mode="json") for c in self.init_containers]
        dumped = json.dumps(models, sort_keys=True)
        return hash(
            (dumped, self.labels, self.annotations, self.env, self.pod_patches, self.container_patches)
        )


def _last(levels: Sequence[PodSettings], key: str) -> Any:
    found = None
    for level in levels:
        value = getattr(level, key)
        if value is not None:
            found = value
    return found


def _merged_sub(models: Sequence[BaseModel | None]) -> dict[str, Any]:
    """Sub-keys of a model (affinity, lifecycle) merged: the last level that sets one wins."""
    merged: dict[str, Any] = {}
    for model in models:
        if model is None:
            continue
        for key in type(model).model_fields:
            value = getattr(model, key)
            if value is not None:
                merged[key] = value
    return merged


def merge_pod_settings(levels: Sequence[PodSettings]) -> ResolvedPod:
    """The settings of ``levels`` (least specific first: instance, profile, GPU type) merged."""
    secrets: list[str] = []
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    env: dict[str, str] = {}
    init: dict[str, InitContainer] = {}
    for level in levels:
        secrets += [s for s in level.image_pull_secrets if s not in secrets]
        labels.update(level.labels)
        annotations.update(level.annotations)
        env.update(level.env)
        for container in level.init_containers:
            init[container.name] = container  # a known name keeps its place
    affinity = _merged_sub([level.affinity for level in levels])
    lifecycle = _merged_sub([level.lifecycle for level in levels])
    return ResolvedPod(
        image_pull_secrets=tuple(secrets),
        image_pull_policy=_last(levels, "image_pull_policy"),
        labels=tuple(sorted(labels.items())),
        annotations=tuple(sorted(annotations.items())),
        priority_class_name=_last(levels, "priority_class_name"),
        affinity=Affinity(**affinity) if affinity else None,
        service_account_name=_last(levels, "service_account_name"),
        automount_service_account_token=bool(_last(levels, "automount_service_account_token")),
        init_containers=tuple(init.values()),
        lifecycle=Lifecycle(**lifecycle) if lifecycle else None,
        env=tuple(sorted(env.items())),
        working_dir=_last(levels, "working_dir"),
        pod_patches=tuple(_canonical(level.pod_patch) for level in levels if level.pod_patch is not None),
        container_patches=tuple(
            _canonical(level.container_patch) for level in levels if level.container_patch is not None
        ),
    )


def _canonical(patch: dict[str, Any]) -> str:
    return json.dumps(patch, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
