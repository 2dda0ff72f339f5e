"""Node and pod affinity, written exactly as in a Kubernetes pod spec and checked key by key.

The ``affinity`` key of the pod settings (:mod:`.pod_settings`): camelCase keys, so that a block
can be copied from the Kubernetes documentation; strict models, so that a misspelt key or a
wrong operator is reported at load with its path instead of being refused by the API server at
spawn. Rendered with ``model_dump(mode="json", exclude_defaults=True)``. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, StrictStr, model_validator

from ._model_base import StrictModel
from .pod_fields import ContainerName, LabelValue, QualifiedName, Weight

__all__ = [
    "Affinity",
    "LabelSelector",
    "LabelSelectorRequirement",
    "NodeAffinity",
    "NodeSelector",
    "NodeSelectorRequirement",
    "NodeSelectorTerm",
    "PodAffinity",
    "PodAffinityTerm",
    "PreferredSchedulingTerm",
    "WeightedPodAffinityTerm",
]


class LabelSelectorRequirement(StrictModel):
    """One condition on a label: ``In``/``NotIn`` take values, ``Exists``/``DoesNotExist`` none."""

    key: QualifiedName
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[LabelValue, ...] = ()

    @model_validator(mode="after")
    def _values(self) -> LabelSelectorRequirement:
        _check_values(self.operator, self.values)
        return self


class NodeSelectorRequirement(StrictModel):
    """One condition on a node label (``matchExpressions``) or field (``matchFields``);
    ``Gt``/``Lt`` take exactly one integer."""

    key: QualifiedName
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: tuple[StrictStr, ...] = ()

    @model_validator(mode="after")
    def _values(self) -> NodeSelectorRequirement:
        if self.operator in ("Gt", "Lt"):
            if len(self.values) != 1 or not re.fullmatch(r"-?[0-9]{1,18}", self.values[0]):
                raise ValueError(f"operator {self.operator} takes exactly one integer value")
        else:
            _check_values(self.operator, self.values)
        return self


def _check_values(operator: str, values: Sequence[str]) -> None:
    if operator in ("In", "NotIn") and not values:
        raise ValueError(f"operator {operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise ValueError(f"operator {operator} takes no values")


class LabelSelector(StrictModel):
    """Pods selected by their labels (``matchLabels`` and ``matchExpressions`` must all hold)."""

    matchLabels: dict[QualifiedName, LabelValue] = {}
    matchExpressions: tuple[LabelSelectorRequirement, ...] = ()


class NodeSelectorTerm(StrictModel):
    """Nodes matching every requirement of the term."""

    matchExpressions: tuple[NodeSelectorRequirement, ...] = ()
    matchFields: tuple[NodeSelectorRequirement, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> NodeSelectorTerm:
        if not self.matchExpressions and not self.matchFields:
            raise ValueError("a node selector term needs matchExpressions or matchFields")
        return self


class NodeSelector(StrictModel):
    """Nodes matching any of the terms."""

    nodeSelectorTerms: Annotated[tuple[NodeSelectorTerm, ...], Field(min_length=1)]


class PreferredSchedulingTerm(StrictModel):
    """A preference for nodes, with its weight (1-100)."""

    weight: Weight
    preference: NodeSelectorTerm


class NodeAffinity(StrictModel):
    """Which nodes the pod must, or should, run on."""

    requiredDuringSchedulingIgnoredDuringExecution: NodeSelector | None = None
    preferredDuringSchedulingIgnoredDuringExecution: tuple[PreferredSchedulingTerm, ...] = ()


class PodAffinityTerm(StrictModel):
    """Pods (by labels, in namespaces) that this pod must be near (or apart from), per topology
    domain (``topologyKey``, a node label such as ``kubernetes.io/hostname``)."""

    labelSelector: LabelSelector | None = None
    namespaces: tuple[ContainerName, ...] = ()
    namespaceSelector: LabelSelector | None = None
    topologyKey: QualifiedName


class WeightedPodAffinityTerm(StrictModel):
    """A preferred pod affinity term, with its weight (1-100)."""

    weight: Weight
    podAffinityTerm: PodAffinityTerm


class PodAffinity(StrictModel):
    """Pod affinity or anti-affinity: required and preferred terms."""

    requiredDuringSchedulingIgnoredDuringExecution: tuple[PodAffinityTerm, ...] = ()
    preferredDuringSchedulingIgnoredDuringExecution: tuple[WeightedPodAffinityTerm, ...] = ()


class Affinity(StrictModel):
    """Node and pod affinity, written exactly as in a Kubernetes pod spec (camelCase keys), so
    that it can be copied from the Kubernetes documentation; checked key by key at load."""

    nodeAffinity: NodeAffinity | None = None
    podAffinity: PodAffinity | None = None
    podAntiAffinity: PodAffinity | None = None
