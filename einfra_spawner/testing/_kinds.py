"""The core/v1 resource types the fake API server serves, and what differs between them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """One resource type: its URL name, kind and the few behaviours that vary by type."""

    name: str  # the plural used in URLs, e.g. "pods"
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # Whether DELETE answers with the object (true for pods, PVCs, namespaces on a real
    # server) or with a Status "Success".
    returns_deleted_object: bool = False
    # Namespaces are DNS-1123 labels; everything else here is a DNS-1123 subdomain.
    name_is_label: bool = False

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


RESOURCES: dict[str, ResourceInfo] = {
    info.name: info
    for info in (
        ResourceInfo("pods", "Pod", True, ("po",), returns_deleted_object=True),
        ResourceInfo(
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            True,
            ("pvc",),
            returns_deleted_object=True,
        ),
        ResourceInfo(
            "persistentvolumes",
            "PersistentVolume",
            False,
            ("pv",),
            returns_deleted_object=True,
        ),
        ResourceInfo("secrets", "Secret", True),
        ResourceInfo("configmaps", "ConfigMap", True, ("cm",)),
        ResourceInfo("events", "Event", True, ("ev",)),
        ResourceInfo("nodes", "Node", False, ("no",)),
        ResourceInfo(
            "namespaces",
            "Namespace",
            False,
            ("ns",),
            returns_deleted_object=True,
            name_is_label=True,
        ),
    )
}

# Verbs counted by the request statistics and advertised in discovery.
VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
