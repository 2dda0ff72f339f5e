"""The Kubernetes backend's start path: submit the manifests, then wait on the watches.

A start takes a turn at the submission gate (:mod:`._pace`) while it writes: at most the user's
namespace, the home PVC, the PersistentVolume and claim of each ``pv`` mount (:mod:`._storage`)
and the pod. A pod of the same name left by an earlier
start is adopted when it carries this server's labels and spec hash, and replaced otherwise; a
pod that is not this hub's is never touched. Then the turn is given back and the start waits on
an asyncio future that the shared pod and event watches resolve (:class:`StartWatcher`): no
reads, no timers on the normal path. States that waiting will not fix (no free GPU, an image
that cannot be pulled, a crash, a missing secret) fail the start at once with a plain-language
reason (:mod:`._explain`), and the pod is removed (:mod:`._stop`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from einfra_spawner import BackendError
from einfra_spawner.backend import Endpoint, GpuCapacity, ProgressEvent, Started, StartRequest
from einfra_spawner.progress import StartProgress
from einfra_spawner.render import LABEL_SERVER, LABEL_SPEC_HASH
from einfra_spawner.resolve import ResolvedGpu, ResolvedOptions

from ._api import KubeApi
from ._api_errors import ApiError, Conflict, MaybeCreated
from ._cluster import Cluster
from ._explain import (
    failure_from_event,
    failure_from_pod,
    pod_is_ready,
    progress_from_event,
    unschedulable_message,
)
from ._informer import Informer
from ._inventory import INSTANCE, MANAGED_BY
from ._pace import Gate
from ._stop import PodRemoval
from ._storage import ensure_home, ensure_namespace, ensure_user_volume, reset_home, retire_home

if TYPE_CHECKING:
    from .backend import KubernetesBackend

__all__ = ["StartWatcher", "Starter", "is_servers_pod"]

#: Reads the capacity of one GPU type for a failure message (``None`` if it cannot be read).
CapacityOf = Callable[[ResolvedGpu], Awaitable[GpuCapacity | None]]


def is_servers_pod(labels: Mapping[str, str], request: StartRequest) -> bool:
    """Whether a pod with these labels is one of this hub instance's, for this very server."""
    return (
        labels.get(MANAGED_BY[0]) == MANAGED_BY[1]
        and labels.get(INSTANCE) == request.options.instance
        and labels.get(LABEL_SERVER) == request.manifests.names.server_label
    )


def _placed(pod: dict[str, Any]) -> bool:
    """Whether the scheduler has bound the pod to a node (it never goes back)."""
    return bool((pod.get("spec") or {}).get("nodeName"))


