"""What the Kubernetes backend runs, for the reconciler: pure, from the shared pod cache.

Only pods carrying this project's ``managed-by`` label, the instance's name and both owner
labels are reported: a pod another hub instance (or a person) made in the same namespace is
never counted, so never removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from einfra_spawner.backend import ServerRecord
from einfra_spawner.render import ANNOTATION_SERVER, ANNOTATION_USER, LABEL_SERVER, LABEL_USER

__all__ = ["INSTANCE", "MANAGED_BY", "records_from_pods"]

#: The label (key, value) on everything this project makes.
MANAGED_BY = ("app.kubernetes.io/managed-by", "einfra-spawner")
#: The label naming the hub instance a pod belongs to.
INSTANCE = "app.kubernetes.io/instance"
_FINISHED = ("Succeeded", "Failed")


def _timestamp(text: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 time such as ``2026-12-01T10:00:00Z``."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def records_from_pods(pods: Iterable[dict[str, Any]], instance: str) -> list[ServerRecord]:
    """The servers of ``instance`` among ``pods`` (as the watch cache keeps them). A pod being
    deleted is left out: its removal is under way."""
    found = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if labels.get(MANAGED_BY[0]) != MANAGED_BY[1] or labels.get(INSTANCE) != instance:
            continue
        server_label, user_label = labels.get(LABEL_SERVER), labels.get(LABEL_USER)
        created = _timestamp(metadata.get("creationTimestamp"))
        if not server_label or not user_label or created is None or metadata.get("deletionTimestamp"):
            continue
        annotations = metadata.get("annotations") or {}
        namespace, name = metadata.get("namespace"), metadata.get("name")
        found.append(
            ServerRecord(
                server_label=str(server_label),
                user_label=str(user_label),
                created=created,
                running=(pod.get("status") or {}).get("phase") not in _FINISHED,
                ref={"namespace": namespace, "pod": name, "uid": metadata.get("uid")},
                description=f"pod {namespace}/{name}",
                user=annotations.get(ANNOTATION_USER),
                server=annotations.get(ANNOTATION_SERVER),
            )
        )
    return found
