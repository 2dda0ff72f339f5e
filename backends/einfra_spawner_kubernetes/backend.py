"""The Kubernetes backend: submits rendered manifests with kubernetes-asyncio, learns from watches.

Per hub process there is one ``KubernetesBackend`` and, per (kind, namespace), one shared
list+watch (:class:`~._informer.Informer`) for pods and their events (nodes too, once GPU
capacity is asked for). A start writes (at most a namespace, a PVC and a pod) and then waits on
an asyncio future that the watch resolves: no reads, no timers on the normal path. States that
waiting will not fix (no free GPU, an image that cannot be pulled, a crash, a missing secret)
fail the spawn at once with a plain-language reason, and the pod is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from traitlets import Bool, Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from einfra_spawner import BackendError, ServerIdentity, ServerNames
from einfra_spawner.backend import (
    BackendBase,
    BackendFeatures,
    Endpoint,
    GpuCapacity,
    ProgressEvent,
    ServerRecord,
    Started,
    StartRequest,
)
from einfra_spawner.models import GpuType
from einfra_spawner.names import dns_label
from einfra_spawner.render import LABEL_SERVER, LABEL_SPEC_HASH, LABEL_USER
from einfra_spawner.resolve import ResolvedGpu, ResolvedOptions

from ._api import ApiError, Conflict, KubeApi, MaybeCreated, NotFound, RetryPolicy, tls_context
from ._capacity import gpu_capacity
from ._explain import failure_from_event, failure_from_pod, pod_is_ready, progress_from_event
from ._informer import Informer, slim_pod
from ._inventory import MANAGED_BY as _MANAGED_BY
from ._inventory import records_from_pods
from ._pace import Gate

__all__ = ["KubernetesBackend"]

_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_MANAGED = "app.kubernetes.io/managed-by=einfra-spawner"


def _involved_key(event: dict[str, Any]) -> str:
    involved = event.get("involvedObject") or {}
    namespace = involved.get("namespace") or (event.get("metadata") or {}).get("namespace")
    return f"{namespace}/{involved.get('name')}"


class _Progress:
    """The steps of one start, readable by any number of progress streams."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self.done = False
        self.changed = asyncio.Event()

    def add(self, event: ProgressEvent | None) -> None:
        if event is not None and not self.done:
            self.events.append(event)
            self.changed.set()

    def finish(self) -> None:
        self.done = True
        self.changed.set()

    async def stream(self) -> AsyncIterator[ProgressEvent]:
        seen = 0
        while True:
            while seen < len(self.events):
                seen += 1
                yield self.events[seen - 1]
            if self.done:
                return
            self.changed.clear()
            await self.changed.wait()


