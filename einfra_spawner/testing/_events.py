"""core/v1 Events written by the fake scheduler, kubelet and controllers.

The events look like the ones a real cluster writes (``involvedObject``, ``reason``,
``message``, ``type``, ``count``, first/last timestamps, ``source.component``), so a client
that watches events to explain a pending pod (FailedScheduling, Failed to pull image...) can
be tested against them. Repeats of an identical event bump ``count`` and ``lastTimestamp``
(a MODIFIED event), like the real event recorder's aggregation.
"""

from __future__ import annotations

import time
from typing import Any

from ._defaults import now
from ._resources import ResourceApi
from ._status import ApiError

JsonDict = dict[str, Any]
NORMAL = "Normal"
WARNING = "Warning"


class EventRecorder:
    def __init__(self, api: ResourceApi) -> None:
        self._api = api
        # uid -> (type, reason, message, component) -> event name, for aggregation.
        self._names: dict[str, dict[tuple[str, ...], str]] = {}
        self._sequence = 0

    def record(
        self,
        obj: JsonDict,
        type_: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str | None = None,
        field_path: str | None = None,
    ) -> None:
        """Record an event about ``obj`` (a pod, PVC or node)."""
        metadata = obj["metadata"]
        namespace = metadata.get("namespace") or "default"
        names = self._names.setdefault(metadata["uid"], {})
        key = (type_, reason, message, component)
        timestamp = now()
        name = names.get(key)
        if name is not None:

            def bump(event: JsonDict) -> None:
                event["count"] = int(event.get("count", 1)) + 1
                event["lastTimestamp"] = timestamp

            if self._api.update("events", namespace, name, bump) is not None:
                return
        involved: JsonDict = {
            "apiVersion": "v1",
            "kind": obj.get("kind", "Pod"),
            "name": metadata["name"],
            "uid": metadata["uid"],
            "resourceVersion": metadata.get("resourceVersion", ""),
        }
        if metadata.get("namespace"):
            involved["namespace"] = metadata["namespace"]
        if field_path is not None:
            involved["fieldPath"] = field_path
        self._sequence += 1
        # Real names are "<object>.<hex timestamp>"; the sequence keeps them unique here.
        name = f"{metadata['name']}.{time.time_ns() + self._sequence:x}"
        source: JsonDict = {"component": component}
        if host is not None:
            source["host"] = host
        event: JsonDict = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "count": 1,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "source": source,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        try:
            self._api.create("events", namespace, event, trusted=True)
        except ApiError:
            return  # the namespace is gone: nobody can read the event anyway
        names[key] = name

    def forget(self, uid: str) -> None:
        """Drop aggregation keys of a removed object (its events stay, as in a cluster)."""
        self._names.pop(uid, None)
