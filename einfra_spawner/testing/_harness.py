"""FakeKubernetes: the test harness's composition root, run on the current event loop.

It wires the store, the API semantics, the simulated scheduler, kubelet and volume
controllers, fault injection and request counters into one aiohttp application listening on
loopback, and gives tests what they need around it: the URL, a kubeconfig, a configured
kubernetes_asyncio ``Configuration``, direct read access to the stored objects, and a way to
wait for a condition without polling.

This is a test harness, not a cluster: see docs/testing-harness.md for what it simulates.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from ._config import ImageMatcher, ImageRules, Timings
from ._control import control_routes
from ._defaults import new_uid, now
from ._events import EventRecorder
from ._faults import Faults
from ._kubelet import Kubelet
from ._nodes import FakeNode, default_nodes, node_object
from ._processes import ProcessRunner
from ._resources import ResourceApi
from ._scheduler import Scheduler
from ._server import ApiHandlers, RequestStats
from ._store import Change, Store
from ._validate import DEFAULT_SCHEMA_VERSION, ObjectValidator
from ._volumes import VolumeController

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes_asyncio.client import ApiClient, Configuration

JsonDict = dict[str, Any]
log = logging.getLogger(__name__)
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class FakeKubernetes:
    """A fake Kubernetes API server with a simulated scheduler and kubelet, for tests.

    Use it as ``async with FakeKubernetes(nodes=[...]) as k8s:`` and point a
    kubernetes_asyncio client at ``k8s.url`` (see :meth:`client_configuration` and
    :meth:`write_kubeconfig`). It serves core/v1 pods, persistentvolumeclaims, secrets,
    configmaps, events, nodes and namespaces on loopback; it is not a cluster.

    ``nodes`` defaults to :func:`default_nodes` (CPU and GPU nodes). ``validate`` checks every
    written object against the OpenAPI schema of ``schema_version`` and the harness's own
    rules (422 when invalid); switch it off for benchmarks. ``process_mode`` runs each Running
    pod's first container as a local process on its own 127.0.0.N address;
    ``wait_for_port`` then reports it Running only once its first container port accepts
    connections. ``image_pull_failures`` and ``crashing_images`` are image references (or a
    predicate) whose pull fails or whose container exits with code 1. ``latency`` (seconds),
    ``error_rate`` and ``throttle_rate`` (probabilities) and ``seed`` configure
    :attr:`faults`. ``bookmark_interval`` is the seconds between BOOKMARK events on watches
    that allow them; ``watch_timeout`` ends watches that give no ``timeoutSeconds``;
    ``history_limit`` is how many changes a watch can resume across before 410 Expired.
    """

    def __init__(
        self,
        nodes: Sequence[FakeNode] | None = None,
        *,
        namespaces: Iterable[str] = (),
        validate: bool = True,
        schema_version: str = DEFAULT_SCHEMA_VERSION,
        process_mode: bool = False,
        wait_for_port: bool = False,
        timings: Timings | None = None,
        image_pull_failures: Collection[str] | ImageMatcher = (),
        crashing_images: Collection[str] | ImageMatcher = (),
        latency: float = 0.0,
        error_rate: float = 0.0,
        throttle_rate: float = 0.0,
        seed: int | None = 0,
        bookmark_interval: float = 1.0,
        watch_timeout: float = 1800.0,
        history_limit: int = 10_000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.nodes = list(default_nodes() if nodes is None else nodes)
        self.timings = timings or Timings()
        self.store = Store(history_limit=history_limit)
        self.api = ResourceApi(
            self.store, ObjectValidator(schema_version=schema_version) if validate else None
        )
        self.faults = Faults(latency=latency, error_rate=error_rate, throttle_rate=throttle_rate, seed=seed)
        self.stats = RequestStats()
        self.image_pull_failures = ImageRules(image_pull_failures)
        self.crashing_images = ImageRules(crashing_images)
        self.recorder = EventRecorder(self.api)
        self.kubelet = Kubelet(
            self.api,
            self.recorder,
            self.timings,
            pull_failures=self.image_pull_failures,
            crashing_images=self.crashing_images,
            processes=ProcessRunner() if process_mode else None,
            wait_for_port=wait_for_port,
        )
        self.scheduler = Scheduler(self.api, self.recorder, self.timings, on_bound=self.kubelet.start)
        self.volumes = VolumeController(self.api, self.recorder, self.timings)
        self.api.on_pod_deletion = self.kubelet.on_pod_deletion
        self._namespaces = [*SYSTEM_NAMESPACES, *(n for n in namespaces if n not in SYSTEM_NAMESPACES)]
        self._handlers = ApiHandlers(
            store=self.store,
            api=self.api,
            faults=self.faults,
            stats=self.stats,
            bookmark_interval=bookmark_interval,
            watch_timeout=watch_timeout,
            pod_log=self._pod_log,
        )
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._changed = asyncio.Event()
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def process_mode(self) -> bool:
        return self.kubelet.processes is not None

    def _seed(self) -> None:
        for name in self._namespaces:
            self.api.create("namespaces", "", {"metadata": {"name": name}}, trusted=True)
        for index, node in enumerate(self.nodes):
            self._add_node_object(node, index)

    def _add_node_object(self, node: FakeNode, index: int) -> JsonDict:
        return self.api.create("nodes", "", node_object(node, index, new_uid(), now()), trusted=True)

    def _on_change(self, change: Change) -> None:
        self._changed.set()

    async def start(self) -> FakeKubernetes:
        """Seed namespaces and nodes and start listening; returns self."""
        if self._runner is not None:
            return self
        self.store.listeners.extend(
            [
                self.scheduler.on_change,
                self.volumes.on_change,
                self.kubelet.on_change,
                self._on_change,
            ]
        )
        self._seed()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.add_routes(self._handlers.routes())
        app.add_routes(control_routes(self))
        app.add_routes([web.route("*", "/{tail:.*}", self._handlers.unknown)])
        # handler_cancellation: a client that closes a watch ends its handler at once.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner
        host, port = sock.getsockname()[:2]
        self._url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        log.info("fake Kubernetes API server (test harness) listening on %s", self._url)
        return self

    async def close(self) -> None:
        """Stop serving, end all watches, stop the simulation and kill every process started."""
        if self._closed:
            return
        self._closed = True
        self.store.drop_watches()
        self.scheduler.close()
        self.volumes.close()
        await self.kubelet.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKubernetes:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- connecting a client -------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``; only after :meth:`start`."""
        if self._url is None:
            raise RuntimeError("the fake API server is not started")
        return self._url

    def kubeconfig(self, namespace: str = "default") -> JsonDict:
        """A kubeconfig (as a dict) whose current context points at this server."""
        return kubeconfig_for(self.url, namespace)

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write :meth:`kubeconfig` to ``path`` for ``kubernetes_asyncio.config.load_kube_config``."""
        target = Path(path)
        target.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False))
        return target

    def client_configuration(self) -> Configuration:
        """A kubernetes_asyncio ``Configuration`` for this server."""
        from kubernetes_asyncio.client import Configuration

        configuration = Configuration(host=self.url)
        configuration.verify_ssl = False
        return configuration

    def api_client(self) -> ApiClient:
        """A kubernetes_asyncio ``ApiClient`` for this server; the caller must close it."""
        from kubernetes_asyncio.client import ApiClient

        return ApiClient(self.client_configuration())

    # --- looking inside ------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> JsonDict | None:
        """The stored object (read-only: do not mutate it), or None."""
        return self.store.get(resource, namespace, name)

    def objects(self, resource: str, namespace: str | None = None) -> list[JsonDict]:
        return self.store.items(resource, namespace)

    def events_for(self, name: str, namespace: str = "default") -> list[JsonDict]:
        """Events about the object called ``name``, oldest first."""
        return [
            event
            for event in self.store.items("events", namespace)
            if event["involvedObject"].get("name") == name
        ]

    async def wait_for(self, condition: Callable[[], object], timeout: float = 5.0) -> None:
        """Wait until ``condition()`` is true, re-checking after every change in the store
        (and every 20 ms, for conditions on things that are not objects, such as watches)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.02))
            except asyncio.TimeoutError:
                continue

    async def wait_for_pod_phase(
        self, namespace: str, name: str, phase: str, timeout: float = 5.0
    ) -> JsonDict:
        """Wait until the pod is in ``phase`` (e.g. "Running"); returns the pod."""

        def reached() -> bool:
            pod = self.store.get("pods", namespace, name)
            return pod is not None and pod.get("status", {}).get("phase") == phase

        await self.wait_for(reached, timeout)
        pod = self.store.get("pods", namespace, name)
        assert pod is not None  # checked by reached()
        return pod

    def _pod_log(self, namespace: str, name: str, uid: str) -> str:
        processes = self.kubelet.processes
        return processes.log(uid) if processes is not None else ""

    # --- changing the scenario -----------------------------------------------------------

    def add_node(self, node: FakeNode) -> JsonDict:
        """Add a node while running; pending pods are retried against it."""
        self.nodes.append(node)
        return self._add_node_object(node, len(self.nodes) - 1)

    def create_namespace(self, name: str) -> JsonDict:
        return self.api.create("namespaces", "", {"metadata": {"name": name}}, trusted=True)

    def inject_fault(
        self, status: int, *, verb: str | None = None, resource: str | None = None, count: int = 1
    ) -> None:
        """The next ``count`` requests matching ``verb``/``resource`` fail with ``status``."""
        self.faults.inject(status, verb=verb, resource=resource, count=count)

    def drop_watches(self, resource: str | None = None) -> int:
        """End open watches cleanly (as a real server does on timeout); returns how many."""
        return self.store.drop_watches(resource)

    def compact(self) -> None:
        """Forget the change history: watches from an older resourceVersion get 410 Expired."""
        self.store.compact()

    def request_count(self, verb: str | None = None, resource: str | None = None) -> int:
        return self.stats.count(verb, resource)

    def stats_json(self) -> JsonDict:
        """What ``GET /_harness/stats`` returns."""
        return {
            "requests": self.stats.as_json(),
            "total": self.stats.count(),
            "objects": {
                name: self.store.count(name)
                for name in (
                    "pods",
                    "persistentvolumeclaims",
                    "persistentvolumes",
                    "secrets",
                    "configmaps",
                    "events",
                    "nodes",
                    "namespaces",
                )
            },
            "resourceVersion": str(self.store.resource_version),
            "watches": self.store.watcher_count(),
            "faultsInjected": self.faults.injected_count,
            "pendingPods": [f"{ns}/{name}" for ns, name in self.scheduler.pending],
        }


def kubeconfig_for(url: str, namespace: str = "default") -> JsonDict:
    """A kubeconfig for a fake API server at ``url`` (no credentials: it checks none)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "einfra-fake", "cluster": {"server": url}}],
        "users": [{"name": "einfra-fake", "user": {}}],
        "contexts": [
            {
                "name": "einfra-fake",
                "context": {"cluster": "einfra-fake", "user": "einfra-fake", "namespace": namespace},
            }
        ],
        "current-context": "einfra-fake",
        "preferences": {},
    }
