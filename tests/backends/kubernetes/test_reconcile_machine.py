"""A Hypothesis state machine that plays JupyterHub over EInfraSpawner, the Kubernetes backend (the
test harness), a real SQLite usage ledger and the reconciler, through hub crashes and restarts.

The model is what JupyterHub's database keeps of each server (its persisted spawner state, its
stored ``user_options``, whether it has a server row) and nothing else: after a crash every
spawner object, the runtime and its backend are gone, as in a killed hub process; only the
cluster and the ledger's file remain. Checked (ARCHITECTURE.md, "The hub process and the life
cycle"):

* a server JupyterHub has as running runs (a Running pod) and has exactly one open interval;
* after one reconcile pass, the pods carrying our labels are exactly the servers JupyterHub has
  as running, and so are the open intervals, each of them billed as running;
* a server that ran is billed when it ends: its interval is closed, never dropped as if the
  server had never run;
* a home volume keeps its identity (its uid) unless the request of the start in progress asked
  for ``home: reset`` itself; a stale ``reset`` in the stored options never erases it;
* each start ends as predicted from the ledger and the cluster: granted, 400 (options), 403
  (quota: 4 GPUs per user), or 503 (an image the cluster cannot pull, no GPU free);
* a reconcile pass during a start in progress touches neither its pod nor its reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from tornado import web
from traitlets.config import Config

from einfra_spawner import BackendError, ServerNames, SingleUser, render_manifests
from einfra_spawner.backend import StartRequest
from einfra_spawner.reconcile import CloseInterval, HubServer, Reconciler, RemoveOrphan
from einfra_spawner.render import ANNOTATION_SERVER, ANNOTATION_USER
from einfra_spawner.runtime import HubRuntime, use_runtime
from einfra_spawner.spawner import EInfraSpawner
from einfra_spawner.storage import home_claim_name
from einfra_spawner.testing import FakeKubernetes, Timings
from einfra_spawner.usage import Interval, Ledger
from einfra_spawner.usage.schema import INTERVALS
from einfra_spawner_kubernetes import KubernetesBackend

from .conftest import create_site_claims, nodes

T = TypeVar("T")
PROFILES = Path(__file__).resolve().parents[3] / "profiles" / "hub"
INSTANCE = "hub"
NAMESPACE = "default"
USERS = ("ada", "Čeněk")
KEYS = tuple((user, server) for user in USERS for server in ("", "gpu"))
BAD_IMAGE = "cerit.io/no/such:1"  # the harness cannot pull it
MAX_GPUS = 4  # profiles/hub: quotas.max_gpus, per user
GPUS_ON_THE_CLUSTER = {"a40": 2, "mig-1g.10gb": 7}  # conftest.nodes()
GPU_RESOURCE = {"a40": "nvidia.com/gpu", "mig-1g.10gb": "nvidia.com/mig-1g.10gb"}
#: Where a hub process is killed: between requests; in a start, once the pod is up but before
#: ``start`` returned (JupyterHub saved neither the spawner's state nor the run); just after a
#: start returned and JupyterHub saved it, before the ledger's queued "running" write committed.
CRASH_POINTS = ("idle", "killed mid-start", "running write lost")
Key = tuple[str, str]

log = logging.getLogger("test.reconcile_machine")

# --- requests ----------------------------------------------------------------------------------

gpu_requests = st.one_of(
    st.just({}),
    st.builds(lambda n: {"gpu": "a40", "gpu_count": n}, st.integers(1, 2)),
    st.builds(lambda n: {"gpu": "mig-1g.10gb", "gpu_count": n}, st.integers(1, 4)),
)
#: Requests the hub's profiles grant (quotas and the cluster may still refuse them).
granted_requests = st.builds(
    lambda base, gpu: {**base, **gpu},
    st.fixed_dictionaries(
        {},
        optional={
            "image": st.sampled_from(["minimal", "scipy"]),
            "cpu": st.sampled_from([1, 2, 4]),
            "memory": st.sampled_from(["4Gi", "8Gi"]),
        },
    ),
    gpu_requests,
)
#: Requests the resolver refuses (a 400): the backend is never called.
refused_requests = st.sampled_from(
    [
        {"gpu": "a40", "gpu_count": 3},
        {"cpu": 97},  # the hub offers 1 to 96 CPUs
        {"image": "docker.io/library/python:3"},
        {"colour": "blue"},
        {"home": "erase"},
        {"profile": "no-such-profile"},
    ]
)


def with_reset(request: Mapping[str, Any], reset: bool) -> dict[str, Any]:
    """``request`` also asking for an empty home (unless it says something else of the home)."""
    return {"home": "reset", **request} if reset else dict(request)


def handler_for(body: dict[str, Any] | None) -> SimpleNamespace | None:
    """JupyterHub's ``spawner.handler`` for a REST ``POST`` with ``body`` (``{}``: no body at all;
    ``None``: no handler, as for a spawn JupyterHub makes itself)."""
    if body is None:
        return None
    raw = json.dumps(body).encode() if body else b""
    return SimpleNamespace(
        request=SimpleNamespace(method="POST", body=raw, body_arguments={}, query_arguments={})
    )


def lose_running_write(connection: sa.Connection, interval_id: int) -> None:
    """Undo :func:`~einfra_spawner.usage.intervals.mark_running` of ``interval_id``, as if the hub
    process had been killed before the write queued for it was committed."""
    connection.execute(sa.update(INTERVALS).where(INTERVALS.c.id == interval_id).values(last_seen=None))


# --- what JupyterHub keeps ---------------------------------------------------------------------


@dataclass
class Persisted:
    """One server in JupyterHub's database."""

    state: dict[str, Any] = field(default_factory=dict)
    user_options: dict[str, Any] = field(default_factory=dict)
    #: It has a server row: JupyterHub has it as running (from the moment a spawn begins).
    has_server: bool = False