class _Turn:
    """A turn at the submission gate taken by ``admission``, until a start takes it over."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.held = True


#: The turn of the admission block the current task runs in (tasks it creates inherit it).
_ADMITTED: contextvars.ContextVar[_Turn | None] = contextvars.ContextVar("einfra_admitted", default=None)


class KubernetesBackend(BackendBase, LoggingConfigurable):
    """Runs each single-user server as a pod; see ``docs/backends/kubernetes.md``."""

    #: A pod has a network namespace of its own: its server listens on every address in it.
    #: Resetting a home on Kubernetes deletes its volume (after the user asked, in that request).
    features = BackendFeatures(
        supports_images=True,
        listen_ip="0.0.0.0",  # noqa: S104
        reset_keeps_old_home=False,
    )

    namespace = Unicode(
        help="""Namespace of the single-user pods and their home volumes.

        Default: the hub's own namespace when it runs in a pod, else ``default``. Ignored for
        pods when ``user_namespaces`` is on.
        """,
    ).tag(config=True)

    @default("namespace")
    def _default_namespace(self) -> str:
        with contextlib.suppress(OSError):
            return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        return "default"

    user_namespaces = Bool(
        False,
        help="""Give every user a namespace of their own (created on first start).

        Its name is ``user_namespace_prefix``, the user's name folded to DNS characters and a
        digest of the exact name. Needs the cluster-level RBAC in ``docs/``. Default: off.
        """,
    ).tag(config=True)

    user_namespace_prefix = Unicode(
        "jupyter",
        help="Prefix of per-user namespace names (a short DNS label). Default: ``jupyter``.",
    ).tag(config=True)

    kubeconfig = Unicode(
        None,
        allow_none=True,
        help="""Path of a kubeconfig file to reach the cluster.

        Default (``None``): the in-cluster service account when the hub runs in a pod, else the
        usual kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``).
        """,
    ).tag(config=True)

    kube_context = Unicode(
        None, allow_none=True, help="Context of the kubeconfig to use. Default: its current context."
    ).tag(config=True)

    api_url = Unicode(
        None,
        allow_none=True,
        help="""URL of the Kubernetes API server, without credentials (for test harnesses).

        When set it wins over ``kubeconfig``. Default: ``None``.
        """,
    ).tag(config=True)

    request_timeout = Float(
        10.0, help="Seconds one API request may take before it is retried. Default: 10."
    ).tag(config=True)

    concurrent_submissions = Int(
        32,
        min=1,
        help="""Most starts and stops sending their requests to the API at once.

        Others wait their turn, first come first served; waiting for a pod to run does not hold
        a turn. Bounding it keeps the hub responsive in a burst of spawns and lets them finish in
        the order they came. Raise it if the API server answers slowly (a start holds a turn for
        two requests). Default: 32.
        """,
    ).tag(config=True)

    api_connections = Int(
        16,
        min=1,
        help="""Most HTTP connections open at once for creates, deletes and gets (others wait).

        Each connection costs a socket and, on a cluster, a TLS handshake; a few, kept alive,
        carry a storm of spawns (a request takes milliseconds), where kubernetes-asyncio's
        default of 100 has the first hundred requests of a storm each open one. Watches and
        lists use connections of their own. Default: 16.
        """,
    ).tag(config=True)

    api_retry_budget = Float(
        60.0,
        min=0.0,
        help="""Seconds an API request is retried through an outage, when no start deadline applies.

        Requests that meet 429, 5xx, time-outs or refused and dropped connections are sent
        again after a jittered, growing wait (from 50-100 ms up to 3 s, or the server's
        Retry-After), so that an API server restart does not fail the starts and stops in
        flight. A start retries until its own deadline (the spawner's ``start_timeout``); stops,
        removals and namespace creation use this budget. Default: 60 seconds.
        """,
    ).tag(config=True)

    request_attempts = Int(
        None,
        allow_none=True,
        help="""Most requests per API call, on top of the time budget. Default: no cap.""",
    ).tag(config=True)

    delete_grace_seconds = Int(
        10, help="Seconds a stopping server gets to save its work before it is killed. Default: 10."
    ).tag(config=True)

    stop_timeout = Float(
        60.0, help="Seconds to wait for a deleted pod to be gone before giving up. Default: 60."
    ).tag(config=True)

    unschedulable_grace = Float(
        0.0,
        help="""Seconds to keep waiting once the scheduler says a pod does not fit anywhere.

        0 (the default) fails the spawn at once with the reason (e.g. no free GPU of that
        type). Raise it on clusters with a node autoscaler.
        """,
    ).tag(config=True)

    watch_timeout = Int(
        300, help="Seconds one watch request lasts before it is renewed (server side). Default: 300."
    ).tag(config=True)

    capacity_cache_seconds = Float(
        5.0, help="Seconds GPU capacity figures are reused before they are computed again. Default: 5."
    ).tag(config=True)

    capacity_all_namespaces = Bool(
        False,
        help="""Count GPUs used by pods in every namespace, not only the hub's (needs cluster-wide
        read of pods). Turn on when other workloads share the GPU nodes. Default: off.
        """,
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._api_client: client.ApiClient | None = None
        self._api: KubeApi | None = None
        self._lock = asyncio.Lock()
        self._informers: dict[tuple[str, str | None, bool], Informer] = {}
        self._namespaces_made: set[str] = set()
        self._progress: dict[str, _Progress] = {}
        self._capacity: tuple[float, dict[str, GpuCapacity]] | None = None
        #: Removals of cancelled starts' pods, still running.
        self._cleanups: set[asyncio.Future[None]] = set()
        # In a burst, a bounded number of starts and stops send requests at a time (see _pace).
        self._gate = Gate(self.concurrent_submissions)

    # --- plumbing ------------------------------------------------------------------------------

    async def _client(self) -> KubeApi:
        if self._api is not None:
            return self._api
        async with self._lock:
            if self._api is None:
                configuration = client.Configuration()
                if self.api_url:
                    configuration.host = self.api_url
                elif self.kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                    await config.load_kube_config(
                        config_file=self.kubeconfig,
                        context=self.kube_context,
                        client_configuration=configuration,
                    )
                else:
                    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                self.log.info("Kubernetes API at %s", configuration.host)
                self._api_client = client.ApiClient(configuration)
                policy = RetryPolicy(
                    timeout=self.request_timeout, budget=self.api_retry_budget, attempts=self.request_attempts
                )
                # Off the event loop: building a TLS context blocks for ~20 ms.
                tls = await asyncio.to_thread(tls_context, configuration)
                self._api = KubeApi(
                    self._api_client, policy, self.log, connections=self.api_connections, tls=tls
                )
        return self._api

    async def warm_up(self) -> None:
        """Connect and start the shared watches of pods and events now (the hub is starting),
        so that the first spawns find them synced."""
        scope = self._scope()
        await asyncio.gather(self._informer("pods", scope), self._informer("events", scope))

    @property
    def request_counts(self) -> dict[tuple[str, str], int]:
        """API requests made so far, by (verb, resource)."""
        return dict(self._api.counts) if self._api else {}

    async def _informer(self, resource: str, namespace: str | None, *, managed_only: bool = True) -> Informer:
        """The shared, synced watch of ``resource`` in ``namespace`` (started on first use).
        Pods are watched by our label unless ``managed_only`` is off (capacity of shared nodes)."""
        key = (resource, namespace, managed_only)
        informer = self._informers.get(key)
        if informer is None:
            api = await self._client()
            informer = self._informers.get(key)
            if informer is None:
                if resource == "pods" and managed_only:
                    informer = Informer(
                        api,
                        "pods",
                        namespace,
                        self.log,
                        selectors={"label_selector": _MANAGED},
                        keep=slim_pod,
                        watch_timeout=self.watch_timeout,
                    )
                elif resource == "events":
                    informer = Informer(
                        api,
                        "events",
                        namespace,
                        self.log,
                        selectors={"field_selector": "involvedObject.kind=Pod"},
                        index=_involved_key,
                        watch_timeout=self.watch_timeout,
                    )
                else:  # nodes, or every pod (the GPUs used on shared nodes)
                    informer = Informer(
                        api,
                        resource,
                        namespace,
                        self.log,
                        keep=slim_pod if resource == "pods" else None,
                        watch_timeout=self.watch_timeout,
                    )
                self._informers[key] = informer
                informer.start()
        await informer.synced.wait()
        return informer

    def _namespace(self, identity: ServerIdentity) -> str:
        if self.user_namespaces:
            return dns_label(self.user_namespace_prefix, identity.user)
        return str(self.namespace)

    def _scope(self) -> str | None:
        """Where the shared pod and event watches look: every namespace with per-user namespaces."""
        return None if self.user_namespaces else str(self.namespace)

    def namespace_for(self, identity: ServerIdentity) -> str | None:
        """The namespace ``identity``'s server runs in (the spawner renders manifests for it)."""
        return self._namespace(identity)

    def _pod_key(self, identity: ServerIdentity, state: Mapping[str, Any] | None = None) -> tuple[str, str]:
        state = state or {}
        namespace = str(state.get("namespace") or self._namespace(identity))
        name = str(state.get("pod") or ServerNames(identity.user, identity.server).pod)
        return namespace, name

    # --- start ---------------------------------------------------------------------------------

    def admission(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._admission()

    @contextlib.asynccontextmanager
    async def _admission(self) -> AsyncIterator[None]:
        """Wait for a turn to start a server before the spawner's own CPU work for it.

        ``async with backend.admission(): ... await backend.start(request)``: in a burst of
        spawns, resolving and rendering then happen in turn too, so the spawns complete in the
        order they came instead of all rendering first. The first ``start`` within the block
        (in this task or one it creates) takes the turn over; if none is called (the spawner
        failed first), leaving the block gives the turn back.
        """
        await self._gate.enter()
        turn = _Turn(self._gate)
        token = _ADMITTED.set(turn)
        try:
            yield
        finally:
            _ADMITTED.reset(token)
            if turn.held:
                turn.held = False
                self._gate.leave()

    async def start(self, request: StartRequest) -> Started:
        # Progress is readable from the first moment, also while this start waits for its turn.
        metadata = request.manifests.pod["metadata"]
        key = f"{metadata['namespace']}/{metadata['name']}"
        progress = self._progress[key] = _Progress()
        try:
            return await self._submit_and_start(request, progress)
        finally:
            progress.finish()
            if self._progress.get(key) is progress:
                del self._progress[key]

    async def _submit_and_start(self, request: StartRequest, progress: _Progress) -> Started:
        # The gate is held while this start writes (namespace, PVC, pod), not while it waits.
        turn = _ADMITTED.get()
        if turn is not None and turn.held and turn.gate is self._gate:
            turn.held = False  # admitted already: this start owns that turn now
        else:
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

    def _deadline(self, seconds: float | None = None) -> float:
        """The monotonic instant until which API calls of one operation are retried."""
        return time.monotonic() + (self.api_retry_budget if seconds is None else seconds)

    async def _start(
        self, request: StartRequest, progress: _Progress, submitted: Callable[[], None]
    ) -> Started:
        api = await self._client()
        deadline = self._deadline(request.timeout)
        pod = request.manifests.pod
        namespace = pod["metadata"]["namespace"]
        name = pod["metadata"]["name"]
        state: dict[str, Any] = {
            k: v for k, v in request.state.items() if k in ("namespace_ready", "home_ready")
        }
        state.update(namespace=namespace, pod=name)
        try:
            if self.user_namespaces and not state.get("namespace_ready"):
                # Every server of a user shares the namespace: create it once per hub process
                # (after a restart a first create meets a 409, which is fine).
                if namespace not in self._namespaces_made:
                    await self._ensure_namespace(api, namespace, deadline)
                    self._namespaces_made.add(namespace)
                state["namespace_ready"] = True
            pods = await self._informer("pods", self._scope())
            events = await self._informer("events", self._scope())
            home = request.manifests.home
            if request.options.home is not None and request.options.home.reset and home is not None:
                progress.add(ProgressEvent("Emptying your home, as you asked", 5))
                await self._ensure_gone(api, pods, namespace, name, deadline)
                await self._reset_home(api, namespace, home, request.manifests.names, deadline)
                state["home_ready"] = False
            if home is not None and not state.get("home_ready"):
                progress.add(ProgressEvent("Preparing your home volume", 10))
                with contextlib.suppress(Conflict):  # the home of an earlier start is kept
                    await api.create("persistentvolumeclaims", namespace, home, deadline=deadline)
                state["home_ready"] = True
            state["home"] = home["metadata"]["name"] if home is not None else None
            running = await self._create_and_wait(api, pods, events, request, progress, submitted, deadline)
            progress.add(ProgressEvent("Your server is ready", 100))
        except ApiError as error:
            raise BackendError(f"The cluster refused to start your server: {error}") from error
        finally:
            progress.finish()
        state["uid"] = running["metadata"].get("uid")
        return Started(Endpoint(running["status"]["podIP"], request.single_user.port), state)

    async def _ensure_namespace(self, api: KubeApi, namespace: str, deadline: float) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"app.kubernetes.io/managed-by": "einfra-spawner"}},
        }
        with contextlib.suppress(Conflict):  # made by an earlier hub process
            await api.create_namespace(body, deadline=deadline)

    async def _create_and_wait(
        self,
        api: KubeApi,
        pods: Informer,
        events: Informer,
        request: StartRequest,
        progress: _Progress,
        submitted: Callable[[], None],
        deadline: float,
    ) -> dict[str, Any]:
        manifest = request.manifests.pod
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        key = f"{namespace}/{name}"
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[dict[str, Any]] = loop.create_future()
        watcher = _StartWatcher(self, request.options, outcome, progress, self.unschedulable_grace)
        unsubscribe = [pods.subscribe(key, watcher.on_pod), events.subscribe(key, watcher.on_event)]

        # Removing what a failed start made may wait for the API, but not beyond the start's
        # deadline (plus one request): the user is told at once, the reconciler does the rest.
        def soon() -> float:
            return max(deadline, time.monotonic() + self.request_timeout)

        try:
            for _ in range(3):
                try:
                    created = await api.create("pods", namespace, manifest, deadline=deadline)
                except MaybeCreated:
                    # The API never said whether the pod was made: make sure it was not.
                    await self._remove_quietly(api, pods, namespace, name, soon())
                    raise
                except Conflict:
                    existing = pods.cache.get(key)
                    if existing is None:  # not ours (not in our watch), or not seen yet
                        existing = await api.get("pods", namespace, name, deadline=deadline)
                    labels = (existing.get("metadata") or {}).get("labels") or {}
                    if not _is_servers_pod(labels, request):
                        raise BackendError(
                            f"A pod named {name} exists in namespace {namespace} and is not this hub's; "
                            "nothing was changed. Please ask an operator to remove it."
                        ) from None
                    if labels.get(LABEL_SPEC_HASH) == request.manifests.spec_hash and not existing[
                        "metadata"
                    ].get("deletionTimestamp"):
                        self.log.info("adopting pod %s left by an earlier start", key)
                        created = existing
                    else:
                        self.log.info("deleting stale pod %s before starting again", key)
                        progress.add(ProgressEvent("Removing an old copy of your server", 15))
                        await self._ensure_gone(api, pods, namespace, name, deadline)
                        continue
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
                await self._remove_quietly(api, pods, namespace, name, soon())
                raise
        except asyncio.CancelledError:
            # The hub gave up (start timeout or shutdown), perhaps while a create was on its
            # way: leave nothing running behind, without keeping the cancellation waiting.
            self._remove_later(api, pods, namespace, name)
            raise
        finally:
            watcher.close()
            for stop_listening in unsubscribe:
                stop_listening()

    def _remove_later(self, api: KubeApi, pods: Informer, namespace: str, name: str) -> None:
        """Remove the pod of a cancelled start in the background (within ``api_retry_budget``)."""
        task = asyncio.ensure_future(self._remove_quietly(api, pods, namespace, name, self._deadline()))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _remove_quietly(
        self, api: KubeApi, pods: Informer, namespace: str, name: str, deadline: float
    ) -> None:
        """Remove the pod of a start that will not run; if the API does not answer, the
        reconciler removes it later (no hub knows it)."""
        try:
            await api.delete("pods", namespace, name, grace=0, deadline=deadline)
        except NotFound:
            pass
        except ApiError as error:
            self.log.warning(
                "could not remove failed pod %s/%s (%s); the reconciler will", namespace, name, error
            )
            return
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(self._gone(pods, f"{namespace}/{name}"), self.stop_timeout)

    async def _gone(self, pods: Informer, key: str) -> None:
        """Return once the pod ``key`` is not in the watch cache (woken by its DELETED event)."""
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()

        def on_pod(kind: str, _: dict[str, Any]) -> None:
            if kind == "DELETED" and not gone.done():
                gone.set_result(None)

        unsubscribe = pods.subscribe(key, on_pod)
        try:
            if key in pods.cache:
                await gone
        finally:
            unsubscribe()

    async def _ensure_gone(
        self, api: KubeApi, pods: Informer, namespace: str, name: str, deadline: float
    ) -> None:
        key = f"{namespace}/{name}"
        if key not in pods.cache:
            return
        with contextlib.suppress(NotFound):
            await api.delete("pods", namespace, name, grace=self.delete_grace_seconds, deadline=deadline)
        await asyncio.wait_for(self._gone(pods, key), self.stop_timeout)

    async def _reset_home(
        self, api: KubeApi, namespace: str, home: dict[str, Any], names: ServerNames, deadline: float
    ) -> None:
        """Delete this server's home PVC — only one whose labels name this user and server."""
        claim = home["metadata"]["name"]
        try:
            existing = await api.get("persistentvolumeclaims", namespace, claim, deadline=deadline)
        except NotFound:
            return
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_USER) != names.user_label or labels.get(LABEL_SERVER) != names.server_label:
            raise BackendError(
                f"Your home cannot be reset: the volume {claim!r} is not labelled as this server's home. "
                "Nothing was deleted; please contact the operators."
            )
        with contextlib.suppress(NotFound):
            await api.delete("persistentvolumeclaims", namespace, claim, deadline=deadline)
        # The claim lingers until its volume is released; a rare path, so a bounded re-read is fine.
        released = time.monotonic() + self.stop_timeout
        delay = 0.05
        while time.monotonic() < released:
            try:
                await api.get("persistentvolumeclaims", namespace, claim, deadline=deadline)
            except NotFound:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise BackendError("Your old home is still being released; please try again in a minute.")

    # --- stop, poll, progress ----------------------------------------------------------------------

    async def stop(self, identity: ServerIdentity, state: Mapping[str, Any]) -> None:
        api = await self._client()
        namespace, name = self._pod_key(identity, state)
        pods = await self._informer("pods", self._scope())
        try:
            async with self._gate.held():
                await api.delete(
                    "pods", namespace, name, grace=self.delete_grace_seconds, deadline=self._deadline()
                )
        except NotFound:
            pass
        except ApiError as error:
            raise BackendError(f"The cluster refused to stop your server: {error}") from error
        try:
            await asyncio.wait_for(self._gone(pods, f"{namespace}/{name}"), self.stop_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise BackendError(
                f"Your server was asked to stop but is still there after {self.stop_timeout:g} s."
            ) from None

    async def poll(self, identity: ServerIdentity, state: Mapping[str, Any]) -> int | None:
        if not state.get("pod"):
            return 0
        namespace, name = self._pod_key(identity, state)
        pods = await self._informer("pods", self._scope())
        pod = pods.cache.get(f"{namespace}/{name}")
        if pod is None:
            return 0
        if state.get("uid") and pod["metadata"].get("uid") != state["uid"]:
            return 0  # a different pod of the same name: ours is gone
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (container.get("state") or {}).get("terminated")
                if terminated:
                    return int(terminated.get("exitCode") or 0) or (1 if phase == "Failed" else 0)
            return 1 if phase == "Failed" else 0
        return None

    async def progress(
        self, identity: ServerIdentity, state: Mapping[str, Any]
    ) -> AsyncIterator[ProgressEvent]:
        namespace, name = self._pod_key(identity)
        current = self._progress.get(f"{namespace}/{name}")
        if current is None:
            return
        async for event in current.stream():
            yield event

    # --- the reconciler's view ---------------------------------------------------------------------

    async def inventory(self, instance: str) -> list[ServerRecord] | None:
        """The pods of ``instance`` in the shared pod cache (no API read); ``None`` until the
        pod watch has synced."""
        try:
            pods = await asyncio.wait_for(self._informer("pods", self._scope()), self.request_timeout)
        except Exception:  # not synced (the API is away): the reconciler waits for a later pass
            return None
        return records_from_pods(pods.cache.values(), instance)

    async def remove(self, record: ServerRecord) -> None:
        """Delete an orphaned pod and wait until it is gone; a pod of the same name with another
        uid (a new start of that server) is not the orphan, and is left alone."""
        namespace, name, uid = (str(record.ref.get(key) or "") for key in ("namespace", "pod", "uid"))
        if not namespace or not name:
            raise BackendError(f"cannot remove {record.description}: it names no pod")
        api = await self._client()
        pods = await self._informer("pods", self._scope())
        key = f"{namespace}/{name}"
        current = pods.cache.get(key)
        if current is None or (uid and current["metadata"].get("uid") != uid):
            return
        try:
            async with self._gate.held():
                await api.delete(
                    "pods", namespace, name, grace=self.delete_grace_seconds, deadline=self._deadline()
                )
        except NotFound:
            pass
        except ApiError as error:
            raise BackendError(f"The cluster refused to remove {key}: {error}") from error
        try:
            await asyncio.wait_for(self._gone(pods, key), self.stop_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            message = f"{key} was deleted but is still there after {self.stop_timeout:g} s."
            raise BackendError(message) from None

    # --- capacity ---------------------------------------------------------------------------------

    async def gpu_capacity(self, gpu_types: Mapping[str, GpuType]) -> dict[str, GpuCapacity]:
        if not gpu_types:
            return {}
        now = time.monotonic()
        if self._capacity is not None and now - self._capacity[0] < self.capacity_cache_seconds:
            cached = self._capacity[1]
            if set(cached) >= set(gpu_types):
                return {k: cached[k] for k in gpu_types}
        nodes = await self._informer("nodes", None)
        if self.capacity_all_namespaces:
            pod_informer = await self._informer("pods", None, managed_only=False)
        else:
            pod_informer = await self._informer("pods", self._scope())
        figures = gpu_capacity(gpu_types, nodes.cache.values(), pod_informer.cache.values())
        self._capacity = (now, figures)
        return figures

    async def capacity_of(self, gpu: ResolvedGpu) -> GpuCapacity | None:
        """The capacity of one granted GPU type, for a failure message (``None`` if unreadable)."""
        gpu_type = GpuType(
            display_name=gpu.display_name, resource=gpu.resource, node_selector=dict(gpu.node_selector)
        )
        try:
            nodes = await asyncio.wait_for(self._informer("nodes", None), 2.0)
            pods = await self._informer("pods", self._scope())
        except Exception:  # capacity only improves a message; never fail a failure on it
            return None
        return gpu_capacity({gpu.id: gpu_type}, nodes.cache.values(), pods.cache.values())[gpu.id]

    async def close(self) -> None:
        cleanups = list(self._cleanups)
        for task in cleanups:  # what is left is the reconciler's
            task.cancel()
        await asyncio.gather(*cleanups, return_exceptions=True)
        for informer in self._informers.values():
            await informer.close()
        self._informers.clear()
        if self._api is not None:
            await self._api.close()
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None
            self._api = None


def _is_servers_pod(labels: Mapping[str, str], request: StartRequest) -> bool:
    """Whether a pod with these labels is one of this hub instance's, for this very server."""
    return (
        labels.get(_MANAGED_BY[0]) == _MANAGED_BY[1]
        and labels.get("app.kubernetes.io/instance") == request.options.instance
        and labels.get(LABEL_SERVER) == request.manifests.names.server_label
    )


class _StartWatcher:
    """Turns the updates of one starting pod and its events into progress and one outcome."""

    def __init__(
        self,
        backend: KubernetesBackend,
        options: ResolvedOptions,
        outcome: asyncio.Future[dict[str, Any]],
        progress: _Progress,
        unschedulable_grace: float,
    ) -> None:
        self.backend = backend
        self.options = options
        self.outcome = outcome
        self.progress = progress
        self.grace = unschedulable_grace
        self.uid: str | None = None
        self.early: list[tuple[str, str, dict[str, Any]]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.timer: asyncio.TimerHandle | None = None

    def watch_uid(self, uid: str, pod: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """From now on only this pod counts; replay what arrived before its uid was known
        (``events``: the cached events of this pod's name)."""
        self.uid = uid
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
            elif (pod.get("spec") or {}).get("nodeName") and self.timer is not None:
                self.timer.cancel()  # scheduled after all: stop the unschedulable countdown
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
        self.progress.add(progress_from_event(event))
        if event.get("reason") == "FailedScheduling" and self.options.gpu is not None:
            # The message names the GPU's free count; reading it may take a moment.
            task = asyncio.create_task(self._fail_unschedulable(event))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        failure = failure_from_event(event, self.options, None)
        if failure is None:
            return
        if event.get("reason") == "FailedScheduling" and self.grace > 0:
            if self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(self.grace, self._fail, failure)
            return
        self._fail(failure)

    async def _fail_unschedulable(self, event: dict[str, Any]) -> None:
        gpu = self.options.gpu
        capacity = await self.backend.capacity_of(gpu) if gpu is not None else None
        failure = failure_from_event(event, self.options, capacity)
        if failure is None or self.outcome.done():
            return
        if self.grace > 0:
            if self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(self.grace, self._fail, failure)
            return
        self._fail(failure)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for task in self.tasks:
            task.cancel()