class Starter:
    """Starts the backend's pods (one object per backend, any number of starts at once)."""

    def __init__(self, backend: KubernetesBackend, cluster: Cluster, gate: Gate, removal: PodRemoval) -> None:
        self._backend = backend
        self._cluster = cluster
        self._gate = gate
        self._removal = removal
        #: Namespaces this hub process has made (or found made): created once per process.
        self._namespaces_made: set[str] = set()

    async def start(self, request: StartRequest, progress: StartProgress) -> Started:
        """Start the server of ``request``, writing its steps into ``progress``."""
        # The gate is held while this start writes (namespace, PVC, pod), not while it waits.
        await self._gate.enter()
        holding = True

        def submitted() -> None:
            nonlocal holding
            if holding:
                holding = False
                self._gate.leave()

        try:
            return await self._start(request, progress, submitted)
        finally:
            submitted()

    async def _start(
        self, request: StartRequest, progress: StartProgress, submitted: Callable[[], None]
    ) -> Started:
        backend, cluster = self._backend, self._cluster
        api = await cluster.api()
        deadline = cluster.deadline(request.timeout)
        pod = request.manifests.pod
        namespace = pod["metadata"]["namespace"]
        name = pod["metadata"]["name"]
        state: dict[str, Any] = {
            k: v for k, v in request.state.items() if k in ("namespace_ready", "home_ready")
        }
        state.update(namespace=namespace, pod=name)
        try:
            if backend.user_namespaces and not state.get("namespace_ready"):
                # Every server of a user shares the namespace: create it once per hub process
                # (after a restart a first create meets a 409, which is fine).
                if namespace not in self._namespaces_made:
                    await ensure_namespace(api, namespace, deadline)
                    self._namespaces_made.add(namespace)
                state["namespace_ready"] = True
            scope = cluster.scope()
            pods = await cluster.informer("pods", scope)
            events = await cluster.informer("events", scope)
            manifests = request.manifests
            home, names = manifests.home, manifests.names

            resolved_home = request.options.home
            if resolved_home is not None and resolved_home.reset and home is not None:
                progress.add(ProgressEvent("Emptying your home, as you asked", 5))
                await self._removal.ensure_gone(api, pods, namespace, name, deadline)
                if manifests.retired_home is not None:
                    # Kept for a while under its own name; the new home is a new claim.
                    await retire_home(
                        api,
                        namespace,
                        manifests.retired_home,
                        names,
                        now=time.time(),
                        keep_for=resolved_home.keep_old_for,
                        deadline=deadline,
                    )
                else:
                    await reset_home(api, namespace, home, names, deadline, backend.stop_timeout)
                state["home_ready"] = False
            if home is not None and not state.get("home_ready"):
                progress.add(ProgressEvent("Preparing your home volume", 10))
                await ensure_home(api, namespace, home, names, deadline)
                state["home_ready"] = True
            state["home"] = home["metadata"]["name"] if home is not None else None
            state["home_generation"] = manifests.home_generation
            for volume in manifests.user_volumes:
                progress.add(ProgressEvent(f"Preparing your storage {volume.mount!r}", 12))
                await ensure_user_volume(api, namespace, volume, deadline)
            running = await self._create_and_wait(api, pods, events, request, progress, submitted, deadline)
            progress.add(ProgressEvent("Your server is ready", 100))
        except ApiError as error:
            raise BackendError(f"The cluster refused to start your server: {error}") from error
        state["uid"] = running["metadata"].get("uid")
        return Started(Endpoint(running["status"]["podIP"], request.single_user.port), state)

    async def _create_and_wait(
        self,
        api: KubeApi,
        pods: Informer,
        events: Informer,
        request: StartRequest,
        progress: StartProgress,
        submitted: Callable[[], None],
        deadline: float,
    ) -> dict[str, Any]:
        backend, removal = self._backend, self._removal
        manifest = request.manifests.pod
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        key = f"{namespace}/{name}"
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[dict[str, Any]] = loop.create_future()
        watcher = StartWatcher(
            request.options,
            outcome,
            progress,
            grace=backend.unschedulable_grace,
            capacity_of=backend.capacity_of,
        )
        unsubscribe = [pods.subscribe(key, watcher.on_pod), events.subscribe(key, watcher.on_event)]

        # Removing what a failed start made may wait for the API, but not beyond the start's
        # deadline (plus one request): the user is told at once, the reconciler does the rest.
        def soon() -> float:
            return max(deadline, time.monotonic() + backend.request_timeout)

        try:
            for _ in range(3):
                try:
                    created = await api.create("pods", namespace, manifest, deadline=deadline)
                except MaybeCreated:
                    # The API never said whether the pod was made: make sure it was not.
                    await removal.remove_quietly(api, pods, namespace, name, soon())
                    raise
                except Conflict:
                    existing = pods.cache.get(key)
                    if existing is None:  # not ours (not in our watch), or not seen yet
                        existing = await api.get("pods", namespace, name, deadline=deadline)
                    if not self._adoptable(existing, request):
                        backend.log.info("deleting stale pod %s before starting again", key)
                        progress.add(ProgressEvent("Removing an old copy of your server", 15))
                        await removal.ensure_gone(api, pods, namespace, name, deadline)
                        continue
                    backend.log.info("adopting pod %s left by an earlier start", key)
                    created = existing
                progress.add(ProgressEvent("Your server was submitted to the cluster", 20))
                watcher.watch_uid(
                    str(created["metadata"].get("uid")), pods.cache.get(key) or created, events.indexed(key)
                )
                break
            else:
                raise BackendError("Your server could not be created: an old copy of it did not go away.")
            submitted()
            try:
                return await outcome
            except BackendError:
                await removal.remove_quietly(api, pods, namespace, name, soon())
                raise
        except asyncio.CancelledError:
            # The hub gave up (start timeout or shutdown), perhaps while a create was on its
            # way: leave nothing running behind, without keeping the cancellation waiting.
            removal.remove_later(api, pods, namespace, name)
            raise
        finally:
            watcher.close()
            for stop_listening in unsubscribe:
                stop_listening()

    @staticmethod
    def _adoptable(existing: dict[str, Any], request: StartRequest) -> bool:
        """Whether the pod in the way is this server's, from the same manifests, and staying
        (adopt it); ``False``: this server's stale copy (replace it). Raises ``BackendError``
        for a pod that is not this hub's: it is left alone."""
        metadata = existing.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if not is_servers_pod(labels, request):
            ours = request.manifests.pod["metadata"]
            namespace, name = ours["namespace"], ours["name"]
            raise BackendError(
                f"A pod named {name} exists in namespace {namespace} and is not this hub's; "
                "nothing was changed. Please ask an operator to remove it."
            )
        same_spec = labels.get(LABEL_SPEC_HASH) == request.manifests.spec_hash
        return same_spec and not metadata.get("deletionTimestamp")


