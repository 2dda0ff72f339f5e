"""The fake kubelet: runs each bound pod's life as a task and stops pods that are deleted.

The scheduler hands every pod it binds to :meth:`Kubelet.start`, which runs the pod's life
(:mod:`._pod_life`: ContainerCreating, pulls, Running, crash loops, process mode) as one asyncio
task. The kubelet also reacts to the store's changes: a new Secret or ConfigMap wakes pods that
wait for one, and a removed pod's task and process go with it. A graceful delete
(:meth:`Kubelet.on_pod_deletion`) cancels the pod's task, stops its process (process mode) or
waits the scaled grace period, then tells the API that the pod's containers have stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ._config import ImageRules, Timings
from ._events import EventRecorder
from ._pod_life import NodeRuntime, PodLife
from ._processes import ProcessRunner
from ._resources import ResourceApi
from ._store import DELETED, Change

JsonDict = dict[str, Any]
log = logging.getLogger(__name__)


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
        self._recorder = recorder
        self._timings = timings
        self.processes = processes
        self._runtime = NodeRuntime(
            timings=timings,
            pull_failures=pull_failures,
            crashing_images=crashing_images,
            processes=processes,
            wait_for_port=wait_for_port,
        )
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._terminations: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Pods waiting for a Secret or ConfigMap (by uid): woken on every change of one.
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
        life = PodLife(self._api, self._recorder, self._runtime, metadata["namespace"], metadata["name"], uid)
        self._runs[uid] = self._spawn(self._run(life))

    async def _run(self, life: PodLife) -> None:
        self._config_waiters[life.uid] = life.config_changed
        try:
            await life.run()
        finally:
            self._config_waiters.pop(life.uid, None)

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
