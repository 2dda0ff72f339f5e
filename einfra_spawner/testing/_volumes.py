"""The fake volume controllers: PVC provisioning and binding, and PVC protection.

A new PVC becomes Bound (``spec.volumeName``, ``status.capacity``) after
``Timings.pvc_bind_delay``, as with a dynamic provisioner. A PVC that names its
PersistentVolume (``spec.volumeName``, a static volume) binds to that PV only, once it exists and
its ``claimRef`` (if any) names this claim: the PV becomes Bound, and Released when the claim
goes. Every PVC carries the
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
        if change.resource == "persistentvolumes" and change.type == ADDED:
            self._bind_waiting_for(change.obj["metadata"]["name"])
        elif change.resource == "persistentvolumeclaims":
            metadata = change.obj["metadata"]
            volume = (change.obj.get("spec") or {}).get("volumeName")
            if change.type == DELETED and volume:
                self._later(0.0, self._release_volume, volume, metadata["uid"])
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

    def _bind_waiting_for(self, volume: str) -> None:
        for pvc in list(self._store.iter_objects("persistentvolumeclaims", None)):
            if (pvc.get("spec") or {}).get("volumeName") == volume and (pvc.get("status") or {}).get(
                "phase"
            ) != "Bound":
                metadata = pvc["metadata"]
                self._later(0.0, self._bind, metadata["namespace"], metadata["name"], metadata["uid"])

    def _bind_static(self, pvc: JsonDict, volume: str) -> None:
        """Bind a claim to the PersistentVolume it names, if that volume is there and free."""
        metadata = pvc["metadata"]
        pv = self._store.get("persistentvolumes", "", volume)
        if pv is None:
            return  # Pending until the volume exists
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        if ref and (ref.get("namespace"), ref.get("name")) != (metadata["namespace"], metadata["name"]):
            return
        if ref.get("uid") and ref["uid"] != metadata["uid"]:
            return  # bound to an earlier claim of that name: Released, never re-bound on its own

        def bind_volume(new: JsonDict) -> None:
            new["spec"]["claimRef"] = {
                "kind": "PersistentVolumeClaim",
                "namespace": metadata["namespace"],
                "name": metadata["name"],
                "uid": metadata["uid"],
            }
            new["status"] = {"phase": "Bound"}

        self._api.update("persistentvolumes", "", volume, bind_volume)
        capacity = ((pv.get("spec") or {}).get("capacity") or {}).get("storage", "1Gi")

        def bind_claim(new: JsonDict) -> None:
            annotations = new["metadata"].setdefault("annotations", {})
            annotations["pv.kubernetes.io/bind-completed"] = "yes"
            new["status"] = {
                "phase": "Bound",
                "accessModes": list(new["spec"].get("accessModes") or []),
                "capacity": {"storage": capacity},
            }

        self._api.update(
            "persistentvolumeclaims", metadata["namespace"], metadata["name"], bind_claim, uid=metadata["uid"]
        )

    def _release_volume(self, volume: str, claim_uid: str) -> None:
        pv = self._store.get("persistentvolumes", "", volume)
        if pv is None or ((pv.get("spec") or {}).get("claimRef") or {}).get("uid") != claim_uid:
            return

        def release(new: JsonDict) -> None:
            new["status"] = {"phase": "Released"}

        self._api.update("persistentvolumes", "", volume, release)

    def _bind(self, namespace: str, name: str, uid: str) -> None:
        pvc = self._store.get("persistentvolumeclaims", namespace, name)
        if pvc is None or pvc["metadata"]["uid"] != uid or pvc["metadata"].get("deletionTimestamp"):
            return
        preset = (pvc.get("spec") or {}).get("volumeName")
        if preset:
            self._bind_static(pvc, preset)
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
