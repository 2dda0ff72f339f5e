"""The Kubernetes backend's connection to its cluster: one API client and the shared watches.

Per hub process there is one :class:`Cluster` (the backend's), built lazily on first use from
the backend's settings: the API client (:class:`~._api.KubeApi`, in-cluster, kubeconfig or a
plain URL) and, per (kind, namespace), one :class:`~._informer.Informer` that every start, stop
and capacity figure reads instead of the API. :meth:`Cluster.close` stops the watches and
closes the connections.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio import client, config

from ._api import KubeApi
from ._informer import Informer, slim_event, slim_pod
from ._retry import RetryPolicy
from ._transport import tls_context

if TYPE_CHECKING:
    from .backend import KubernetesBackend

__all__ = ["MANAGED", "Cluster"]

#: The label selector of the pods this project makes (the pod watch sees only those).
MANAGED = "app.kubernetes.io/managed-by=einfra-spawner"


def _involved_key(event: dict[str, Any]) -> str:
    """``namespace/name`` of the object an event is about: events are indexed by their pod."""
    involved = event.get("involvedObject") or {}
    namespace = involved.get("namespace") or (event.get("metadata") or {}).get("namespace")
    return f"{namespace}/{involved.get('name')}"


class Cluster:
    """The API client and the shared list+watch of each (kind, namespace), made on first use."""

    def __init__(self, settings: KubernetesBackend) -> None:
        # The backend's traits are read when the connection is made, not before.
        self._settings = settings
        self._lock = asyncio.Lock()
        self._api_client: client.ApiClient | None = None
        self._api: KubeApi | None = None
        self._informers: dict[tuple[str, str | None, bool], Informer] = {}

    def scope(self) -> str | None:
        """Where the shared pod and event watches look: every namespace with per-user namespaces."""
        return None if self._settings.user_namespaces else str(self._settings.namespace)

    def deadline(self, seconds: float | None = None) -> float:
        """The monotonic instant until which the API calls of one operation are retried:
        ``seconds`` from now, or the backend's ``api_retry_budget``."""
        return time.monotonic() + (self._settings.api_retry_budget if seconds is None else seconds)

    async def api(self) -> KubeApi:
        """The API client, connected on first use."""
        if self._api is not None:
            return self._api
        async with self._lock:
            if self._api is None:
                self._api = await self._connect()
        return self._api

    async def _connect(self) -> KubeApi:
        settings = self._settings
        configuration = client.Configuration()
        if settings.api_url:
            configuration.host = settings.api_url
        elif settings.kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            await config.load_kube_config(
                config_file=settings.kubeconfig,
                context=settings.kube_context,
                client_configuration=configuration,
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        settings.log.info("Kubernetes API at %s", configuration.host)
        self._api_client = client.ApiClient(configuration)
        policy = RetryPolicy(
            timeout=settings.request_timeout,
            budget=settings.api_retry_budget,
            attempts=settings.request_attempts,
        )
        # Off the event loop: building a TLS context blocks for ~20 ms.
        tls = await asyncio.to_thread(tls_context, configuration)
        return KubeApi(self._api_client, policy, settings.log, connections=settings.api_connections, tls=tls)

    async def informer(self, resource: str, namespace: str | None, *, managed_only: bool = True) -> Informer:
        """The shared, synced watch of ``resource`` in ``namespace`` (started on first use).
        Pods are watched by our label unless ``managed_only`` is off (capacity of shared nodes)."""
        key = (resource, namespace, managed_only)
        informer = self._informers.get(key)
        if informer is None:
            api = await self.api()
            informer = self._informers.get(key)
            if informer is None:
                informer = self._informers[key] = self._make_informer(api, resource, namespace, managed_only)
                informer.start()
        await informer.synced.wait()
        return informer

    def _make_informer(
        self, api: KubeApi, resource: str, namespace: str | None, managed_only: bool
    ) -> Informer:
        log, timeout = self._settings.log, self._settings.watch_timeout
        if resource == "pods" and managed_only:
            selectors = {"label_selector": MANAGED}
            return Informer(
                api, "pods", namespace, log, selectors=selectors, keep=slim_pod, watch_timeout=timeout
            )
        if resource == "persistentvolumeclaims":
            # Homes and per-server volumes: found by label without a read per start.
            selectors = {"label_selector": MANAGED}
            return Informer(api, resource, namespace, log, selectors=selectors, watch_timeout=timeout)
        if resource == "events":
            selectors = {"field_selector": "involvedObject.kind=Pod"}
            return Informer(
                api,
                "events",
                namespace,
                log,
                selectors=selectors,
                index=_involved_key,
                keep=slim_event,
                watch_timeout=timeout,
            )
        # nodes, or every pod (the GPUs used on shared nodes)
        keep = slim_pod if resource == "pods" else None
        return Informer(api, resource, namespace, log, keep=keep, watch_timeout=timeout)

    async def close(self) -> None:
        """Stop every watch and close the connections (a later use connects again)."""
        for informer in self._informers.values():
            await informer.close()
        self._informers.clear()
        if self._api is not None:
            await self._api.close()
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None
            self._api = None
