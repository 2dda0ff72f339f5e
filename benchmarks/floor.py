"""The floor of the spawn storm: the least a Python hub can do per spawn, written plainly.

No JupyterHub, no spawner logic, no options, no retries: the pod (and, in the ``home`` variant,
its claim) is serialised once to bytes, and a start is one byte substitution of the name, one
``POST`` over one keep-alive aiohttp session, and a future that the one shared pod watch
resolves when the pod runs. A stop is one ``DELETE`` and a future resolved by the watch's
``DELETED``; a poll is a dict lookup. Used by ``storm_trial.py --spawner floor`` and by the
scale benchmark; it is what our spawner's cost per start is measured against.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp

IMAGE = "quay.io/jupyter/minimal-notebook:2025-03-10"
LABEL = "app.kubernetes.io/managed-by=storm-floor"
_NAME = b"@@NAME@@"


def pod_body(home: bool) -> dict[str, Any]:
    """The same pod as the storm's profiles: the image, 1-2 CPUs, 4-8Gi, non-root, and a 10Gi
    claim mounted as the home in the ``home`` variant."""
    container: dict[str, Any] = {
        "name": "notebook",
        "image": IMAGE,
        "args": ["jupyterhub-singleuser"],
        "ports": [{"name": "notebook", "containerPort": 8888}],
        "resources": {
            "requests": {"cpu": "1", "memory": "4Gi"},
            "limits": {"cpu": "2", "memory": "8Gi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 100,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "restartPolicy": "OnFailure",
        "securityContext": {"fsGroup": 100},
        "automountServiceAccountToken": False,
    }
    if home:
        container["volumeMounts"] = [{"name": "home", "mountPath": "/home/jovyan"}]
        spec["volumes"] = [{"name": "home", "persistentVolumeClaim": {"claimName": "@@NAME@@"}}]
    key, value = LABEL.split("=")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "@@NAME@@", "labels": {key: value}},
        "spec": spec,
    }


def claim_body() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "@@NAME@@"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "standard",
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }


class FloorHub:
    """One session, one pod watch, and the futures of the starts and stops waiting on it."""

    def __init__(self, url: str, namespace: str, home: bool) -> None:
        self.url = url.rstrip("/")
        self.namespace = namespace
        self.home = home
        self.pod_bytes = json.dumps(pod_body(home), separators=(",", ":")).encode()
        self.claim_bytes = json.dumps(claim_body(), separators=(",", ":")).encode()
        self.running: dict[str, str] = {}  # pod name -> IP
        self.starting: dict[str, asyncio.Future[str]] = {}
        self.stopping: dict[str, asyncio.Future[None]] = {}
        self.session: aiohttp.ClientSession | None = None
        self._watch: asyncio.Task[None] | None = None
        self._synced: asyncio.Future[None] | None = None

    @property
    def _pods(self) -> str:
        return f"{self.url}/api/v1/namespaces/{self.namespace}/pods"

    async def warm(self) -> None:
        """Open the session and start the watch (a list for its resourceVersion, then a watch)."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), headers={"Content-Type": "application/json"}
        )
        self._synced = asyncio.get_running_loop().create_future()
        self._watch = asyncio.create_task(self._run())
        await self._synced

    async def _run(self) -> None:
        assert self.session is not None and self._synced is not None
        async with self.session.get(self._pods, params={"labelSelector": LABEL}) as response:
            listed = await response.json()
        for pod in listed.get("items") or []:
            self._seen("ADDED", pod)
        version = listed["metadata"]["resourceVersion"]
        self._synced.set_result(None)
        params = {"watch": "true", "labelSelector": LABEL, "timeoutSeconds": "3600"}
        while True:  # a watch the server ends is resumed where it was
            params["resourceVersion"] = version
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
            async with self.session.get(self._pods, params=params, timeout=timeout) as response:
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    pod = event.get("object") or {}
                    version = (pod.get("metadata") or {}).get("resourceVersion") or version
                    self._seen(str(event.get("type")), pod)

    def _seen(self, kind: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self.running.pop(name, None)
            gone = self.stopping.pop(name, None)
            if gone is not None and not gone.done():
                gone.set_result(None)
            return
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if status.get("phase") == "Running" and ip:
            self.running[name] = ip
            waiting = self.starting.pop(name, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(ip)

    async def create(self, name: str) -> str:
        """Create the pod (and its claim) and wait until the watch sees it running."""
        assert self.session is not None
        running = self.starting[name] = asyncio.get_running_loop().create_future()
        encoded = name.encode()
        if self.home:
            claims = f"{self.url}/api/v1/namespaces/{self.namespace}/persistentvolumeclaims"
            async with self.session.post(claims, data=self.claim_bytes.replace(_NAME, encoded)) as response:
                if response.status not in (201, 409):  # 409: the home is kept from an earlier run
                    raise RuntimeError(f"claim {name}: {response.status} {await response.text()}")
        async with self.session.post(self._pods, data=self.pod_bytes.replace(_NAME, encoded)) as response:
            if response.status != 201:
                raise RuntimeError(f"pod {name}: {response.status} {await response.text()}")
        ip: str = await running
        return ip

    async def delete(self, name: str) -> None:
        """Delete the pod and wait until the watch sees it gone."""
        assert self.session is not None
        gone = self.stopping[name] = asyncio.get_running_loop().create_future()
        url = f"{self._pods}/{name}"
        async with self.session.delete(url, params={"gracePeriodSeconds": "1"}) as response:
            if response.status == 404:
                self.stopping.pop(name, None)
                return
            if response.status != 200:
                raise RuntimeError(f"delete {name}: {response.status} {await response.text()}")
        await gone

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self._watch
        if self.session is not None:
            await self.session.close()


class FloorSpawner:
    """The floor's stand-in for a spawner: the calls the storm makes, and nothing else."""

    def __init__(self, hub: FloorHub, index: int) -> None:
        self.hub = hub
        self.name = f"floor-user-{index:04d}"

    def run_pre_spawn_hook(self) -> None:
        return None

    async def start(self) -> tuple[str, int]:
        return await self.hub.create(self.name), 8888

    async def poll(self) -> int | None:
        return None if self.name in self.hub.running else 0

    async def stop(self) -> None:
        await self.hub.delete(self.name)
