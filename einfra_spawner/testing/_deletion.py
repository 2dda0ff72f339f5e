"""How objects leave the fake API server: grace periods, finalizers, the namespace controller.

Deletion follows the real server: an object with finalizers only gets a ``deletionTimestamp``
(MODIFIED) until the last finalizer is removed; a scheduled pod is deleted gracefully
(``deletionTimestamp`` plus ``deletionGracePeriodSeconds``) and removed by the fake kubelet once
its containers have stopped; an unscheduled or finished pod, or a grace period of 0, is removed
at once. Deleting a namespace removes everything in it, then the namespace.

:class:`Deletion` belongs to one :class:`._resources.ResourceApi`, which hands it DELETE
requests, the kubelet's "containers stopped" reports and the controllers' removals, and asks it
after every update whether an object being deleted may now go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._defaults import now, timestamp_in
from ._kinds import RESOURCES, ResourceInfo
from ._status import conflict
from ._store import Store

JsonDict = dict[str, Any]
PodDeletionHook = Callable[[JsonDict], None]
# ResourceApi.update: write a changed copy of (resource, namespace, name); None if it is gone.
Update = Callable[[str, str, str, Callable[[JsonDict], None]], JsonDict | None]

_TERMINAL_PHASES = ("Succeeded", "Failed")


class Deletion:
    """The deletion rules over a :class:`Store`, and the pods whose containers have stopped."""

    def __init__(self, store: Store, update: Update) -> None:
        self._store = store
        self._update = update
        # Called when a scheduled pod starts graceful deletion; set by the fake kubelet.
        self.on_pod_deletion: PodDeletionHook | None = None
        # Pods whose containers are stopped but whose finalizers still hold the object.
        self._pods_stopped: set[str] = set()

    def remove(self, resource: str, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Remove an object now; False if it is gone (or replaced: other uid)."""
        old = self._store.get(resource, namespace, name)
        if old is None or (uid is not None and old["metadata"]["uid"] != uid):
            return False
        self._pods_stopped.discard(old["metadata"]["uid"])
        self._store.remove(resource, namespace, name)
        return True

    def pod_stopped(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet has stopped a deleted pod's containers: remove it unless finalizers hold it."""
        pod = self._store.get("pods", namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        if pod["metadata"].get("finalizers"):
            self._pods_stopped.add(uid)
        else:
            self.remove("pods", namespace, name, uid=uid)

    def removable(self, info: ResourceInfo, obj: JsonDict) -> bool:
        """Whether an object being deleted may now go: no finalizers, containers stopped."""
        metadata = obj["metadata"]
        if not metadata.get("deletionTimestamp") or metadata.get("finalizers"):
            return False
        if info.kind == "Pod":
            return (
                metadata["uid"] in self._pods_stopped
                or not obj.get("spec", {}).get("nodeName")
                or obj.get("status", {}).get("phase") in _TERMINAL_PHASES
            )
        return True

    def delete(
        self,
        info: ResourceInfo,
        namespace: str,
        obj: JsonDict,
        *,
        grace_period: int | None,
        preconditions: JsonDict | None,
    ) -> JsonDict:
        """A DELETE of ``obj`` (stored under ``namespace``, "" for cluster-wide kinds): the object
        as it is after the request, marked as being deleted or already gone."""
        metadata = obj["metadata"]
        name = metadata["name"]
        if preconditions:
            for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = preconditions.get(key)
                if wanted is not None and wanted != metadata.get(key):
                    raise conflict(
                        info.name,
                        name,
                        f"Precondition failed: {label} in precondition: {wanted}, {label} in "
                        f"object meta: {metadata.get(key)}",
                    )
        if grace_period is not None and grace_period < 0:
            grace_period = 0
        if info.kind == "Pod":
            return self._delete_pod(obj, grace_period)
        if info.kind == "Namespace":
            return self._delete_namespace(obj)
        if metadata.get("finalizers"):
            if not metadata.get("deletionTimestamp"):
                return self._mark_deleting(info, namespace, obj, 0)
            return obj
        self._store.remove(info.name, namespace, name)
        return obj

    def _mark_deleting(self, info: ResourceInfo, ns: str, obj: JsonDict, grace: int) -> JsonDict:
        def mark(new: JsonDict) -> None:
            new["metadata"]["deletionTimestamp"] = timestamp_in(grace)
            new["metadata"]["deletionGracePeriodSeconds"] = grace

        updated = self._update(info.name, ns, obj["metadata"]["name"], mark)
        assert updated is not None  # the object was read just before
        return updated

    def _delete_pod(self, pod: JsonDict, grace_period: int | None) -> JsonDict:
        metadata = pod["metadata"]
        ns, name = metadata["namespace"], metadata["name"]
        spec, status = pod.get("spec", {}), pod.get("status", {})
        grace = grace_period
        if grace is None:
            grace = int(spec.get("terminationGracePeriodSeconds", 30))
        if not spec.get("nodeName") or status.get("phase") in _TERMINAL_PHASES:
            grace = 0  # nothing runs: a real server deletes such pods at once
        current = metadata.get("deletionGracePeriodSeconds")
        if metadata.get("deletionTimestamp") and current is not None and grace >= current:
            return pod  # already terminating at least as fast
        if grace == 0 and not metadata.get("finalizers"):
            final = self._store.remove("pods", ns, name).obj
            self._pods_stopped.discard(metadata["uid"])
            return final
        updated = self._mark_deleting(RESOURCES["pods"], ns, pod, grace)
        if spec.get("nodeName") and self.on_pod_deletion is not None:
            self.on_pod_deletion(updated)
        elif self.removable(RESOURCES["pods"], updated):
            self.remove("pods", ns, name)
        return updated

    def _delete_namespace(self, namespace: JsonDict) -> JsonDict:
        name = namespace["metadata"]["name"]

        def terminating(new: JsonDict) -> None:
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["status"] = {"phase": "Terminating"}

        updated = self._update("namespaces", "", name, terminating) or namespace
        # The namespace controller: everything in it goes at once, then the namespace.
        for info in RESOURCES.values():
            if info.namespaced:
                for obj in self._store.items(info.name, name):
                    self._store.remove(info.name, name, obj["metadata"]["name"])
        self._store.remove("namespaces", "", name)
        return updated
