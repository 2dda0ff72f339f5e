"""The fake scheduler: places pods on nodes the way kube-scheduler's default filters do.

For each new pod (after ``Timings.schedule_delay``) it checks the pod's PVCs, then every Node
object: unschedulable, nodeSelector and required node affinity, untolerated NoSchedule and
NoExecute taints, and resource fit (requests of cpu, memory, pods and extended resources such
as ``nvidia.com/gpu`` against allocatable minus the requests of non-terminated pods bound to
the node). A pod that fits is bound (``spec.nodeName``, condition PodScheduled, event
Scheduled) and handed to the fake kubelet. One that does not stays Pending with condition
PodScheduled=False/Unschedulable and a Warning FailedScheduling event whose message has the
real scheduler's form, and is retried whenever capacity frees up.

Bookkeeping of allocated resources is incremental (updated from store changes), so placing a
pod does not re-add the requests of every pod in the cluster; amounts are integers in
nano-units (the smallest quantity suffix), exact and much cheaper than fractions.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from ._config import Timings
from ._defaults import now
from ._events import WARNING, EventRecorder
from ._quantities import QuantityError, parse_quantity
from ._resources import ResourceApi
from ._store import ADDED, DELETED, Change

JsonDict = dict[str, Any]
log = logging.getLogger(__name__)

_TERMINAL = ("Succeeded", "Failed")
_NOT_HELPFUL = "Preemption is not helpful for scheduling"
_NO_VICTIMS = "No preemption victims found for incoming pod"
_WAIT = "wait"  # an unbound PVC: retry silently once it is bound
_NANO = 10**9


Amounts = dict[str, int]  # resource name -> amount in nano-units


def pod_requests(spec: JsonDict) -> Amounts:
    """The pod's effective requests: the sum over containers, at least each init container's."""
    total: Amounts = {}
    for container in spec.get("containers") or ():
        for name, value in ((container.get("resources") or {}).get("requests") or {}).items():
            total[name] = total.get(name, 0) + _quantity(value)
    for container in spec.get("initContainers") or ():
        for name, value in ((container.get("resources") or {}).get("requests") or {}).items():
            total[name] = max(total.get(name, 0), _quantity(value))
    total["pods"] = _NANO
    return total


def _add(target: Amounts, amounts: Amounts, sign: int) -> None:
    for name, amount in amounts.items():
        target[name] = target.get(name, 0) + sign * amount


def _quantity(value: object) -> int:
    try:
        return math.ceil(parse_quantity(value) * _NANO)
    except QuantityError:
        return 0  # only reachable with validation switched off


def _tolerates(tolerations: list[JsonDict], taint: JsonDict) -> bool:
    for toleration in tolerations:
        effect = toleration.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        operator = toleration.get("operator") or "Equal"
        key = toleration.get("key") or ""
        if operator == "Exists" and (not key or key == taint.get("key")):
            return True
        if key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expression_matches(expression: JsonDict, labels: dict[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator")
    values = expression.get("values") or []
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and values:
        try:
            actual, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return actual > bound if operator == "Gt" else actual < bound
    return False


def _affinity_matches(spec: JsonDict, node: JsonDict) -> bool:
    labels = node["metadata"].get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    for term in required.get("nodeSelectorTerms") or ():
        expressions = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if all(_expression_matches(e, labels) for e in expressions) and all(
            _expression_matches(f, {"metadata.name": node["metadata"]["name"]}) for f in fields
        ):
            return True
    return False


class Scheduler:
    """Binds pods to nodes; ``on_bound`` (the kubelet) is called with each bound pod."""

    def __init__(
        self,
        api: ResourceApi,
        recorder: EventRecorder,
        timings: Timings,
        *,
        on_bound: Callable[[JsonDict], None],
    ) -> None:
        self._api = api
        self._store = api.store
        self._recorder = recorder
        self._timings = timings
        self._on_bound = on_bound
        self._pending: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid, in order
        self._assigned: dict[str, tuple[str, Amounts]] = {}  # pod uid -> node, requests
        self._allocated: dict[str, Amounts] = {}
        self._allocatable: dict[str, tuple[str, Amounts]] = {}  # node -> (rv, parsed)
        self._timers: set[asyncio.TimerHandle] = set()
        self._retry_handle: asyncio.Handle | None = None

    # --- bookkeeping from store changes (no writes here, see _store) ----------------------

    def on_change(self, change: Change) -> None:
        if change.resource == "pods":
            self._pod_changed(change)
        elif change.resource in ("nodes", "persistentvolumeclaims") and self._pending:
            self._request_retry()

    def _pod_changed(self, change: Change) -> None:
        pod = change.obj
        metadata, spec = pod["metadata"], pod.get("spec") or {}
        uid = metadata["uid"]
        finished = change.type == DELETED or (pod.get("status") or {}).get("phase") in _TERMINAL
        if finished:
            self._pending.pop((metadata["namespace"], metadata["name"]), None)
            assigned = self._assigned.pop(uid, None)
            if assigned is not None:
                _add(self._allocated[assigned[0]], assigned[1], -1)
                if self._pending:
                    self._request_retry()
            return
        node = spec.get("nodeName")
        if node and uid not in self._assigned:
            requests = pod_requests(spec)
            self._assigned[uid] = (node, requests)
            _add(self._allocated.setdefault(node, {}), requests, 1)
            if change.type == ADDED:
                # Created with spec.nodeName: no scheduling, the node's kubelet takes it.
                self._later(0.0, self._on_bound, pod)
        elif change.type == ADDED and not node and spec.get("schedulerName") == "default-scheduler":
            self._later(
                self._timings.schedule_delay, self._attempt, metadata["namespace"], metadata["name"], uid
            )

    def _later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def run() -> None:
            self._timers.discard(handle)
            try:
                callback(*args)
            except Exception:
                log.exception("fake scheduler: %s failed", getattr(callback, "__name__", callback))

        handle = loop.call_later(delay, run)
        self._timers.add(handle)

    def _request_retry(self) -> None:
        if self._retry_handle is None:
            self._retry_handle = asyncio.get_running_loop().call_soon(self._retry_pending)

    def _retry_pending(self) -> None:
        self._retry_handle = None
        for (namespace, name), uid in list(self._pending.items()):
            self._attempt(namespace, name, uid)

    def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None

    @property
    def pending(self) -> list[tuple[str, str]]:
        """(namespace, name) of pods waiting for a node."""
        return list(self._pending)

    # --- placement ---------------------------------------------------------------------------

    def _node_allocatable(self, node: JsonDict) -> Amounts:
        name, rv = node["metadata"]["name"], node["metadata"].get("resourceVersion", "")
        cached = self._allocatable.get(name)
        if cached is not None and cached[0] == rv:
            return cached[1]
        parsed = {
            key: _quantity(value)
            for key, value in ((node.get("status") or {}).get("allocatable") or {}).items()
        }
        self._allocatable[name] = (rv, parsed)
        return parsed

    def _pvc_problem(self, pod: JsonDict) -> str | None:
        namespace = pod["metadata"]["namespace"]
        for volume in (pod.get("spec") or {}).get("volumes") or ():
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            pvc = self._store.get("persistentvolumeclaims", namespace, claim)
            if pvc is None:
                return f'persistentvolumeclaim "{claim}" not found'
            if pvc["metadata"].get("deletionTimestamp"):
                return f'persistentvolumeclaim "{claim}" is being deleted'
            if (pvc.get("status") or {}).get("phase") != "Bound":
                return _WAIT
        return None

    def _filter(self, pod: JsonDict, node: JsonDict, requests: Amounts) -> tuple[list[str], bool]:
        """Why the pod does not fit on this node (empty: it fits); and whether only resources."""
        spec = pod.get("spec") or {}
        node_spec = node.get("spec") or {}
        if node_spec.get("unschedulable"):
            return ["node(s) were unschedulable"], False
        if not _affinity_matches(spec, node):
            return ["node(s) didn't match Pod's node affinity/selector"], False
        tolerations = spec.get("tolerations") or []
        for taint in node_spec.get("taints") or ():
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, taint):
                return [
                    f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
                ], False
        allocatable = self._node_allocatable(node)
        allocated = self._allocated.get(node["metadata"]["name"], {})
        reasons = []
        for name, amount in sorted(requests.items()):
            if amount and allocated.get(name, 0) + amount > allocatable.get(name, 0):
                reasons.append("Too many pods" if name == "pods" else f"Insufficient {name}")
        return reasons, True

    def _failure_message(self, nodes: int, reasons: Counter[str], victims: Counter[str]) -> str:
        if nodes == 0:
            return "no nodes available to schedule pods"
        listed = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
        preemption = ", ".join(sorted(f"{count} {reason}" for reason, count in victims.items()))
        return (
            f"0/{nodes} nodes are available: {listed}. preemption: 0/{nodes} nodes are "
            f"available: {preemption}."
        )

    def _attempt(self, namespace: str, name: str, uid: str) -> None:
        pod = self._store.get("pods", namespace, name)
        if (
            pod is None
            or pod["metadata"]["uid"] != uid
            or pod["metadata"].get("deletionTimestamp")
            or (pod.get("spec") or {}).get("nodeName")
        ):
            self._pending.pop((namespace, name), None)
            return
        nodes = self._store.items("nodes")
        problem = self._pvc_problem(pod)
        if problem == _WAIT:
            self._pending[(namespace, name)] = uid
            return
        if problem is not None:
            count = len(nodes)
            self._unschedulable(
                pod,
                f"0/{count} nodes are available: {problem}. preemption: "
                f"0/{count} nodes are available: {count} {_NOT_HELPFUL}.",
            )
            return
        requests = pod_requests(pod.get("spec") or {})
        reasons: Counter[str] = Counter()
        victims: Counter[str] = Counter()
        best: tuple[float, str] | None = None
        for node in nodes:
            why, only_resources = self._filter(pod, node, requests)
            if why:
                reasons.update(why)
                victims[_NO_VICTIMS if only_resources else _NOT_HELPFUL] += 1
                continue
            score = self._free_share(node, requests)
            if best is None or score > best[0]:  # ties: the first node by name
                best = (score, node["metadata"]["name"])
        if best is None:
            self._unschedulable(pod, self._failure_message(len(nodes), reasons, victims))
            return
        self._bind(pod, best[1])

    def _free_share(self, node: JsonDict, requests: Amounts) -> float:
        """kube-scheduler's LeastAllocated idea: prefer the node left with most CPU and memory."""
        allocatable = self._node_allocatable(node)
        allocated = self._allocated.get(node["metadata"]["name"], {})
        share = 0.0
        for name in ("cpu", "memory"):
            if allocatable.get(name):
                used = allocated.get(name, 0) + requests.get(name, 0)
                share += 1 - used / allocatable[name]
        return share

    def _unschedulable(self, pod: JsonDict, message: str) -> None:
        metadata = pod["metadata"]
        self._pending[(metadata["namespace"], metadata["name"])] = metadata["uid"]
        conditions = (pod.get("status") or {}).get("conditions") or []
        current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        if current is None or current.get("message") != message:

            def mark(new: JsonDict) -> None:
                status = new.setdefault("status", {})
                others = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
                status["conditions"] = [
                    *others,
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastProbeTime": None,
                        "lastTransitionTime": now(),
                    },
                ]

            updated = self._api.update(
                "pods", metadata["namespace"], metadata["name"], mark, uid=metadata["uid"]
            )
            pod = updated or pod
        self._recorder.record(pod, WARNING, "FailedScheduling", message, component="default-scheduler")

    def _bind(self, pod: JsonDict, node: str) -> None:
        metadata = pod["metadata"]
        self._pending.pop((metadata["namespace"], metadata["name"]), None)

        def bind(new: JsonDict) -> None:
            new["spec"]["nodeName"] = node
            status = new.setdefault("status", {})
            others = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            status["conditions"] = [
                *others,
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now(),
                },
            ]

        bound = self._api.update("pods", metadata["namespace"], metadata["name"], bind, uid=metadata["uid"])
        if bound is None:
            return
        self._recorder.record(
            bound,
            "Normal",
            "Scheduled",
            f"Successfully assigned {metadata['namespace']}/{metadata['name']} to {node}",
            component="default-scheduler",
        )
        self._on_bound(bound)
