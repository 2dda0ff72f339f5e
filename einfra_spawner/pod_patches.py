"""What a ``pod_patch`` or ``container_patch`` of the pod settings may change, checked at load.

The two escape hatches of :class:`~einfra_spawner.pod_settings.PodSettings` are JSON merge
patches (RFC 7386) applied after rendering (:mod:`.render_pod`). This module holds their
per-level rules: a size limit, finite numbers only, and the paths of the rendered pod and keys of
the notebook container they must not reach (our identity, what the backend's life cycle relies
on, the lists other settings render). Whether a patched pod still meets the instance's Pod
Security Standard depends on all three levels together: :func:`.render_pod.pod_patch_problems`
checks that once the instance is loaded. Pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from pydantic import JsonValue, StrictStr, WithJsonSchema

from .labels import is_ours

__all__ = ["Patch", "check_container_patch", "check_keys", "check_pod_patch"]

#: A JSON merge patch: a mapping of any JSON values (in the schema, an object of anything).
Patch = Annotated[dict[StrictStr, JsonValue], WithJsonSchema({"type": "object"})]

_MAX_PATCH_CHARS = 65536

#: Paths of the rendered pod a ``pod_patch`` must not reach: our identity, what the backend's
#: life cycle relies on (a pod that is never restarted in place; deletion that no finalizer
#: holds up), and what the other settings render as whole lists (a merge patch replaces a list
#: as a whole).
_PROTECTED_POD_PATHS = (
    ("apiVersion",),
    ("kind",),
    ("status",),
    ("metadata", "name"),
    ("metadata", "generateName"),
    ("metadata", "namespace"),
    ("metadata", "finalizers"),
    ("spec", "restartPolicy"),
    ("spec", "containers"),
    ("spec", "initContainers"),
    ("spec", "volumes"),
    ("spec", "tolerations"),
    ("spec", "imagePullSecrets"),
)
#: Keys of the notebook container a ``container_patch`` must not reach: what the user chose
#: (image, resources), what the hub needs (the command, its environment, the port), and lists
#: the renderer owns.
_PROTECTED_CONTAINER_KEYS = ("name", "image", "args", "command", "env", "ports", "resources", "volumeMounts")


def check_keys(keys: Iterable[str], what: str) -> None:
    """Refuse any of ``keys`` (label or annotation keys) that einfra-spawner sets itself."""
    for key in keys:
        if is_ours(key):
            raise ValueError(f"{what} {key!r} is set by einfra-spawner itself and cannot be changed")


def _reaches(patch: Any, path: Sequence[str]) -> bool:
    """Whether applying ``patch`` may change the value at ``path`` (a merge patch that sets a
    parent to a non-mapping, ``null`` included, replaces everything under it)."""
    current = patch
    for key in path:
        if not isinstance(current, dict):
            return True
        if key not in current:
            return False
        current = current[key]
    return True


def _check_size_and_numbers(patch: dict[str, Any], what: str) -> None:
    text = json.dumps(patch, sort_keys=True, allow_nan=True)
    if len(text) > _MAX_PATCH_CHARS:
        raise ValueError(f"{what} is longer than {_MAX_PATCH_CHARS} characters as JSON")
    if _has_non_finite(patch):
        raise ValueError(f"{what} holds a number that is not finite (.nan or .inf)")


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def check_pod_patch(patch: dict[str, Any]) -> None:
    """Refuse a ``pod_patch`` that is too large, holds a non-finite number, reaches a protected
    path, or sets or replaces our labels and annotations."""
    _check_size_and_numbers(patch, "pod_patch")
    for path in _PROTECTED_POD_PATHS:
        if _reaches(patch, path):
            raise ValueError(f"pod_patch may not change {'.'.join(path)}")
    metadata = patch.get("metadata")
    for section in ("labels", "annotations"):
        if _reaches(patch, ("metadata", section)):
            inner = metadata.get(section) if isinstance(metadata, dict) else None
            if not isinstance(inner, dict):
                raise ValueError(f"pod_patch may not replace metadata.{section} as a whole")
            check_keys(inner, section[:-1])


def check_container_patch(patch: dict[str, Any]) -> None:
    """Refuse a ``container_patch`` that is too large, holds a non-finite number, or changes a
    key of the notebook container the renderer owns."""
    _check_size_and_numbers(patch, "container_patch")
    for key in _PROTECTED_CONTAINER_KEYS:
        if key in patch:
            raise ValueError(f"container_patch may not change {key}")