@dataclass
class Hub:
    """One hub process: its runtime, its backend, its reconciler, its spawner objects and the
    starts and stops it has in progress."""

    runtime: HubRuntime
    backend: KubernetesBackend
    reconciler: Reconciler
    spawners: dict[Key, EInfraSpawner] = field(default_factory=dict)
    pending: set[Key] = field(default_factory=set)


class HubLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="einfra-reconcile-"))
        self.usage_db_url = f"sqlite:///{self.folder / 'usage.sqlite'}"
        self.loop = asyncio.new_event_loop()
        self.cluster = FakeKubernetes(
            nodes=nodes(), image_pull_failures=[BAD_IMAGE], timings=Timings(running_delay=0.005)
        )
        self.run(self.cluster.start())
        self.run(create_site_claims(self.cluster))
        self.previous_runtime = use_runtime(None)
        self.db: dict[Key, Persisted] = {key: Persisted() for key in KEYS}
        self._hub: Hub | None = None
        self.homes: dict[Key, str] = {}  # the uid of each home volume, as first seen
        self.run(self.boot())

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        try:
            if self._hub is not None:
                self.run(self._hub.runtime.close())
            self.run(self.cluster.close())
            self.run(asyncio.sleep(0))
            leaked = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in leaked:
                task.cancel()
            if leaked:
                self.run(asyncio.gather(*leaked, return_exceptions=True))
            self.run(self.loop.shutdown_asyncgens())
            assert not leaked, f"tasks left running: {[t.get_coro() for t in leaked]}"
        finally:
            self.loop.close()
            use_runtime(self.previous_runtime)
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- one hub process -----------------------------------------------------------------------

    @property
    def hub(self) -> Hub:
        assert self._hub is not None, "no hub process runs"
        return self._hub

    def config(self) -> Config:
        c = Config()
        c.EInfraSpawner.profiles_dir = str(PROFILES)
        c.EInfraSpawner.backend = "kubernetes"
        c.EInfraSpawner.usage_db_url = self.usage_db_url
        c.KubernetesBackend.api_url = self.cluster.url
        c.KubernetesBackend.namespace = NAMESPACE
        c.KubernetesBackend.delete_grace_seconds = 0
        c.KubernetesBackend.stop_timeout = 10.0
        c.KubernetesBackend.api_retry_budget = 10.0
        return c

    async def boot(self) -> None:
        """A hub process starts: a fresh runtime, backend and reconciler (as ``configure`` and
        ``HubRuntime.begin`` make them), then JupyterHub's ``init_spawners``: every server with a
        row is polled, and one that does not answer "running" is stopped as JupyterHub does."""
        runtime = HubRuntime()
        use_runtime(runtime)
        backend = KubernetesBackend(config=self.config(), log=log)
        runtime.set_backend("kubernetes", backend)

        async def ledger() -> Any:
            return runtime.ledger(self.usage_db_url)

        async def hub_view() -> list[HubServer]:
            # JupyterHub's view (``jupyterhub_view``): servers with a row, and those in progress.
            pending = self.hub.pending
            return [
                HubServer(
                    user=user, server=server, running=record.has_server, pending=(user, server) in pending
                )
                for (user, server), record in self.db.items()
                if record.has_server or (user, server) in pending
            ]

        reconciler = Reconciler(
            instance=INSTANCE,
            backend=backend,
            ledger=ledger,
            hub_view=hub_view,
            grace=1.0,
            process_started=runtime.started,
            log=log,
        )
        runtime.reconcilers.append(reconciler)  # so a stop in an outage is left to it
        self._hub = Hub(runtime, backend, reconciler)
        for key, record in self.db.items():
            if record.has_server and await self.spawner(key).poll() is not None:
                await self.hub_stops(key)

    def crash(self) -> None:
        """The hub process is killed: no spawner stops anything, servers keep running. (Closing
        the runtime only stops this process's watches and flushes what the ledger has queued.)"""
        self.run(self.hub.runtime.close())
        self._hub = None
        use_runtime(None)

    def spawner(self, key: Key) -> EInfraSpawner:
        """JupyterHub's spawner object for ``key``, made from the database as ``_new_spawner`` does."""
        spawner = self.hub.spawners.get(key)
        if spawner is not None:
            return spawner
        user, server = key
        record = self.db[key]
        spawner = EInfraSpawner(
            user=SimpleNamespace(
                name=user,
                escaped_name=user,
                groups=[SimpleNamespace(name="gpu")],
                admin=False,
                url=f"/user/{user}/",
            ),
            hub=SimpleNamespace(public_host="", api_url="http://127.0.0.1:8081/hub/api/", base_url="/hub/"),
            orm_spawner=SimpleNamespace(
                name=server, display_name=server, user_options=dict(record.user_options), server=None
            ),
            config=self.config(),
            user_options=dict(record.user_options),
            oauth_client_id=f"jupyterhub-user-{user}-{server}",
        )
        spawner.load_state(record.state)
        self.hub.spawners[key] = spawner
        return spawner

    def begin_spawn(self, key: Key, body: dict[str, Any] | None, handler: Any) -> EInfraSpawner:
        """The first steps of ``User.spawn``: a server row, the options stored (a body replaces
        them, no body reuses them), the handler, ``clear_state``."""
        record = self.db[key]
        spawner = self.spawner(key)
        record.has_server = True
        if body is None:
            options = dict(record.user_options)
        else:
            options = dict(body)
            record.user_options = spawner.orm_spawner.user_options = dict(body)
        spawner.handler = handler
        spawner.user_options = options
        spawner.clear_state()
        return spawner

    async def hub_spawns(self, key: Key, body: dict[str, Any] | None, handler: Any) -> int | None:
        """What JupyterHub's ``User.spawn`` does; returns the HTTP status of a refusal, or None."""
        record = self.db[key]
        self.hub.pending.add(key)
        try:
            spawner = self.begin_spawn(key, body, handler)
            try:
                await spawner.run_pre_spawn_hook()
                await asyncio.wait_for(spawner.start(), timeout=spawner.start_timeout)
            except Exception as error:
                await self.hub_stops(key, drop=False)
                return int(error.status_code) if isinstance(error, web.HTTPError) else 500
            finally:
                spawner.handler = None
                record.user_options = dict(spawner.orm_spawner.user_options)
            record.state = spawner.get_state()
            return None
        finally:
            self.hub.pending.discard(key)

    async def hub_stops(self, key: Key, *, drop: bool = True) -> None:
        """What JupyterHub's ``User.stop`` does: ``stop`` only if ``poll`` says it runs."""
        hub = self.hub
        spawner = self.spawner(key)
        hub.pending.add(key)
        try:
            if await spawner.poll() is None:
                await spawner.stop()
        finally:
            self.db[key].has_server = False
            spawner.clear_state()
            self.db[key].state = spawner.get_state()
            if drop:  # JupyterHub keeps the object of a failed start, for its error message
                hub.spawners.pop(key, None)
            hub.pending.discard(key)

    # --- what the cluster and the ledger hold --------------------------------------------------

    def pods(self) -> dict[Key, dict[str, Any]]:
        found: dict[Key, dict[str, Any]] = {}
        for pod in self.cluster.objects("pods", NAMESPACE):
            metadata = pod["metadata"]
            if (metadata.get("labels") or {}).get("app.kubernetes.io/managed-by") != "einfra-spawner":
                continue
            annotations = metadata.get("annotations") or {}
            key = (annotations[ANNOTATION_USER], annotations[ANNOTATION_SERVER])
            assert key not in found, f"two pods for {key}"
            found[key] = pod
        return found

    def gpus_held(self, gpu: str, *, besides: Key) -> int:
        """GPUs of type ``gpu`` that pods other than ``besides``'s hold on the cluster."""
        resource = GPU_RESOURCE[gpu]
        held = 0
        for key, pod in self.pods().items():
            if key == besides or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            selector = pod["spec"].get("nodeSelector") or {}
            if gpu == "a40" and selector.get("nvidia.com/gpu.product") != "NVIDIA-A40":
                continue
            for container in pod["spec"]["containers"]:
                held += int(((container.get("resources") or {}).get("limits") or {}).get(resource, 0))
        return held

    def home(self, key: Key) -> dict[str, Any] | None:
        """The server's current home: of the generation its spawner's state names (a reset that
        keeps the old home for a while moves the server to the next one), else the newest of
        its homes on the cluster, as the backend finds it for a spawner that does not know."""
        names = ServerNames(*key)
        spawner = self._hub.spawners.get(key) if self._hub is not None else None
        state = spawner.get_state() if spawner is not None else self.db[key].state
        generation = state.get("home_generation")
        if generation is None:
            generations = [
                int(labels.get("einfra-spawner/home-generation", "0"))
                for claim in self.cluster.objects("persistentvolumeclaims", NAMESPACE)
                if (labels := claim["metadata"].get("labels") or {}).get("einfra-spawner/server")
                == names.server_label
                and labels.get("app.kubernetes.io/component") == "singleuser-home"
            ]
            generation = max(generations, default=0)
        claim_name = home_claim_name(names, key[0], key[1], generation)
        return self.cluster.get("persistentvolumeclaims", NAMESPACE, claim_name)

    async def open_intervals(self) -> list[Interval]:
        ledger = self.hub.runtime.ledger(self.usage_db_url)
        return list(await ledger.call(Ledger.open_intervals, INSTANCE))

    async def interval(self, interval_id: int) -> Interval | None:
        return await self.hub.runtime.ledger(self.usage_db_url).call(Ledger.get, interval_id)

    async def expected_status(self, key: Key, request: Mapping[str, Any]) -> int | None:
        """A granted request's outcome: 403 over the GPU quota (the open intervals of the user's
        other servers count), 503 for an image the cluster cannot pull or no GPU free, else None."""
        wanted = int(request.get("gpu_count", 1)) if request.get("gpu", "none") != "none" else 0
        used = sum(
            i.gpu_count
            for i in await self.open_intervals()
            if i.user == key[0] and i.server != key[1]  # its own earlier run is not counted
        )
        if wanted and used + wanted > MAX_GPUS:
            return 403
        if request.get("image") == BAD_IMAGE:
            return 503
        gpu: str = request.get("gpu", "none")  # "none" only when wanted is 0
        if wanted and self.gpus_held(gpu, besides=key) + wanted > GPUS_ON_THE_CLUSTER[gpu]:
            return 503
        return None

    def stopped_keys(self) -> list[Key]:
        return [key for key in KEYS if not self.db[key].has_server]

    def running_keys(self) -> list[Key]:
        return [key for key in KEYS if self.db[key].has_server]

    def after_reset(self, key: Key, reset: bool, before: dict[str, Any] | None) -> None:
        """A start that asked for an empty home reached the backend: its home may be a new one."""
        if not reset:
            return
        after = self.home(key)
        if after is None:
            self.homes.pop(key, None)
        elif before is not None:
            self.homes[key] = after["metadata"]["uid"]

    async def start_and_check(
        self, key: Key, body: dict[str, Any] | None, handler: Any, expected: int | None
    ) -> None:
        before = self.home(key)
        status = await self.hub_spawns(key, body, handler)
        assert status == expected, f"start of {key} with {body!r}: {status}, expected {expected}"
        reached_backend = body is not None and body.get("home") == "reset" and expected not in (400, 403)
        if reached_backend and before is not None and status is None:
            after = self.home(key)
            assert after is not None and after["metadata"]["uid"] != before["metadata"]["uid"], "no reset"
        self.after_reset(key, reached_backend, before)

    def started(self, key: Key, body: dict[str, Any] | None, handler: Any, expected: int | None) -> None:
        self.run(self.start_and_check(key, body, handler, expected))
        event(f"start: {expected or 'granted'}")

    async def stop_and_check(self, key: Key) -> None:
        """JupyterHub stops a running server: it is gone, and the run is billed."""
        interval_id = self.spawner(key).get_state()["usage_interval"]
        await self.hub_stops(key)
        assert key not in self.pods(), f"{key} was stopped but its pod is still there"
        billed = await self.interval(interval_id)
        assert billed is not None, f"{key} ran, and its usage interval was dropped as if it never had"
        assert billed.stopped is not None and billed.last_seen is not None, billed

    # --- rules: what users and JupyterHub do ---------------------------------------------------

    @precondition(lambda self: bool(self.stopped_keys()))
    @rule(data=st.data(), request=granted_requests, reset=st.booleans())
    def start(self, data: st.DataObject, request: dict[str, Any], reset: bool) -> None:
        """A REST start whose body the hub's profiles grant (optionally emptying the home)."""
        key = data.draw(st.sampled_from(self.stopped_keys()), label="server")
        body = with_reset(request, reset)
        expected = self.run(self.expected_status(key, body))
        self.started(key, body, handler_for(body), expected)

    @precondition(lambda self: bool(self.stopped_keys()))
    @rule(data=st.data(), request=refused_requests, reset=st.booleans())
    def start_refused(self, data: st.DataObject, request: dict[str, Any], reset: bool) -> None:
        """A start the resolver refuses: a 400, nothing started, no home touched."""
        key = data.draw(st.sampled_from(self.stopped_keys()), label="server")
        body = with_reset(request, reset)
        self.started(key, body, handler_for(body), 400)

    def over_quota(self) -> list[tuple[Key, int]]:
        """Stopped servers whose user holds GPUs with another server, with how many."""
        intervals = self.run(self.open_intervals())
        found = []
        for key in self.stopped_keys():
            held = sum(i.gpu_count for i in intervals if i.user == key[0] and i.server != key[1])
            if held:
                found.append((key, held))
        return found

    @precondition(lambda self: bool(self.over_quota()))
    @rule(data=st.data(), reset=st.booleans())
    def start_over_quota(self, data: st.DataObject, reset: bool) -> None:
        """A start that asks for more GPUs than the user has left of the quota: a 403."""
        key, held = data.draw(st.sampled_from(self.over_quota()), label="server, GPUs held")
        body = with_reset({"gpu": "mig-1g.10gb", "gpu_count": MAX_GPUS - held + 1}, reset)
        self.started(key, body, handler_for(body), 403)

    @precondition(lambda self: bool(self.stopped_keys()))
    @rule(data=st.data(), reset=st.booleans())
    def start_unpullable(self, data: st.DataObject, reset: bool) -> None:
        """A custom image the cluster cannot pull: the backend fails the start (a 503)."""
        key = data.draw(st.sampled_from(self.stopped_keys()), label="server")
        body = with_reset({"image": BAD_IMAGE}, reset)
        self.started(key, body, handler_for(body), 503)

    @precondition(lambda self: bool(self.stopped_keys()))
    @rule(data=st.data(), stale_reset=st.booleans(), empty_body=st.booleans())
    def start_without_body(self, data: st.DataObject, stale_reset: bool, empty_body: bool) -> None:
        """A start that brings no options (the admin page's "Start", ``POST`` without a body):
        JupyterHub reuses the stored ones, which may still say ``home: reset`` (a hub killed
        before it stored the cleaned options, an edit of the database): the home must stay."""
        key = data.draw(st.sampled_from(self.stopped_keys()), label="server")
        record = self.db[key]
        if stale_reset:
            record.user_options = with_reset(record.user_options, True)
            self.hub.spawners.pop(key, None)  # made again from the database, as after a restart
        stored = {k: v for k, v in record.user_options.items() if k != "home"}
        expected = self.run(self.expected_status(key, stored))
        self.started(key, None, handler_for({} if empty_body else None), expected)

    @precondition(lambda self: bool(self.stopped_keys()))
    @rule(data=st.data(), request=granted_requests)
    def reconcile_during_start(self, data: st.DataObject, request: dict[str, Any]) -> None:
        """A reconcile pass while a start waits for its pod: the start is JupyterHub's pending
        server, so the pass touches neither its pod nor its reservation."""
        key = data.draw(st.sampled_from(self.stopped_keys()), label="server")
        # Orphans first: one the pass removes in the race could free the GPU the start waits for.
        self.reconcile()
        expected = self.run(self.expected_status(key, request))
        label = ServerNames(*key).server_label

        async def race() -> None:
            self.cluster.timings.running_delay = 0.1
            try:
                starting = asyncio.ensure_future(
                    self.start_and_check(key, request, handler_for(request), expected)
                )
                with contextlib.suppress(TimeoutError):
                    await self.cluster.wait_for(lambda: key in self.pods() or starting.done())
                done = await self.hub.reconciler.run_once()
                await starting
            finally:
                self.cluster.timings.running_delay = 0.005
            for action in done:
                if isinstance(action, RemoveOrphan):
                    assert action.record.server_label != label, f"the pass removed {key}'s starting pod"
                if isinstance(action, CloseInterval):
                    assert (action.interval.user, action.interval.server) != key, (
                        f"closed {key}'s reservation"
                    )

        self.run(race())

    @precondition(lambda self: bool(self.running_keys()))
    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.running_keys()), label="server")
        self.run(self.stop_and_check(key))

    @precondition(lambda self: bool(self.running_keys()))
    @rule(data=st.data())
    def stop_during_outage(self, data: st.DataObject) -> None:
        """The API server answers every request with a 503 while the stop lasts: the stop gives up
        after the backend's retry budget and leaves the removal to the reconciler."""
        key = data.draw(st.sampled_from(self.running_keys()), label="server")
        backend = self.hub.backend
        budget, backend.api_retry_budget = backend.api_retry_budget, 0.3  # a stop gives up quickly
        self.cluster.faults.error_rate = 1.0
        try:
            self.run(self.hub_stops(key))
        finally:
            self.cluster.faults.error_rate = 0.0
            backend.api_retry_budget = budget
        assert key in self.pods(), "the outage let the stop through"

    @precondition(lambda self: bool(self.running_keys()))
    @rule(data=st.data())
    def poll(self, data: st.DataObject) -> None:
        """JupyterHub's periodic poll of a running server (nothing here makes a server exit)."""
        key = data.draw(st.sampled_from(self.running_keys()), label="server")
        assert self.run(self.spawner(key).poll()) is None, f"{key} runs, yet poll says it stopped"

    @precondition(lambda self: bool(self.running_keys()))
    @rule(data=st.data())
    def server_dies(self, data: st.DataObject) -> None:
        """Someone deletes a running server's pod; JupyterHub's next poll sees it gone and stops
        it (``user_stopped``): its run is billed until it was last seen running."""
        key = data.draw(st.sampled_from(self.running_keys()), label="server")

        async def dies() -> None:
            spawner = self.spawner(key)
            interval_id = spawner.get_state()["usage_interval"]
            self.cluster.api.delete("pods", NAMESPACE, ServerNames(*key).pod, grace_period=0)
            for _ in range(500):  # until the backend's pod watch has seen it go
                if await spawner.poll() is not None:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"{key}'s pod is gone, yet poll says it runs")
            await self.hub_stops(key)
            billed = await self.interval(interval_id)
            assert billed is not None, f"{key} ran, and its usage interval was dropped as if it never had"
            assert billed.stopped is not None and billed.stopped == billed.last_seen, billed

        self.run(dies())

    @rule(
        data=st.data(),
        crash_point=st.sampled_from(CRASH_POINTS),
        request=granted_requests,
        reset=st.booleans(),
        first_pass=st.booleans(),
    )
    def crash_and_restart(
        self, data: st.DataObject, crash_point: str, request: dict[str, Any], reset: bool, first_pass: bool
    ) -> None:
        """The hub process is killed (see ``CRASH_POINTS``) and a new one starts: its
        ``init_spawners``, then the reconciler's first pass, or users act before it."""
        stopped = self.stopped_keys()
        if crash_point != "idle" and stopped:
            victim = data.draw(st.sampled_from(stopped), label="victim")
            body = with_reset(request, reset)
            if crash_point == "killed mid-start":
                self.run(self.killed_mid_start(victim, body))
            else:
                self.run(self.killed_before_running_was_written(victim, body))
        self.crash()
        self.run(self.boot())
        if first_pass:
            self.reconcile()

    async def killed_mid_start(self, key: Key, body: dict[str, Any]) -> None:
        spawner = self.begin_spawn(key, body, handler_for(body))
        try:
            await spawner.run_pre_spawn_hook()  # the reservation, as the spawner opens it
        except web.HTTPError:
            return  # refused, and killed before JupyterHub cleaned up
        self.db[key].user_options = dict(spawner.orm_spawner.user_options)  # committed at start
        options = spawner.resolved_options
        assert options is not None
        identity = spawner.identity()
        single_user = SingleUser(env=(("JUPYTERHUB_USER", key[0]),))
        request = StartRequest(
            identity=identity,
            options=options,
            manifests=render_manifests(options, identity, single_user),
            single_user=single_user,
        )
        before = self.home(key)
        with contextlib.suppress(BackendError):
            await self.hub.backend.start(request)
        self.after_reset(key, options.home is not None and options.home.reset, before)

    async def killed_before_running_was_written(self, key: Key, body: dict[str, Any]) -> None:
        expected = await self.expected_status(key, body)
        await self.start_and_check(key, body, handler_for(body), expected)
        if expected is None:
            interval_id = self.spawner(key).get_state()["usage_interval"]
            await self.hub.runtime.ledger(self.usage_db_url).write(
                partial(lose_running_write, interval_id=interval_id)
            )

    @rule()
    def reconcile(self) -> None:
        """One pass of the reconciler; then the three records agree."""
        for action in self.run(self.hub.reconciler.run_once()):
            event(f"reconcile: {type(action).__name__}")
        running = set(self.running_keys())
        pods = self.pods()
        assert set(pods) == running, f"pods {sorted(pods)} but JupyterHub runs {sorted(running)}"
        intervals = self.run(self.open_intervals())
        open_keys = sorted((i.user, i.server) for i in intervals)
        assert open_keys == sorted(running), f"open intervals {open_keys}, running {sorted(running)}"
        assert all(i.last_seen is not None for i in intervals), f"a running server is not billed: {intervals}"

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def homes_keep_their_identity(self) -> None:
        for key in KEYS:
            home = self.home(key)
            if home is None:
                assert key not in self.homes, f"the home of {key} was deleted"
                continue
            assert not home["metadata"].get("deletionTimestamp"), f"the home of {key} is being deleted"
            uid = home["metadata"]["uid"]
            assert self.homes.setdefault(key, uid) == uid, f"the home of {key} was replaced"

    @invariant()
    def running_servers_run_and_are_counted_once(self) -> None:
        pods = self.pods()
        by_key: dict[Key, list[Interval]] = {}
        for interval in self.run(self.open_intervals()):
            by_key.setdefault((interval.user, interval.server), []).append(interval)
        for key in self.running_keys():
            assert key in pods, f"JupyterHub runs {key}, the cluster does not"
            assert (pods[key].get("status") or {}).get("phase") == "Running", f"{key} is not Running"
            assert len(by_key.get(key, [])) == 1, f"{key} runs with open intervals {by_key.get(key)}"


HubLifecycle.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestHubLifecycle = HubLifecycle.TestCase


def test_a_run_whose_running_write_was_lost_is_billed_when_it_stops() -> None:
    """The machine's shrunk example, kept as a plain test: a hub killed after a start returned
    and JupyterHub saved it, before the ledger committed the queued "running" write; the new hub
    adopts the server, and the user stops it before the reconciler's first pass."""
    machine = HubLifecycle()
    try:
        key = KEYS[0]
        machine.run(machine.killed_before_running_was_written(key, {}))
        machine.crash()
        machine.run(machine.boot())
        machine.running_servers_run_and_are_counted_once()
        machine.run(machine.stop_and_check(key))
    finally:
        machine.teardown()
