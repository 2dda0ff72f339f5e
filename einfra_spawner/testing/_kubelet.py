"""The fake kubelet: brings bound pods to Running (or to a realistic failure) and stops them.

One asyncio task per bound pod walks the states a real node shows, writing the pod status and
core/v1 events at each step:

1. ContainerCreating (hostIP, startTime). A missing Secret or ConfigMap volume keeps the pod
   there with a Warning FailedMount event; a missing one in ``env``/``envFrom`` gives
   CreateContainerConfigError. The pod continues when the object appears.
2. Pulling, then after ``Timings.running_delay`` Pulled (or "already present on machine" when
   the node has the image), Created, Started, and phase Running with podIP, containerStatuses
   and the Ready conditions. Images listed as pull failures give Failed / ErrImagePull, BackOff
   / ImagePullBackOff, over and over, and the pod stays Pending.
3. Images listed as crashing (or, in process mode, a process that exits) terminate the
   container with its exit code: restartPolicy Never ends in phase Failed (Succeeded for exit
   code 0), otherwise the container waits in CrashLoopBackOff and restarts with a growing
   back-off and restartCount.

A graceful delete cancels the pod's task, stops its process (process mode) or waits the
scaled grace period, then removes the pod.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Coroutine
from typing import Any

from ._config import ImageRules, Timings, full_image_reference
from ._defaults import now
from ._events import NORMAL, WARNING, EventRecorder
from ._podenv import config_problem, container_environment
from ._processes import ProcessRunner, ProcessStartError
from ._resources import ResourceApi
from ._store import DELETED, Change

JsonDict = dict[str, Any]
log = logging.getLogger(__name__)
_KUBELET = "kubelet"
_MAX_BACKOFF = 300.0


class _PodGone(Exception):
    """The pod was deleted or replaced while its task was working on it."""


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _image_id(image: str) -> str:
    """A digest-pinned reference like the runtime reports (the digest is made up)."""
    reference = full_image_reference(image)
    repository = reference.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: len(repository) - len(last) + last.index(":")]
    return f"{repository}@sha256:{_short_hash(reference)}"


def _containers(pod: JsonDict) -> list[JsonDict]:
    return list((pod.get("spec") or {}).get("containers") or [])


def _init_containers(pod: JsonDict) -> list[JsonDict]:
    return list((pod.get("spec") or {}).get("initContainers") or [])


class Kubelet:
    """The kubelets of all fake nodes (one object: nodes differ only in their name)."""

    def __init__(
        self,
        api: ResourceApi,
        recorder: EventRecorder,
        timings: Timings,
        *,
        pull_failures: ImageRules,
        crashing_images: ImageRules,
        processes: ProcessRunner | None,
        wait_for_port: bool = False,
    ) -> None:
        self._api = api
        self._store = api.store
        self._recorder = recorder
        self._timings = timings
        self._pull_failures = pull_failures
        self._crashing = crashing_images
        self.processes = processes
        self._wait_for_port = wait_for_port
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._terminations: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._images_on_node: dict[str, set[str]] = {}
        self._pod_ips: dict[str, str] = {}
        self._ip_counters: dict[str, int] = {}
        self._config_waiters: dict[str, asyncio.Event] = {}
        self._closing = False

    # --- task management -------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fake kubelet task failed", exc_info=task.exception())

    def start(self, pod: JsonDict) -> None:
        """Run a pod that was just bound to a node."""
        metadata = pod["metadata"]
        uid = metadata["uid"]
        if self._closing or uid in self._runs:
            return
        self._runs[uid] = self._spawn(self._run(metadata["namespace"], metadata["name"], uid))

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.processes is not None:
            await self.processes.close()

    # --- reactions to store changes (no writes here, see _store) --------------------------

    def on_change(self, change: Change) -> None:
        if change.resource in ("secrets", "configmaps"):
            for event in self._config_waiters.values():
                event.set()
        elif change.resource == "pods" and change.type == DELETED:
            uid = change.obj["metadata"]["uid"]
            run = self._runs.pop(uid, None)
            if run is not None:
                run.cancel()
            termination = self._terminations.pop(uid, None)
            if termination is not None and termination is not asyncio.current_task():
                termination.cancel()
            self._pod_ips.pop(uid, None)
            self._config_waiters.pop(uid, None)
            self._recorder.forget(uid)
            if self.processes is not None and not self._closing:
                self._spawn(self._discard_process(uid))

    async def _discard_process(self, uid: str) -> None:
        """After removal: kill what is left (a grace-0 delete) and remove the pod's folder."""
        assert self.processes is not None  # only spawned in process mode
        await self.processes.stop(uid, 0.0)

    def on_pod_deletion(self, pod: JsonDict) -> None:
        """A bound pod got a deletionTimestamp: stop it within its (scaled) grace period."""
        metadata = pod["metadata"]
        uid = metadata["uid"]
        if self._closing:
            return
        previous = self._terminations.pop(uid, None)
        if previous is not None:
            previous.cancel()  # deleted again with a shorter grace period
        grace = float(metadata.get("deletionGracePeriodSeconds") or 0)
        self._terminations[uid] = self._spawn(
            self._terminate(metadata["namespace"], metadata["name"], uid, grace)
        )

    async def _terminate(self, namespace: str, name: str, uid: str, grace: float) -> None:
        run = self._runs.pop(uid, None)
        if run is not None:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        scaled = self._timings.scaled(grace)
        if self.processes is not None and self.processes.get(uid) is not None:
            await self.processes.stop(uid, scaled, cleanup=False)
        else:
            await asyncio.sleep(scaled)
        self._terminations.pop(uid, None)
        self._api.pod_stopped(namespace, name, uid)

    # --- status writing ----------------------------------------------------------------------

    def _pod(self, namespace: str, name: str, uid: str) -> JsonDict:
        pod = self._store.get("pods", namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp"):
            raise _PodGone
        return pod

    def _record(
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

    def _host_ip(self, node_name: str) -> str:
        node = self._store.get("nodes", "", node_name) or {}
        for address in (node.get("status") or {}).get("addresses") or ():
            if address.get("type") == "InternalIP":
                return str(address.get("address"))
        return "10.0.0.1"

    def _simulated_ip(self, uid: str, node_name: str) -> str:
        if uid not in self._pod_ips:
            node = self._store.get("nodes", "", node_name) or {}
            cidr = str((node.get("spec") or {}).get("podCIDR") or "10.244.0.0/24")
            prefix = cidr.split("/")[0].rsplit(".", 1)[0]
            counter = self._ip_counters.get(node_name, 1) % 253 + 1
            self._ip_counters[node_name] = counter
            self._pod_ips[uid] = f"{prefix}.{counter + 1}"
        return self._pod_ips[uid]

    def _write(
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
        """Write the pod status: ``states`` maps container names to their state."""
        metadata = pod["metadata"]
        node = pod["spec"]["nodeName"]
        uid = metadata["uid"]
        timestamp = now()
        statuses = []
        for container in _containers(pod):
            name = container["name"]
            state = states.get(name, {"waiting": {"reason": "ContainerCreating"}})
            running = "running" in state
            created = "waiting" not in state or restarts > 0  # the image was pulled
            entry: JsonDict = {
                "name": name,
                "image": container["image"],
                "imageID": _image_id(container["image"]) if created else "",
                "ready": ready and running,
                "restartCount": restarts,
                "started": running,
                "state": state,
                "lastState": (last_states or {}).get(name, {}),
            }
            if created:
                entry["containerID"] = "containerd://" + _short_hash(uid, name, str(restarts))
            statuses.append(entry)
        unready = [s["name"] for s in statuses if not s["ready"]]

        def condition(
            type_: str, ok: bool, reason: str | None = None, message: str | None = None
        ) -> JsonDict:
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

        not_ready_reason = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(
            phase, "ContainersNotReady"
        )
        not_ready_message = f"containers with unready status: [{' '.join(unready)}]"
        conditions = [
            condition("PodReadyToStartContainers", sandbox),
            condition("Initialized", True),
            condition("Ready", not unready, not_ready_reason, not_ready_message),
            condition("ContainersReady", not unready, not_ready_reason, not_ready_message),
            condition("PodScheduled", True),
        ]
        host_ip = self._host_ip(node)

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
            if _init_containers(new):
                status["initContainerStatuses"] = [
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": _image_id(c["image"]),
                        "ready": True,
                        "restartCount": 0,
                        "started": False,
                        "containerID": "containerd://" + _short_hash(uid, c["name"], "init"),
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
                    for c in _init_containers(new)
                ]
            if pod_ip is not None:
                status["podIP"] = pod_ip
                status["podIPs"] = [{"ip": pod_ip}]

        updated = self._api.update("pods", metadata["namespace"], metadata["name"], apply, uid=uid)
        if updated is None:
            raise _PodGone
        return updated

    # --- the pod's life ------------------------------------------------------------------------

    async def _run(self, namespace: str, name: str, uid: str) -> None:
        try:
            await self._lifecycle(namespace, name, uid)
        except _PodGone:
            pass
        finally:
            self._config_waiters.pop(uid, None)

    async def _lifecycle(self, namespace: str, name: str, uid: str) -> None:
        pod = self._pod(namespace, name, uid)
        pod = self._write(pod, phase="Pending", states={}, sandbox=False)
        await self._wait_for_config(namespace, name, uid)
        pod = self._pod(namespace, name, uid)
        node = pod["spec"]["nodeName"]
        present = self._images_on_node.setdefault(node, set())
        containers = _init_containers(pod) + _containers(pod)
        for container in containers:
            image = container["image"]
            if image not in present or container.get("imagePullPolicy") == "Always":
                self._record(pod, NORMAL, "Pulling", f'Pulling image "{image}"', container["name"])
        await asyncio.sleep(self._timings.running_delay)
        pod = self._pod(namespace, name, uid)
        for container in containers:
            if self._pull_failures.matches(container["image"]):
                await self._pull_failure_loop(namespace, name, uid, container)
                return
        for container in containers:
            image = container["image"]
            if image in present and container.get("imagePullPolicy") != "Always":
                message = f'Container image "{image}" already present on machine'
            else:
                message = (
                    f'Successfully pulled image "{image}" in 1.203s (1.203s including '
                    f"waiting). Image size: 104857600 bytes."
                )
                present.add(image)
            self._record(pod, NORMAL, "Pulled", message, container["name"])
        await self._run_containers(namespace, name, uid)

    async def _wait_for_config(self, namespace: str, name: str, uid: str) -> None:
        while True:
            pod = self._pod(namespace, name, uid)
            problem = config_problem(self._store, pod)
            if problem is None:
                return
            reason, message, waiting_reason, waiting_message = problem
            self._record(pod, WARNING, reason, message)
            if waiting_reason != "ContainerCreating":
                waiting = {"reason": waiting_reason, "message": waiting_message}
                self._write(
                    pod, phase="Pending", states={c["name"]: {"waiting": waiting} for c in _containers(pod)}
                )
            event = self._config_waiters.setdefault(uid, asyncio.Event())
            event.clear()
            await event.wait()

    async def _pull_failure_loop(self, namespace: str, name: str, uid: str, container: JsonDict) -> None:
        image = container["image"]
        reference = full_image_reference(image)
        error = (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{reference}": '
            f'failed to resolve reference "{reference}": {reference}: not found'
        )
        backoff = 10.0
        first = True
        while True:
            pod = self._pod(namespace, name, uid)
            if not first:
                self._record(pod, NORMAL, "Pulling", f'Pulling image "{image}"', container["name"])
            first = False
            self._record(
                pod, WARNING, "Failed", f'Failed to pull image "{image}": {error}', container["name"]
            )
            self._record(pod, WARNING, "Failed", "Error: ErrImagePull", container["name"])
            states = {container["name"]: {"waiting": {"reason": "ErrImagePull", "message": error}}}
            self._write(pod, phase="Pending", states=states)
            await asyncio.sleep(self._timings.scaled(2.0))
            pod = self._pod(namespace, name, uid)
            self._record(pod, NORMAL, "BackOff", f'Back-off pulling image "{image}"', container["name"])
            self._record(pod, WARNING, "Failed", "Error: ImagePullBackOff", container["name"])
            states = {
                container["name"]: {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}": ErrImagePull: {error}',
                    }
                }
            }
            self._write(pod, phase="Pending", states=states)
            await asyncio.sleep(self._timings.scaled(backoff))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _run_containers(self, namespace: str, name: str, uid: str) -> None:
        restarts = 0
        backoff = 10.0
        last_states: dict[str, JsonDict] = {}
        while True:
            pod = self._pod(namespace, name, uid)
            for container in _containers(pod):
                self._record(
                    pod, NORMAL, "Created", f"Created container: {container['name']}", container["name"]
                )
                self._record(
                    pod, NORMAL, "Started", f"Started container {container['name']}", container["name"]
                )
            subject, terminated = await self._start_once(pod, restarts, last_states)
            pod = self._pod(namespace, name, uid)
            policy = pod["spec"].get("restartPolicy", "Always")
            code = terminated["exitCode"]
            running = {"running": {"startedAt": terminated["startedAt"]}}
            others = {c["name"]: running for c in _containers(pod) if c["name"] != subject}
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                done = {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": terminated["startedAt"],
                        "finishedAt": terminated["finishedAt"],
                    }
                }
                states = {c["name"]: done for c in _containers(pod)}
                states[subject] = {"terminated": terminated}
                self._write(
                    pod,
                    phase="Succeeded" if code == 0 else "Failed",
                    states=states,
                    pod_ip=self._current_ip(pod),
                    restarts=restarts,
                    last_states=last_states,
                )
                return
            restarts += 1
            last_states = {subject: {"terminated": terminated}}
            pod_ref = f"{name}_{namespace}({uid})"
            states = {
                **others,
                subject: {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {int(backoff)}s restarting failed container={subject} "
                        f"pod={pod_ref}",
                    }
                },
            }
            self._write(
                pod,
                phase="Running",
                states=states,
                pod_ip=self._current_ip(pod),
                restarts=restarts,
                last_states=last_states,
            )
            self._record(
                pod,
                WARNING,
                "BackOff",
                f"Back-off restarting failed container {subject} in pod {pod_ref}",
                subject,
            )
            await asyncio.sleep(self._timings.scaled(backoff))
            backoff = min(backoff * 2, _MAX_BACKOFF)
            pod = self._pod(namespace, name, uid)
            for container in _containers(pod):
                self._record(
                    pod,
                    NORMAL,
                    "Pulled",
                    f'Container image "{container["image"]}" already present on machine',
                    container["name"],
                )

    def _current_ip(self, pod: JsonDict) -> str | None:
        ip = (pod.get("status") or {}).get("podIP")
        return str(ip) if ip else None

    async def _start_once(
        self, pod: JsonDict, restarts: int, last_states: dict[str, JsonDict]
    ) -> tuple[str, JsonDict]:
        """Start the containers; return (container name, terminated state) when one stops."""
        metadata = pod["metadata"]
        uid = metadata["uid"]
        containers = _containers(pod)
        started = now()
        crashing = next((c for c in containers if self._crashing.matches(c["image"])), None)
        if crashing is not None:
            return crashing["name"], {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": started,
                "finishedAt": now(),
            }
        running = {c["name"]: {"running": {"startedAt": started}} for c in containers}
        if self.processes is None:
            self._write(
                pod,
                phase="Running",
                states=running,
                ready=True,
                restarts=restarts,
                pod_ip=self._simulated_ip(uid, pod["spec"]["nodeName"]),
                last_states=last_states,
            )
            await asyncio.Event().wait()  # runs until the task is cancelled by a deletion
            raise AssertionError("unreachable")  # pragma: no cover
        return await self._start_process(pod, containers[0], running, restarts, last_states)

    async def _start_process(
        self,
        pod: JsonDict,
        container: JsonDict,
        running: dict[str, JsonDict],
        restarts: int,
        last_states: dict[str, JsonDict],
    ) -> tuple[str, JsonDict]:
        assert self.processes is not None  # only called in process mode
        metadata = pod["metadata"]
        uid, name = metadata["uid"], container["name"]
        ip = self.processes.allocate_ip(uid)
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        env = container_environment(
            self._store, pod, container, ip, self._host_ip(pod["spec"].get("nodeName", ""))
        )
        started = now()
        try:
            process = await self.processes.start(uid, metadata["name"], argv, env, ip)
        except ProcessStartError as error:
            message = (
                f"failed to create containerd task: failed to create shim task: OCI runtime "
                f"create failed: runc create failed: unable to start container process: "
                f"{error}: unknown"
            )
            self._record(pod, WARNING, "Failed", f"Error: {message}", name)
            return name, {
                "exitCode": 128,
                "reason": "StartError",
                "message": message,
                "startedAt": started,
                "finishedAt": now(),
            }
        port = self._readiness_port(container)
        if port is not None:
            await self.processes.wait_for_port(process, port, self._timings.port_timeout)
        if process.process.returncode is None:
            pod = self._pod(metadata["namespace"], metadata["name"], uid)
            self._write(
                pod,
                phase="Running",
                states=running,
                ready=True,
                pod_ip=ip,
                restarts=restarts,
                last_states=last_states,
            )
        code = await process.process.wait()
        return name, {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now(),
        }

    def _readiness_port(self, container: JsonDict) -> int | None:
        probe = container.get("readinessProbe") or {}
        for kind in ("tcpSocket", "httpGet"):
            port = (probe.get(kind) or {}).get("port")
            if isinstance(port, int):
                return port
        if self._wait_for_port:
            for entry in container.get("ports") or ():
                if isinstance(entry.get("containerPort"), int):
                    return int(entry["containerPort"])
        return None
