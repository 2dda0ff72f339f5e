"""What the fake kubelet reports about one pod: its status and its events.

:func:`status_change` builds a pod status as a real kubelet writes it (container statuses with
image and container IDs, the five pod conditions, init containers reported as completed) from
the few facts the kubelet knows at a step of the pod's life: the phase, each container's state,
readiness, the pod IP, the restart count. :class:`PodHandle` binds one pod (namespace, name,
uid) to the API: it reads the pod fresh before every step, raising :class:`PodGone` once it is
deleted or replaced, records the kubelet's events about it and writes its status.
:mod:`._pod_life` walks a pod through its life with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ._config import full_image_reference
from ._defaults import now
from ._events import EventRecorder
from ._resources import ResourceApi

JsonDict = dict[str, Any]
_KUBELET = "kubelet"


class PodGone(Exception):
    """The pod was deleted or replaced while its task was working on it."""


def short_hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def image_id(image: str) -> str:
    """A digest-pinned reference like the runtime reports (the digest is made up)."""
    reference = full_image_reference(image)
    repository = reference.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: len(repository) - len(last) + last.index(":")]
    return f"{repository}@sha256:{short_hash(reference)}"


def containers(pod: JsonDict) -> list[JsonDict]:
    return list((pod.get("spec") or {}).get("containers") or [])


def init_containers(pod: JsonDict) -> list[JsonDict]:
    return list((pod.get("spec") or {}).get("initContainers") or [])


def status_change(
    pod: JsonDict,
    *,
    phase: str,
    states: dict[str, JsonDict],
    ready: bool,
    pod_ip: str | None,
    restarts: int,
    last_states: dict[str, JsonDict] | None,
    sandbox: bool,
    host_ip: str,
    timestamp: str,
) -> Callable[[JsonDict], None]:
    """The change that writes ``pod``'s status; ``states`` maps container names to their state.

    A condition whose status does not change keeps its ``lastTransitionTime``, so the change
    reads the stored pod it is applied to, not ``pod``.
    """
    uid = pod["metadata"]["uid"]
    statuses = []
    for container in containers(pod):
        name = container["name"]
        state = states.get(name, {"waiting": {"reason": "ContainerCreating"}})
        running = "running" in state
        created = "waiting" not in state or restarts > 0  # the image was pulled
        entry: JsonDict = {
            "name": name,
            "image": container["image"],
            "imageID": image_id(container["image"]) if created else "",
            "ready": ready and running,
            "restartCount": restarts,
            "started": running,
            "state": state,
            "lastState": (last_states or {}).get(name, {}),
        }
        if created:
            entry["containerID"] = "containerd://" + short_hash(uid, name, str(restarts))
        statuses.append(entry)
    unready = [s["name"] for s in statuses if not s["ready"]]

    def condition(type_: str, ok: bool, reason: str | None = None, message: str | None = None) -> JsonDict:
        entry: JsonDict = {
            "type": type_,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": timestamp,
        }
        if reason is not None and not ok:
            entry["reason"] = reason
        if message is not None and not ok:
            entry["message"] = message
        return entry

    not_ready_reason = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(phase, "ContainersNotReady")
    not_ready_message = f"containers with unready status: [{' '.join(unready)}]"
    conditions = [
        condition("PodReadyToStartContainers", sandbox),
        condition("Initialized", True),
        condition("Ready", not unready, not_ready_reason, not_ready_message),
        condition("ContainersReady", not unready, not_ready_reason, not_ready_message),
        condition("PodScheduled", True),
    ]

    def apply(new: JsonDict) -> None:
        status = new.setdefault("status", {})
        old_conditions = {c.get("type"): c for c in status.get("conditions") or ()}
        for entry in conditions:
            old = old_conditions.get(entry["type"])
            if old is not None and old.get("status") == entry["status"]:
                entry["lastTransitionTime"] = old.get("lastTransitionTime", timestamp)
        status.update(
            {
                "phase": phase,
                "conditions": conditions,
                "hostIP": host_ip,
                "hostIPs": [{"ip": host_ip}],
                "startTime": status.get("startTime") or timestamp,
                "containerStatuses": statuses,
            }
        )
        if init_containers(new):
            status["initContainerStatuses"] = [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": image_id(c["image"]),
                    "ready": True,
                    "restartCount": 0,
                    "started": False,
                    "containerID": "containerd://" + short_hash(uid, c["name"], "init"),
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": timestamp,
                            "finishedAt": timestamp,
                        }
                    },
                    "lastState": {},
                }
                for c in init_containers(new)
            ]
        if pod_ip is not None:
            status["podIP"] = pod_ip
            status["podIPs"] = [{"ip": pod_ip}]

    return apply


class PodHandle:
    """One bound pod, as the kubelet working on it reads it and writes about it."""

    def __init__(
        self, api: ResourceApi, recorder: EventRecorder, namespace: str, name: str, uid: str
    ) -> None:
        self._api = api
        self.store = api.store
        self._recorder = recorder
        self.namespace = namespace
        self.name = name
        self.uid = uid

    def read(self) -> JsonDict:
        """The pod as stored now; :class:`PodGone` once it is being deleted, gone or replaced."""
        pod = self.store.get("pods", self.namespace, self.name)
        if pod is None or pod["metadata"]["uid"] != self.uid or pod["metadata"].get("deletionTimestamp"):
            raise PodGone
        return pod

    def record(
        self, pod: JsonDict, type_: str, reason: str, message: str, container: str | None = None
    ) -> None:
        field_path = f"spec.containers{{{container}}}" if container else None
        self._recorder.record(
            pod,
            type_,
            reason,
            message,
            component=_KUBELET,
            host=pod["spec"].get("nodeName"),
            field_path=field_path,
        )

    def host_ip(self, node_name: str) -> str:
        node = self.store.get("nodes", "", node_name) or {}
        for address in (node.get("status") or {}).get("addresses") or ():
            if address.get("type") == "InternalIP":
                return str(address.get("address"))
        return "10.0.0.1"

    def write(
        self,
        pod: JsonDict,
        *,
        phase: str,
        states: dict[str, JsonDict],
        ready: bool = False,
        pod_ip: str | None = None,
        restarts: int = 0,
        last_states: dict[str, JsonDict] | None = None,
        sandbox: bool = True,
    ) -> JsonDict:
        """Write the pod status (see :func:`status_change`); the pod as written."""
        change = status_change(
            pod,
            phase=phase,
            states=states,
            ready=ready,
            pod_ip=pod_ip,
            restarts=restarts,
            last_states=last_states,
            sandbox=sandbox,
            host_ip=self.host_ip(pod["spec"]["nodeName"]),
            timestamp=now(),
        )
        updated = self._api.update("pods", self.namespace, self.name, change, uid=self.uid)
        if updated is None:
            raise PodGone
        return updated
