"""The Kubernetes backend: submits rendered manifests with kubernetes-asyncio, learns from watches.

Per hub process there is one ``KubernetesBackend`` and, per (kind, namespace), one shared
list+watch for pods and their events (nodes too, once GPU capacity is asked for), held with the
API client by its :class:`~._cluster.Cluster`. A start (:mod:`._start`) writes (at most a
namespace, a PVC and a pod: :mod:`._storage`) and then waits on an asyncio future that the
watch resolves: no reads, no timers on the normal path. States that waiting will not fix (no
free GPU, an image that cannot be pulled, a crash, a missing secret) fail the spawn at once
with a plain-language reason, and the pod is removed (:mod:`._stop`). Stop, poll, progress,
the reconciler's inventory and GPU capacity read the same watch caches.

This module holds the configuration (the traits, ``c.KubernetesBackend.*``) and the backend's
public methods; the work is done in the private modules next to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, Int, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from einfra_spawner import BackendError, ServerIdentity, ServerNames
from einfra_spawner.backend import (
    BackendBase,
    BackendFeatures,
    GpuCapacity,
    ProgressEvent,
    ServerRecord,
    Started,
    StartRequest,
)
from einfra_spawner.models import GpuType
from einfra_spawner.names import dns_label, is_dns1123_label
from einfra_spawner.progress import StartProgress
from einfra_spawner.resolve import ResolvedGpu

from ._api_errors import ApiError, NotFound
from ._capacity_reader import CapacityReader
from ._cluster import Cluster
from ._explain import exit_status
from ._inventory import records_from_pods
from ._pace import Gate
from ._start import Starter
from ._stop import PodRemoval
from ._storage import current_generation, expired_homes, remove_server_storage

__all__ = ["KubernetesBackend"]

_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

#: The longest ``user_namespace_prefix``: a namespace is ``<prefix>-<user>-<digest>`` (the
#: digest is 10 characters) within the 63 of a DNS label, and this leaves the user's name 21.
USER_NAMESPACE_PREFIX_MAX = 30


class KubernetesBackend(BackendBase, LoggingConfigurable):
    """Runs each single-user server as a pod; see ``docs/backends/kubernetes.md``."""

    #: A pod has a network namespace of its own: its server listens on every address in it.
    #: A reset keeps the old home for the instance's ``homes.reset.keep_for``, then deletes it.
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
        help=f"""Prefix of per-user namespace names: a DNS-1123 label of at most
        {USER_NAMESPACE_PREFIX_MAX} characters (lower-case letters, digits and ``-``).

        A user's namespace is ``<prefix>-<user's name folded to DNS characters>-<digest>``,
        at most 63 characters. Checked when the configuration is loaded. Default: ``jupyter``.
        """,
    ).tag(config=True)

    @validate("user_namespace_prefix")
    def _valid_user_namespace_prefix(self, proposal: Any) -> str:
        prefix = str(proposal["value"])
        if len(prefix) > USER_NAMESPACE_PREFIX_MAX or not is_dns1123_label(prefix):
            raise TraitError(
                f"KubernetesBackend.user_namespace_prefix = {prefix!r} cannot begin a namespace name: "
                f"it must be 1 to {USER_NAMESPACE_PREFIX_MAX} lower-case letters, digits or '-', "
                "beginning and ending with a letter or digit (e.g. 'jupyter'), so that "
                "'<prefix>-<user>-<digest>' is a valid namespace name."
            )
        return prefix

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
        self._cluster = Cluster(self)
        # In a burst, a bounded number of starts and stops send requests at a time (see _pace).
        self._gate = Gate(self.concurrent_submissions)
        self._removal = PodRemoval(self, self._cluster, self._gate)
        self._starter = Starter(self, self._cluster, self._gate, self._removal)
        #: The starts in progress, by ``namespace/pod``, for progress().
        self._progress: dict[str, StartProgress] = {}
        self._capacity = CapacityReader(self, self._cluster)

    async def warm_up(self) -> None:
        """Connect and start the shared watches of pods, events and claims (homes and per-server
        volumes) now (the hub is starting), so that the first spawns find them synced."""
        scope = self._cluster.scope()
        await asyncio.gather(
            self._cluster.informer("pods", scope),
            self._cluster.informer("events", scope),
            self._cluster.informer("persistentvolumeclaims", scope),
        )

    def namespace_for(self, identity: ServerIdentity) -> str | None:
        """The namespace ``identity``'s server runs in (the spawner renders manifests for it)."""
        return self._namespace(identity)

    def _namespace(self, identity: ServerIdentity) -> str:
        if self.user_namespaces:
            return dns_label(self.user_namespace_prefix, identity.user)
        return str(self.namespace)

    def _pod_key(self, identity: ServerIdentity, state: Mapping[str, Any] | None = None) -> tuple[str, str]:
        state = state or {}
        namespace = str(state.get("namespace") or self._namespace(identity))
        name = str(state.get("pod") or ServerNames(identity.user, identity.server).pod)
        return namespace, name

    # --- start, stop, poll, progress -------------------------------------------------------------

    async def start(self, request: StartRequest) -> Started:
        # Progress is readable from the first moment, also while this start waits for its turn.
        metadata = request.manifests.pod["metadata"]
        key = f"{metadata['namespace']}/{metadata['name']}"
        progress = self._progress[key] = StartProgress()
        try:
            return await self._starter.start(request, progress)
        finally:
            progress.end()
            if self._progress.get(key) is progress:
                del self._progress[key]

    async def stop(self, identity: ServerIdentity, state: Mapping[str, Any]) -> None:
        namespace, name = self._pod_key(identity, state)
        pods = await self._cluster.informer("pods", self._cluster.scope())
        try:
            await self._removal.delete(pods, namespace, name)
        except ApiError as error:
            raise BackendError(f"The cluster refused to stop your server: {error}") from error
        except TimeoutError:
            raise BackendError(
                f"Your server was asked to stop but is still there after {self.stop_timeout:g} s."
            ) from None

    async def poll(self, identity: ServerIdentity, state: Mapping[str, Any]) -> int | None:
        if not state.get("pod"):
            return 0
        namespace, name = self._pod_key(identity, state)
        pods = await self._cluster.informer("pods", self._cluster.scope())
        pod = pods.cache.get(f"{namespace}/{name}")
        if pod is None:
            return 0
        if state.get("uid") and pod["metadata"].get("uid") != state["uid"]:
            return 0  # a different pod of the same name: ours is gone
        return exit_status(pod)

    async def progress(
        self, identity: ServerIdentity, state: Mapping[str, Any]
    ) -> AsyncIterator[ProgressEvent]:
        namespace, name = self._pod_key(identity)
        current = self._progress.get(f"{namespace}/{name}")
        if current is None:
            return
        async for event in current.follow():
            yield event

    # --- the reconciler's view ---------------------------------------------------------------------

    async def inventory(self, instance: str) -> list[ServerRecord] | None:
        """The pods of ``instance`` in the shared pod cache (no API read); ``None`` until the
        pod watch has synced."""
        try:
            pods = await asyncio.wait_for(
                self._cluster.informer("pods", self._cluster.scope()), self.request_timeout
            )
        except Exception:  # not synced (the API is away): the reconciler waits for a later pass
            return None
        return records_from_pods(pods.cache.values(), instance)

    async def remove(self, record: ServerRecord) -> None:
        """Delete an orphaned pod and wait until it is gone; a pod of the same name with another
        uid (a new start of that server) is not the orphan, and is left alone."""
        namespace, name, uid = (str(record.ref.get(key) or "") for key in ("namespace", "pod", "uid"))
        if not namespace or not name:
            raise BackendError(f"cannot remove {record.description}: it names no pod")
        pods = await self._cluster.informer("pods", self._cluster.scope())
        key = f"{namespace}/{name}"
        current = pods.cache.get(key)
        if current is None or (uid and current["metadata"].get("uid") != uid):
            return
        try:
            await self._removal.delete(pods, namespace, name)
        except ApiError as error:
            raise BackendError(f"The cluster refused to remove {key}: {error}") from error
        except TimeoutError:
            message = f"{key} was deleted but is still there after {self.stop_timeout:g} s."
            raise BackendError(message) from None

    # --- storage ----------------------------------------------------------------------------------

    async def current_home(self, identity: ServerIdentity, instance: str) -> int | None:
        """The generation of the server's current home, from the shared PVC watch (no read).
        A watch that cannot sync (the API is away) fails the start rather than guess: a wrong
        guess would mount an older home."""
        try:
            pvcs = await asyncio.wait_for(
                self._cluster.informer("persistentvolumeclaims", self._cluster.scope()), self.request_timeout
            )
        except (asyncio.TimeoutError, ApiError) as error:
            raise BackendError(
                "Your home cannot be found right now (the cluster does not answer); please try again."
            ) from error
        names = ServerNames(identity.user, identity.server)
        return current_generation(pvcs.cache.values(), instance, names)

    async def delete_storage(self, identity: ServerIdentity, instance: str, *, homes: bool) -> None:
        """Remove the server's per-server volumes (policy ``with_server``) and, with ``homes``,
        its homes, found by their labels in the shared PVC watch."""
        pvcs = await self._cluster.informer("persistentvolumeclaims", self._cluster.scope())
        api = await self._cluster.api()
        names = ServerNames(identity.user, identity.server)
        try:
            removed = await remove_server_storage(
                api, pvcs, instance, names, homes=homes, deadline=self._cluster.deadline()
            )
        except ApiError as error:
            raise BackendError(f"The cluster refused to remove the server's storage: {error}") from error
        for what in removed:
            self.log.info("Removed %s of deleted server %r of user %r", what, identity.server, identity.user)

    async def expire_homes(self, instance: str, now: float) -> list[str]:
        """Delete the homes kept after resets whose time is up (read from the PVC watch)."""
        pvcs = await self._cluster.informer("persistentvolumeclaims", self._cluster.scope())
        api = await self._cluster.api()
        removed = []
        for namespace, name in expired_homes(pvcs.cache.values(), instance, now):
            with contextlib.suppress(NotFound):
                await api.delete("persistentvolumeclaims", namespace, name, deadline=self._cluster.deadline())
            removed.append(f"home {namespace}/{name} kept after a reset")
        return removed

    # --- capacity (see _capacity_reader) -----------------------------------------------------------

    async def gpu_capacity(self, gpu_types: Mapping[str, GpuType]) -> dict[str, GpuCapacity]:
        return await self._capacity.figures(gpu_types)

    async def capacity_of(self, gpu: ResolvedGpu) -> GpuCapacity | None:
        """The capacity of one granted GPU type, for a failure message (``None`` if unreadable)."""
        return await self._capacity.of(gpu)

    async def close(self) -> None:
        """Cancel the removals of cancelled starts' pods (what is left is the reconciler's), stop
        the watches and close the connections."""
        await self._removal.close()
        await self._cluster.close()