class StartWatcher:
    """Turns the updates of one starting pod and its events into progress and one outcome."""

    def __init__(
        self,
        options: ResolvedOptions,
        outcome: asyncio.Future[dict[str, Any]],
        progress: StartProgress,
        *,
        grace: float,
        capacity_of: CapacityOf,
    ) -> None:
        self.options = options
        self.outcome = outcome
        self.progress = progress
        #: Seconds to keep waiting once the scheduler says the pod fits nowhere (``unschedulable_grace``).
        self.grace = grace
        self.capacity_of = capacity_of
        self.uid: str | None = None
        #: Whether the pod has a node: from then on, no "cannot be placed" fails the start.
        self.placed = False
        self.early: list[tuple[str, str, dict[str, Any]]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.timer: asyncio.TimerHandle | None = None

    def watch_uid(self, uid: str, pod: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """From now on only this pod counts; replay what arrived before its uid was known
        (``events``: the cached events of this pod's name; ``pod``: its latest known state)."""
        self.uid = uid
        # Older "cannot be placed" events of a pod that has a node by now are stale.
        self.placed = pod["metadata"].get("uid") == uid and _placed(pod)
        for event in events:
            self.early.append(("event", "ADDED", event))
        self.early.append(("pod", "MODIFIED", pod))
        early, self.early = self.early, []
        for what, kind, obj in early:
            (self.on_pod if what == "pod" else self.on_event)(kind, obj)

    def _fail(self, message: str) -> None:
        if not self.outcome.done():
            self.progress.add(ProgressEvent(message, None, failed=True))
            self.outcome.set_exception(BackendError(message))

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        if self.outcome.done():
            return
        if self.uid is None:
            self.early.append(("pod", kind, pod))
            return
        if pod["metadata"].get("uid") != self.uid:
            return
        if kind == "DELETED":
            self._fail("Your server was removed before it finished starting.")
        elif pod_is_ready(pod):
            self.outcome.set_result(pod)
        else:
            failure = failure_from_pod(pod, self.options)
            if failure:
                self._fail(failure)
            elif _placed(pod):
                self.placed = True
                if self.timer is not None:  # placed after all: stop the unschedulable countdown
                    self.timer.cancel()
                    self.timer = None

    def on_event(self, kind: str, event: dict[str, Any]) -> None:
        if self.outcome.done() or kind == "DELETED":
            return
        if self.uid is None:
            self.early.append(("event", kind, event))
            return
        involved = event.get("involvedObject") or {}
        if involved.get("uid") and involved.get("uid") != self.uid:
            return
        step = progress_from_event(event)
        if step is not None:
            self.progress.add(step)
        gpu = self.options.gpu
        if event.get("reason") == "FailedScheduling" and gpu is not None:
            # The message names the GPU's free count; reading it may take a moment.
            task = asyncio.create_task(self._explain_unschedulable(str(event.get("message") or ""), gpu))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        failure = failure_from_event(event, self.options, None)
        if failure is None:
            return
        if event.get("reason") == "FailedScheduling":
            self._unschedulable(failure)
        else:
            self._fail(failure)

    async def _explain_unschedulable(self, message: str, gpu: ResolvedGpu) -> None:
        capacity = await self.capacity_of(gpu)
        self._unschedulable(unschedulable_message(message, self.options, capacity))

    def _unschedulable(self, failure: str) -> None:
        """The scheduler found no node for the pod: fail the start now, or once ``grace``
        seconds have passed without the pod being placed."""
        if self.outcome.done() or self.placed:
            return
        if self.grace <= 0:
            self._fail(failure)
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.grace, self._fail, failure)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for task in self.tasks:
            task.cancel()
