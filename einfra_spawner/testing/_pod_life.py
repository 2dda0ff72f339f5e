"""The life of one bound pod on its fake node, step by step, as a real kubelet shows it.

:class:`._kubelet.Kubelet` starts one :class:`PodLife` task per bound pod; it walks these steps,
writing the pod status and core/v1 events at each (through :class:`._pod_status.PodHandle`):

1. ContainerCreating (hostIP, startTime). A missing Secret or ConfigMap volume keeps the pod
   there with a Warning FailedMount event; a missing one in ``env``/``envFrom`` gives
   CreateContainerConfigError. The pod continues when the object appears.
2. Pulling, then after ``Timings.running_delay`` Pulled (or "already present on machine" when
   the node has the image), Created, Started, and phase Running with podIP, containerStatuses
   and the Ready conditions. Images listed as pull failures give Failed / ErrImagePull, BackOff
   / ImagePullBackOff, over and over, and the pod stays Pending.
3. Images listed as crashing (or, in process mode, a process that exits: :mod:`._pod_process`)
   terminate the container with its exit code: restartPolicy Never ends in phase Failed
   (Succeeded for exit code 0), otherwise the container waits in CrashLoopBackOff and restarts
   with a growing back-off and restartCount.

The task ends when the pod is deleted or replaced (:class:`._pod_status.PodGone`), or is
cancelled by the kubelet.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from ._config import ImageRules, Timings, full_image_reference
from ._defaults import now
from ._events import NORMAL, WARNING, EventRecorder
from ._pod_process import run_as_process
from ._pod_status import JsonDict, PodGone, PodHandle, containers, init_containers
from ._podenv import config_problem
from ._processes import ProcessRunner
from ._resources import ResourceApi

_MAX_BACKOFF = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRuntime:
    """What the lives of all pods share: the harness's rules and the nodes' state."""

    timings: Timings
    pull_failures: ImageRules
    crashing_images: ImageRules
    processes: ProcessRunner | None  # None: containers are simulated, not run
    wait_for_port: bool
    # node name -> images pulled there, so that a second pull is "already present on machine"
    images_on_node: dict[str, set[str]] = field(default_factory=dict)
    # node name -> the counter behind the last simulated pod IP handed out on that node
    ip_counters: dict[str, int] = field(default_factory=dict)


class PodLife(PodHandle):
    """One bound pod's life; :meth:`run` lives it."""

    def __init__(
        self,
        api: ResourceApi,
        recorder: EventRecorder,
        runtime: NodeRuntime,
        namespace: str,
        name: str,
        uid: str,
    ) -> None:
        super().__init__(api, recorder, namespace, name, uid)
        self._runtime = runtime
        self._timings = runtime.timings
        # Set by the kubelet whenever a Secret or ConfigMap changes: a missing one may be there.
        self.config_changed = asyncio.Event()
        self._ip: str | None = None

    async def run(self) -> None:
        with contextlib.suppress(PodGone):  # deleted or replaced: the life ends there
            await self._lifecycle()

    async def _lifecycle(self) -> None:
        pod = self.read()
        pod = self.write(pod, phase="Pending", states={}, sandbox=False)
        await self._wait_for_config()
        pod = self.read()
        node = pod["spec"]["nodeName"]
        present = self._runtime.images_on_node.setdefault(node, set())
        all_containers = init_containers(pod) + containers(pod)
        for container in all_containers:
            image = container["image"]
            if image not in present or container.get("imagePullPolicy") == "Always":
                self.record(pod, NORMAL, "Pulling", f'Pulling image "{image}"', container["name"])
        await asyncio.sleep(self._timings.running_delay)
        pod = self.read()
        for container in all_containers:
            if self._runtime.pull_failures.matches(container["image"]):
                await self._pull_failure_loop(container)
                return
        for container in all_containers:
            image = container["image"]
            if image in present and container.get("imagePullPolicy") != "Always":
                message = f'Container image "{image}" already present on machine'
            else:
                message = (
                    f'Successfully pulled image "{image}" in 1.203s (1.203s including '
                    f"waiting). Image size: 104857600 bytes."
                )
                present.add(image)
            self.record(pod, NORMAL, "Pulled", message, container["name"])
        await self._run_containers()

    async def _wait_for_config(self) -> None:
        while True:
            pod = self.read()
            problem = config_problem(self.store, pod)
            if problem is None:
                return
            reason, message, waiting_reason, waiting_message = problem
            self.record(pod, WARNING, reason, message)
            if waiting_reason != "ContainerCreating":
                waiting = {"reason": waiting_reason, "message": waiting_message}
                self.write(
                    pod, phase="Pending", states={c["name"]: {"waiting": waiting} for c in containers(pod)}
                )
            self.config_changed.clear()
            await self.config_changed.wait()

    async def _pull_failure_loop(self, container: JsonDict) -> None:
        image = container["image"]
        reference = full_image_reference(image)
        error = (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{reference}": '
            f'failed to resolve reference "{reference}": {reference}: not found'
        )
        backoff = 10.0
        first = True
        while True:
            pod = self.read()
            if not first:
                self.record(pod, NORMAL, "Pulling", f'Pulling image "{image}"', container["name"])
            first = False
            self.record(pod, WARNING, "Failed", f'Failed to pull image "{image}": {error}', container["name"])
            self.record(pod, WARNING, "Failed", "Error: ErrImagePull", container["name"])
            states = {container["name"]: {"waiting": {"reason": "ErrImagePull", "message": error}}}
            self.write(pod, phase="Pending", states=states)
            await asyncio.sleep(self._timings.scaled(2.0))
            pod = self.read()
            self.record(pod, NORMAL, "BackOff", f'Back-off pulling image "{image}"', container["name"])
            self.record(pod, WARNING, "Failed", "Error: ImagePullBackOff", container["name"])
            states = {
                container["name"]: {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}": ErrImagePull: {error}',
                    }
                }
            }
            self.write(pod, phase="Pending", states=states)
            await asyncio.sleep(self._timings.scaled(backoff))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _run_containers(self) -> None:
        restarts = 0
        backoff = 10.0
        last_states: dict[str, JsonDict] = {}
        while True:
            pod = self.read()
            for container in containers(pod):
                self.record(
                    pod, NORMAL, "Created", f"Created container: {container['name']}", container["name"]
                )
                self.record(
                    pod, NORMAL, "Started", f"Started container {container['name']}", container["name"]
                )
            subject, terminated = await self._start_once(pod, restarts, last_states)
            pod = self.read()
            policy = pod["spec"].get("restartPolicy", "Always")
            code = terminated["exitCode"]
            running = {"running": {"startedAt": terminated["startedAt"]}}
            others = {c["name"]: running for c in containers(pod) if c["name"] != subject}
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                done = {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": terminated["startedAt"],
                        "finishedAt": terminated["finishedAt"],
                    }
                }
                states = {c["name"]: done for c in containers(pod)}
                states[subject] = {"terminated": terminated}
                self.write(
                    pod,
                    phase="Succeeded" if code == 0 else "Failed",
                    states=states,
                    pod_ip=_current_ip(pod),
                    restarts=restarts,
                    last_states=last_states,
                )
                return
            restarts += 1
            last_states = {subject: {"terminated": terminated}}
            pod_ref = f"{self.name}_{self.namespace}({self.uid})"
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
            self.write(
                pod,
                phase="Running",
                states=states,
                pod_ip=_current_ip(pod),
                restarts=restarts,
                last_states=last_states,
            )
            self.record(
                pod,
                WARNING,
                "BackOff",
                f"Back-off restarting failed container {subject} in pod {pod_ref}",
                subject,
            )
            await asyncio.sleep(self._timings.scaled(backoff))
            backoff = min(backoff * 2, _MAX_BACKOFF)
            pod = self.read()
            for container in containers(pod):
                self.record(
                    pod,
                    NORMAL,
                    "Pulled",
                    f'Container image "{container["image"]}" already present on machine',
                    container["name"],
                )

    async def _start_once(
        self, pod: JsonDict, restarts: int, last_states: dict[str, JsonDict]
    ) -> tuple[str, JsonDict]:
        """Start the containers; return (container name, terminated state) when one stops."""
        pod_containers = containers(pod)
        started = now()
        crashing = next(
            (c for c in pod_containers if self._runtime.crashing_images.matches(c["image"])), None
        )
        if crashing is not None:
            return crashing["name"], {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": started,
                "finishedAt": now(),
            }
        running = {c["name"]: {"running": {"startedAt": started}} for c in pod_containers}
        processes = self._runtime.processes
        if processes is None:
            self.write(
                pod,
                phase="Running",
                states=running,
                ready=True,
                restarts=restarts,
                pod_ip=self._simulated_ip(pod["spec"]["nodeName"]),
                last_states=last_states,
            )
            await asyncio.Event().wait()  # runs until the task is cancelled by a deletion
            raise AssertionError("unreachable")  # pragma: no cover
        return await run_as_process(
            self,
            processes,
            pod,
            pod_containers[0],
            running,
            restarts,
            last_states,
            port_timeout=self._timings.port_timeout,
            wait_for_port=self._runtime.wait_for_port,
        )

    def _simulated_ip(self, node_name: str) -> str:
        """An address from the node's pod CIDR, the same for every start of this pod."""
        if self._ip is None:
            node = self.store.get("nodes", "", node_name) or {}
            cidr = str((node.get("spec") or {}).get("podCIDR") or "10.244.0.0/24")
            prefix = cidr.split("/")[0].rsplit(".", 1)[0]
            counter = self._runtime.ip_counters.get(node_name, 1) % 253 + 1
            self._runtime.ip_counters[node_name] = counter
            self._ip = f"{prefix}.{counter + 1}"
        return self._ip


def _current_ip(pod: JsonDict) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    return str(ip) if ip else None
