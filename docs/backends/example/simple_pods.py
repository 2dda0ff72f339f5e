"""simple_pods: a deliberately small einfra-spawner backend (a pod and its home volume per server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable

from einfra_spawner import BackendError, ServerIdentity
from einfra_spawner.backend import (
    BackendBase,
    BackendFeatures,
    Endpoint,
    GpuCapacity,
    ProgressEvent,
    Started,
    StartRequest,
)
from einfra_spawner.models import GpuType


class SimplePodsBackend(BackendBase, LoggingConfigurable):
    """Runs each server as one pod, polling its phase (a real backend would watch).

    It keeps no inventory (``BackendBase``'s default), so the reconciler leaves its pods alone."""

    # A pod listens on its own network namespace; a reset deletes the home volume.
    features = BackendFeatures(listen_ip="0.0.0.0", reset_keeps_old_home=False)  # noqa: S104

    api_url = Unicode("http://127.0.0.1:8001", help="URL of the Kubernetes API server.").tag(config=True)
    start_timeout = Float(120.0, help="Seconds a pod may take to run. Default: 120.").tag(config=True)

    def namespace_for(self, identity: ServerIdentity) -> str:
        return "default"

    def _api(self) -> client.ApiClient:
        return client.ApiClient(client.Configuration(host=self.api_url))

    async def start(self, request: StartRequest) -> Started:
        pod = request.manifests.pod
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        async with self._api() as api:
            v1 = client.CoreV1Api(api)
            if request.manifests.home is not None:
                try:
                    await v1.create_namespaced_persistent_volume_claim(namespace, request.manifests.home)
                except ApiException as exc:
                    if exc.status != 409:  # the home of an earlier start is kept
                        raise
            await v1.create_namespaced_pod(namespace, pod)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.start_timeout
            while loop.time() < deadline:
                status = (await v1.read_namespaced_pod(name, namespace)).status
                if status.phase == "Running" and status.pod_ip:
                    port = request.single_user.port
                    return Started(Endpoint(status.pod_ip, port), {"pod": name, "namespace": namespace})
                if status.phase in ("Failed", "Succeeded"):
                    break
                await asyncio.sleep(0.2)
            await v1.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        raise BackendError(f"Your server did not start within {self.start_timeout:.0f} seconds.")

    async def stop(self, identity: ServerIdentity, state: Mapping[str, Any]) -> None:
        async with self._api() as api:
            v1 = client.CoreV1Api(api)
            try:
                await v1.delete_namespaced_pod(state["pod"], state["namespace"])
                while True:  # the protocol: return once the server is gone
                    await v1.read_namespaced_pod(state["pod"], state["namespace"])
                    await asyncio.sleep(0.2)
            except ApiException as exc:
                if exc.status != 404:  # gone (or already gone) is what we want
                    raise BackendError(f"Could not stop your server: {exc.reason}") from exc

    async def poll(self, identity: ServerIdentity, state: Mapping[str, Any]) -> int | None:
        if not state:
            return 0
        async with self._api() as api:
            try:
                pod = await client.CoreV1Api(api).read_namespaced_pod(state["pod"], state["namespace"])
            except ApiException as exc:
                if exc.status == 404:
                    return 0
                return None  # not knowing is not "stopped"
        return None if pod.status.phase in ("Pending", "Running") else 0

    async def progress(
        self, identity: ServerIdentity, state: Mapping[str, Any]
    ) -> AsyncIterator[ProgressEvent]:
        yield ProgressEvent("Starting your pod", progress=50)

    async def gpu_capacity(self, gpu_types: Mapping[str, GpuType]) -> dict[str, GpuCapacity]:
        return {}  # unknown: the form then shows no figures
