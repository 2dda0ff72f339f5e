"""The fake volume controllers: PVC provisioning and binding, and PVC protection.

A new PVC becomes Bound (``spec.volumeName``, ``status.capacity``) after
``Timings.pvc_bind_delay``, as with a dynamic provisioner. Every PVC carries the
``kubernetes.io/pvc-protection`` finalizer, so deleting a PVC that a live pod uses only sets
its ``deletionTimestamp``; the finalizer is removed, and the PVC goes, once no
non-terminated pod refers to it any more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ._config import Timings
from ._defaults import PVC_PROTECTION
from ._events import NORMAL, EventRecorder
from ._resources import ResourceApi
from ._store import ADDED, DELETED, Change

JsonDict = dict[str, Any]
log = logging.getLogger(__name__)
_TERMINAL = ("Succeeded", "Failed")


def _claims(pod: JsonDict) -> list[str]:
    return [
        volume["persistentVolumeClaim"]["claimName"]
        for volume in (pod.get("spec") or {}).get("volumes") or ()
        if (volume.get("persistentVolumeClaim") or {}).get("claimName")
    ]


class VolumeController:
    def __init__(self, api: ResourceApi, recorder: EventRecorder, timings: Timings) -> None:
        self._api = api
        self._store = api.store
        self._recorder = recorder
        self._timings = timings
        self._timers: set[asyncio.TimerHandle] = set()

    def _later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        handle: asyncio.TimerHandle

        def run() -> None:
            self._timers.discard(handle)
            try:
                callback(*args)
            except Exception:
                log.exception("fake volume controller failed")

        handle = asyncio.get_running_loop().call_later(delay, run)
        self._timers.add(handle)

    def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def on_change(self, change: Change) -> None:
        if change.resource == "persistentvolumeclaims":
            metadata = change.obj["metadata"]
            if change.type == ADDED:
                self._later(
                    self._timings.pvc_bind_delay,
                    self._bind,
                    metadata["namespace"],
                    metadata["name"],
                    metadata["uid"],
                )
            elif change.type != DELETED and metadata.get("deletionTimestamp"):
                self._later(0.0, self._release_if_unused, metadata["namespace"], metadata["name"])
        elif change.resource == "pods":
            finished = change.type == DELETED or (change.obj.get("status") or {}).get("phase") in _TERMINAL
            if finished:
                namespace = change.obj["metadata"]["namespace"]
                for claim in _claims(change.obj):
                    self._later(0.0, self._release_if_unused, namespace, claim)

    def _bind(self, namespace: str, name: str, uid: str) -> None:
        pvc = self._store.get("persistentvolumeclaims", namespace, name)
        if pvc is None or pvc["metadata"]["uid"] != uid or pvc["metadata"].get("deletionTimestamp"):
            return
        volume = f"pvc-{uid}"

        def bind(new: JsonDict) -> None:
            spec = new["spec"]
            spec["volumeName"] = volume
            annotations = new["metadata"].setdefault("annotations", {})
            annotations["pv.kubernetes.io/bind-completed"] = "yes"
            annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
            annotations["volume.kubernetes.io/storage-provisioner"] = "fake.einfra.cz"
            new["status"] = {
                "phase": "Bound",
                "accessModes": list(spec.get("accessModes") or []),
                "capacity": {
                    "storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
                },
            }

        bound = self._api.update("persistentvolumeclaims", namespace, name, bind, uid=uid)
        if bound is not None:
            self._recorder.record(
                bound,
                NORMAL,
                "ProvisioningSucceeded",
                f"Successfully provisioned volume {volume}",
                component="fake.einfra.cz_provisioner",
            )

    def _in_use(self, namespace: str, claim: str) -> bool:
        return any(
            claim in _claims(pod)
            for pod in self._store.iter_objects("pods", namespace)
            if (pod.get("status") or {}).get("phase") not in _TERMINAL
        )

    def _release_if_unused(self, namespace: str, name: str) -> None:
        pvc = self._store.get("persistentvolumeclaims", namespace, name)
        if pvc is None or not pvc["metadata"].get("deletionTimestamp"):
            return
        if PVC_PROTECTION not in (pvc["metadata"].get("finalizers") or ()):
            return
        if self._in_use(namespace, name):
            return

        def release(new: JsonDict) -> None:
            finalizers = [f for f in new["metadata"].get("finalizers") or () if f != PVC_PROTECTION]
            if finalizers:
                new["metadata"]["finalizers"] = finalizers
            else:
                new["metadata"].pop("finalizers", None)

        updated = self._api.update("persistentvolumeclaims", namespace, name, release)
        if updated is not None and not updated["metadata"].get("finalizers"):
            self._api.remove("persistentvolumeclaims", namespace, name)
