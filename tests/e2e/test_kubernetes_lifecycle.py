"""End to end: the life cycle of servers on the Kubernetes backend through failures (issue 11),
in a real JupyterHub against the fake API server in process mode.

The invariants checked (ARCHITECTURE.md, "The hub process and the life cycle"): what the cluster
runs (pods with our labels), what JupyterHub knows and what the usage ledger counts (open
intervals) agree within a few reconcile passes, after refusals, failed starts, stops during an
API outage, a hub killed mid-start and mid-stop, a pod deleted while the hub was down, and a
storm of starts through an outage; a home is reset only by the request that asked for it.

Each test runs its own fake API server and its own hub (these tests kill and restart hubs and
switch the API server off). The fake API server is started here, not by the hub's
configuration (``EINFRA_DEMO_K8S_URL``): the demo's harness lives only as long as the hub that
started it, and a killed hub must leave its pods running, as on a cluster. The reconciler runs
every second with a grace of two seconds. Assertions are on causes (pod uids, ledger rows, the
hub's server models, the hub's log lines), never on elapsed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from einfra_spawner.names import ServerNames
from einfra_spawner.usage.cost import Interval
from einfra_spawner.usage.ledger import Ledger

from .conftest import VENV_BIN, Hub, Response, free_port, server_path

pytestmark = pytest.mark.e2e

INSTANCE = "hub"  # profiles/hub/instance.yaml
NAMESPACE = "default"
MIG = "mig-1g.10gb"  # 4 on the harness's MIG node; 4 fill a user's GPU quota (max_gpus: 4)
MINIMAL_IMAGE = "quay.io/jupyter/minimal-notebook:2025-03-10"  # profiles/hub/jupyterlab.yaml

# Every hub here: the reconciler every second, orphans older than 2 s removed, the metrics
# readable without a token, and REST starts and stops that answer 202 at once while pending
# (so that a test can act while a start or stop is in progress).
RECONCILING = """
c.EInfraSpawner.reconcile_interval = 1
c.EInfraSpawner.reconcile_grace = 2
c.JupyterHub.authenticate_prometheus = False
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0.1, "slow_stop_timeout": 0.1}
"""
# A start's answer: 202 while pending; 201 too, when JupyterHub's handler looks at the spawner it
# replaced after a failed start instead of the one that starts (JupyterHub 6.1.1).
ACCEPTED = (201, 202)


# --- the fake API server, started by the test ------------------------------------------------------


class FakeCluster:
    """``python -m einfra_spawner.testing serve`` in process mode, as the demo runs it, but owned
    by the test: it outlives a killed hub, and stops (with every pod process) when the test
    closes its stdin."""

    def __init__(self, root: Path, *arguments: str) -> None:
        self.log_path = root / "fake-kubernetes.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "einfra_spawner.testing",
                    "serve",
                    "--process-mode",
                    "--wait-for-port",
                    "--stop-on-stdin-eof",
                    "--port",
                    "0",
                    "--log-level",
                    "INFO",
                    *arguments,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                # The pods run jupyterhub-singleuser, found on PATH as in the hub's environment.
                env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
                start_new_session=True,
            )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().decode().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError(f"the fake API server did not start:\n{self.log_path.read_text()}")
        # The shared scratch claim a site makes once (the reference hub mounts it by default).
        self.call(
            "POST",
            "/api/v1/namespaces/default/persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "jupyterhub-scratch"},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}},
            },
        )

    def stop(self) -> None:
        """Close its stdin (it stops its pod processes and exits), then make sure it is gone."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def requests(self, verb: str, resource: str) -> int:
        """How many ``verb`` requests of ``resource`` the API server has had (refused ones too)."""
        counts = self.call("GET", "/_harness/stats")["requests"]
        return sum(c["count"] for c in counts if (c["verb"], c["resource"]) == (verb, resource))

    def outage(self, on: bool) -> None:
        """Every Kubernetes API request answers 503 (or none does)."""
        self.call("POST", "/_harness/faults", {"error_rate": 1.0 if on else 0.0})

    def pods(self, user: str | None = None) -> list[dict[str, Any]]:
        """The pods of einfra-spawner (of ``user``), as the API lists them (not during an outage)."""
        items: list[dict[str, Any]] = self.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
        ours = [
            pod
            for pod in items
            if (pod["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "einfra-spawner"
        ]
        if user is None:
            return ours
        return [pod for pod in ours if pod["metadata"]["annotations"].get("einfra-spawner/username") == user]

    def claim(self, name: str) -> dict[str, Any] | None:
        items = self.call("GET", f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims")["items"]
        found = [claim for claim in items if claim["metadata"]["name"] == name]
        return found[0] if found else None


def _environ(pid: str) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def pod_processes(hub: Hub, pod: str | None = None) -> list[int]:
    """The live processes the fake kubelet runs for this hub's servers (for pod ``pod``)."""
    api_url = f"JUPYTERHUB_API_URL=http://127.0.0.1:{hub.hub_port}/".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        environ = _environ(entry)
        if not any(item.startswith(b"EINFRA_FAKE_POD_IP=") for item in environ):
            continue
        if not any(item.startswith(api_url) for item in environ):
            continue
        if pod is not None and f"HOSTNAME={pod}".encode() not in environ:
            continue
        found.append(int(entry))
    return found


def kill_pod_processes(hub: Hub) -> None:
    for pid in pod_processes(hub):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def cluster_and_hub(
    root: Path, monkeypatch: pytest.MonkeyPatch, extra_config: str = "", harness: Sequence[str] = ()
) -> Iterator[tuple[FakeCluster, Hub]]:
    """A fake API server and a hub on it (the reconciler on), both stopped at the end, with
    every process they started, whatever happened."""
    cluster = FakeCluster(root, *harness)
    monkeypatch.setenv("EINFRA_DEMO_K8S_URL", cluster.url)
    # Every process-mode harness hands out 127.0.0.2, 3, ... to its pods: a port of our own keeps
    # our servers from meeting those of another harness on this machine on 127.0.0.N:8888 (the
    # second cannot listen, and exits with code 1).
    port = f"c.Spawner.port = {free_port()}\n"
    hub = Hub(root=root, backend="kubernetes", extra_config=RECONCILING + port + extra_config)
    try:
        hub.start()
        yield cluster, hub
    finally:
        try:
            with contextlib.suppress(OSError):
                cluster.call("POST", "/_harness/faults/clear")  # the hub stops its servers at exit
            hub.stop()
        finally:
            cluster.stop()
            kill_pod_processes(hub)


# --- the hub's and the ledger's views ---------------------------------------------------------------


def open_intervals(hub: Hub, user: str | None = None) -> list[Interval]:
    """The ledger's open intervals (reservations and runs) of this instance (of ``user``)."""
    ledger = Ledger(hub.usage_db_url)
    try:
        found = ledger.open_intervals(INSTANCE)
    finally:
        ledger.dispose()
    return [i for i in found if user is None or i.user == user]


def intervals_of(hub: Hub, user: str) -> list[Interval]:
    """Every interval of ``user`` that ran, closed or open, oldest first."""
    ledger = Ledger(hub.usage_db_url)
    try:
        return ledger.intervals(0, time.time() + 3600, INSTANCE, [user])
    finally:
        ledger.dispose()


def start(hub: Hub, user: str, options: object = None, name: str = "") -> Response:
    """POST a start (``options``: the user_options; ``None``: no body at all) for ``user``
    (created if need be), in the hub's REST dialect; answers at once."""
    hub.ensure_user(user)
    return hub.ask_start(user, name, options)


def settled(hub: Hub, user: str, name: str = "") -> dict[str, Any]:
    """Wait until no start or stop of the server is in progress; its model (empty: not running)."""
    hub.wait_for(lambda: not (hub.server(user, name) or {}).get("pending"), f"{user}/{name} to settle", 120)
    return hub.server(user, name) or {}


def spawn_failure(hub: Hub, user: str, name: str = "") -> str | None:
    """The message of the last start's failure, from its progress stream (``None``: not failed)."""
    path = f"/users/{user}/servers/{name}/progress" if name else f"/users/{user}/server/progress"
    stream = hub.api("GET", path)
    events = [json.loads(line[5:]) for line in stream.text.splitlines() if line.startswith("data:")]
    failed = [event for event in events if event.get("failed")]
    return str(failed[-1]["message"]) if failed else None


def log_since_last_start(hub: Hub) -> str:
    text = hub.log_path.read_text(errors="replace")
    return text.rsplit(f"===== hub start {hub.starts} =====", 1)[-1]


def reconcile_count(hub: Hub, action: str, outcome: str = "done") -> float:
    """``einfra_reconcile_actions_total{action, outcome}`` in the hub's /hub/metrics."""
    metrics = hub.request("GET", "/hub/metrics")
    assert metrics.status == 200, metrics.text
    prefix = f'einfra_reconcile_actions_total{{action="{action}",outcome="{outcome}"}} '
    values = [float(line[len(prefix) :]) for line in metrics.text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


def agree(cluster: FakeCluster, hub: Hub, users: Sequence[str]) -> bool:
    """The three records agree for ``users``: exactly the servers JupyterHub has as running have
    a pod and an open interval that ran, and nothing else of theirs is open."""
    running = {user for user in users if (hub.server(user) or {}).get("ready")}
    pods = {pod["metadata"]["annotations"]["einfra-spawner/username"] for pod in cluster.pods()}
    intervals = [i for i in open_intervals(hub) if i.user in users]
    return (
        pods & set(users) == running
        and {i.user for i in intervals} == running
        and len(intervals) == len(running)
        and all(i.last_seen is not None for i in intervals)
    )


# --- 1. a refused reset is never replayed -------------------------------------------------------------


def test_a_refused_reset_is_never_replayed_on_kubernetes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "kl-reset"
    home = ServerNames(user, "").home
    with cluster_and_hub(tmp_path, monkeypatch) as (cluster, hub):
        hub.join_group(user, "gpu")  # a40 is a choice, at most 2 per server
        assert start(hub, user, {"cpu": "1"}).status in ACCEPTED
        assert settled(hub, user).get("ready")
        claim = cluster.claim(home)
        assert claim is not None, "the first start made no home volume"
        uid = claim["metadata"]["uid"]
        hub.stop_server(user)

        refused = start(hub, user, {"home": "reset", "gpu": "a40", "gpu_count": 9})
        assert refused.status in (400, 403), refused.text
        assert "gpu_count" in refused.body["message"], refused.text

        # A start without a body: JupyterHub reuses what it stored.
        assert start(hub, user).status in ACCEPTED
        assert settled(hub, user).get("ready"), spawn_failure(hub, user)
        assert (cluster.claim(home) or {}).get("metadata", {}).get("uid") == uid
        assert "reset" not in (hub.stored_user_options(user) or "")
        hub.stop_server(user)


# --- 2. a start that fails after admission releases its reservation -----------------------------------


def test_a_start_that_fails_after_admission_releases_its_reservation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "kl-pull"
    pulls_fail = ["--fail-image-pull", MINIMAL_IMAGE]
    with cluster_and_hub(tmp_path, monkeypatch, harness=pulls_fail) as (cluster, hub):
        hub.join_group(user, "gpu")
        # Admitted (it holds the user's whole GPU quota), then the image cannot be pulled. The
        # failure ends the start before JupyterHub answers (a 503 with its message) or after
        # (accepted, then a failed progress event), as fast as the machine happens to be.
        first = start(hub, user, {"image": "minimal", "gpu": MIG, "gpu_count": 4})
        if first.status in ACCEPTED:
            assert not settled(hub, user).get("ready")
            failure = spawn_failure(hub, user)
        else:
            assert first.status == 503, first.text
            failure = first.body["message"]
        assert failure is not None and "image" in failure.lower(), failure
        hub.wait_for(lambda: cluster.pods(user) == [], "the failed start's pod to go")
        assert open_intervals(hub, user) == []

        # The same four GPUs again, with an image that can be pulled: not refused by the quota.
        allowed = start(hub, user, {"image": "scipy", "gpu": MIG, "gpu_count": 4})
        assert allowed.status in ACCEPTED, allowed.text
        assert settled(hub, user).get("ready"), spawn_failure(hub, user)
        (pod,) = cluster.pods(user)
        assert pod["spec"]["containers"][0]["image"] != MINIMAL_IMAGE
        (run,) = open_intervals(hub, user)
        assert (run.gpu, run.gpu_count) == (MIG, 4)
        assert run.last_seen is not None
        hub.stop_server(user)
        assert open_intervals(hub, user) == []
        assert cluster.pods(user) == []


# --- 3. a stop during an API outage -------------------------------------------------------------------


def running_pod(cluster: FakeCluster, hub: Hub, user: str) -> dict[str, Any]:
    assert start(hub, user, {"cpu": "1"}).status in ACCEPTED
    assert settled(hub, user).get("ready"), spawn_failure(hub, user)
    (pod,) = cluster.pods(user)
    (run,) = open_intervals(hub, user)
    assert run.last_seen is not None
    return pod


OUTAGE = 8.0  # seconds without an API server: well within the default retry budget (60 s)


def test_a_stop_during_an_outage_finishes_once_the_api_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "kl-stop"
    with cluster_and_hub(tmp_path, monkeypatch) as (cluster, hub):
        pod = running_pod(cluster, hub, user)
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]

        deletes = cluster.requests("delete", "pods")
        cluster.outage(True)
        try:
            assert hub.api("DELETE", server_path(user, "")).status == 202
            # Refused three times (however long that takes under load): well within the retry
            # budget, the stop is still retrying; the server still runs, and counts.
            hub.wait_for(
                lambda: cluster.requests("delete", "pods") >= deletes + 3, "three refused deletes", 120
            )
            assert (hub.server(user) or {}).get("pending") == "stop"
            assert pod_processes(hub, name) != []
            assert [i.user for i in open_intervals(hub, user)] == [user]
        finally:
            cluster.outage(False)
        outage_ended = time.time()

        assert not settled(hub, user).get("ready")
        hub.wait_for(lambda: cluster.pods(user) == [], "the pod to go")
        assert pod_processes(hub, name) == []
        assert open_intervals(hub, user) == []
        (run,) = intervals_of(hub, user)
        assert run.stopped is not None and run.stopped >= outage_ended  # billed until it went
        # The spawner's own stop did it, through the outage, not the reconciler.
        log = log_since_last_start(hub)
        assert f"Could not stop {user}" not in log
        assert f"pod {NAMESPACE}/{name} that no hub knows" not in log
        assert uid not in {p["metadata"]["uid"] for p in cluster.pods()}


def test_a_stop_the_backend_gives_up_on_is_left_to_the_reconciler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "kl-stop-late"
    budget = "c.KubernetesBackend.api_retry_budget = 3\n"
    with cluster_and_hub(tmp_path, monkeypatch, extra_config=budget) as (cluster, hub):
        pod = running_pod(cluster, hub, user)
        name = pod["metadata"]["name"]
        removed_before = reconcile_count(hub, "remove_orphan")

        cluster.outage(True)
        try:
            assert hub.api("DELETE", server_path(user, "")).status == 202
            # The backend's retries run out: the spawner accepts the stop and JupyterHub forgets it.
            hub.wait_for(lambda: f"Could not stop {user}" in log_since_last_start(hub), "the stop to give up")
            assert settled(hub, user) == {}
            # ... but the server still runs, and its usage still counts.
            assert pod_processes(hub, name) != []
            (run,) = open_intervals(hub, user)
            assert run.stopped is None and run.last_seen is not None
            assert reconcile_count(hub, "remove_orphan") == removed_before
            # The reconciler tries to remove it while the API is away, and fails; it stays.
            hub.wait_for(lambda: reconcile_count(hub, "remove_orphan", "failed") >= 1, "a failed removal")
            assert f"Reconcile: could not remove pod {NAMESPACE}/{name}" in log_since_last_start(hub)
            assert pod_processes(hub, name) != []
            assert [i.user for i in open_intervals(hub, user)] == [user]
        finally:
            cluster.outage(False)
        outage_ended = time.time()

        hub.wait_for(lambda: cluster.pods(user) == [] and open_intervals(hub, user) == [], "the orphan to go")
        assert pod_processes(hub, name) == []
        assert f"Reconcile: remove pod {NAMESPACE}/{name} that no hub knows" in log_since_last_start(hub)
        assert reconcile_count(hub, "remove_orphan") == removed_before + 1
        (run,) = intervals_of(hub, user)
        assert run.stopped is not None and run.stopped >= outage_ended  # billed until it went
        assert settled(hub, user) == {}


# --- 4. the hub killed during a start; a pod deleted while the hub is down -----------------------------


def test_a_start_cut_short_by_a_hub_crash_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "kl-crash"
    # Pods wait 4 s between being scheduled and running: the window in which the hub is killed.
    with cluster_and_hub(tmp_path, monkeypatch, harness=["--running-delay-ms", "4000"]) as (cluster, hub):
        assert start(hub, user, {"cpu": "1"}).status in ACCEPTED
        hub.wait_for(lambda: cluster.pods(user) != [], "the pod to be created")
        assert (hub.server(user) or {}).get("pending") == "spawn"
        (pod,) = cluster.pods(user)
        assert [i.last_seen for i in open_intervals(hub, user)] == [None]  # a reservation
        hub.kill()

        hub.start()
        name = pod["metadata"]["name"]
        hub.wait_for(lambda: cluster.pods(user) == [], "the orphaned pod to be removed")
        assert f"Reconcile: remove pod {NAMESPACE}/{name} that no hub knows" in log_since_last_start(hub)
        hub.wait_for(lambda: agree(cluster, hub, [user]), "the three records to agree")
        assert settled(hub, user) == {}
        assert open_intervals(hub, user) == []

        # The same server starts again, once.
        assert start(hub, user, {"cpu": "1"}).status in ACCEPTED
        assert settled(hub, user).get("ready"), spawn_failure(hub, user)
        (again,) = cluster.pods(user)
        assert again["metadata"]["uid"] != pod["metadata"]["uid"]
        assert len(open_intervals(hub, user)) == 1
        hub.stop_server(user)
        assert cluster.pods(user) == [] and open_intervals(hub, user) == []


def test_a_pod_deleted_while_the_hub_is_down_is_known_gone_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "kl-gone"
    with cluster_and_hub(tmp_path, monkeypatch) as (cluster, hub):
        pod = running_pod(cluster, hub, user)
        name = pod["metadata"]["name"]
        hub.kill()

        cluster.call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
        hub.wait_for(lambda: cluster.pods(user) == [], "the pod to be deleted")
        deleted = time.time()

        hub.start()
        hub.wait_for(lambda: not (hub.server(user) or {}).get("ready"), "the hub to see the server gone")
        hub.wait_for(lambda: open_intervals(hub, user) == [], "the interval to close")
        assert agree(cluster, hub, [user])
        (run,) = intervals_of(hub, user)
        # Closed where it was last seen running: the time the hub was down is not billed.
        assert run.stopped is not None and run.stopped < deleted
        assert run.last_seen is not None and run.stopped == run.last_seen


# --- 5. a storm of starts through an outage -----------------------------------------------------------

STORM = 12  # each a real jupyterhub-singleuser process, on 2 cores


def test_a_storm_of_starts_through_an_outage_leaves_no_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [f"kl-storm-{index:02d}" for index in range(STORM)]
    patient = "c.Spawner.start_timeout = 120\n"  # 2 cores: the last of the storm start late
    with cluster_and_hub(tmp_path, monkeypatch, extra_config=patient) as (cluster, hub):
        for user in users:
            hub.ensure_user(user)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = dict(
                zip(users, pool.map(lambda user: start(hub, user, {"cpu": "1"}), users), strict=True)
            )
        # The outage begins while the storm is on its way: some pods made, not all running.
        hub.wait_for(lambda: len(cluster.pods()) >= STORM // 4, "the first pods")
        cluster.outage(True)
        try:
            time.sleep(OUTAGE)
        finally:
            cluster.outage(False)

        outcomes: dict[str, str] = {}
        for user in users:
            if answers[user].status not in ACCEPTED:
                outcomes[user] = f"refused {answers[user].status}: {answers[user].body['message']}"
            elif settled(hub, user).get("ready"):
                outcomes[user] = "ran"
            else:
                message = spawn_failure(hub, user)
                assert message, f"{user}'s start failed without a message"
                outcomes[user] = f"failed: {message}"
        assert "ran" in outcomes.values(), outcomes
        # No start on its way was taken for an orphan: the reconciler removed pods of failed
        # starts only, if any.
        removed = re.findall(
            r"Reconcile: remove pod \S+ that no hub knows \(user '([^']+)'", log_since_last_start(hub)
        )
        assert {user for user in removed if outcomes[user] == "ran"} == set(), (removed, outcomes)
        hub.wait_for(lambda: agree(cluster, hub, users), "the three records to agree after the storm")

        for user in users:
            if outcomes[user] == "ran":
                assert hub.api("DELETE", server_path(user, "")).status in (202, 204)
        for user in users:
            assert not settled(hub, user).get("ready")
        hub.wait_for(
            lambda: cluster.pods() == [] and open_intervals(hub) == [], "no pod and no open interval", 60
        )
        assert pod_processes(hub) == []
        assert agree(cluster, hub, users)


# --- 6. the hub killed during a stop -------------------------------------------------------------------

HOLD = "e2e.einfra.test/hold"  # a finalizer of the test's own: a deleted pod stays Terminating


def hold_pod(cluster: FakeCluster, name: str, on: bool) -> None:
    """Add (or remove) the test's finalizer on pod ``name``: once deleted, a held pod's
    containers stop but the pod stays, with its deletionTimestamp, until it is released, as a
    pod stuck in Terminating does on a cluster. Releasing a pod that is gone does nothing."""
    body = json.dumps({"metadata": {"finalizers": [HOLD] if on else None}}).encode()
    request = urllib.request.Request(
        f"{cluster.url}/api/v1/namespaces/{NAMESPACE}/pods/{name}", data=body, method="PATCH"
    )
    request.add_header("Content-Type", "application/merge-patch+json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as error:
        if on or error.code != 404:
            raise


def test_a_stop_cut_short_by_a_hub_crash_is_finished_by_the_restarted_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "kl-stop-crash"
    # How long JupyterHub waits for a server it polled as running to answer at hub start (its
    # default, 30 s, only makes the test slower).
    check = "c.Spawner.http_timeout = 10\n"
    with cluster_and_hub(tmp_path, monkeypatch, extra_config=check) as (cluster, hub):
        pod = running_pod(cluster, hub, user)
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        # The stop takes as long as the test wants: the pod is deleted, but its removal waits
        # for the test's finalizer, and a stop waits until the pod is gone from the watch.
        hold_pod(cluster, name, True)
        try:
            assert hub.api("DELETE", server_path(user, "")).status == 202
            hub.wait_for(
                lambda: (
                    [p["metadata"].get("deletionTimestamp") is not None for p in cluster.pods(user)] == [True]
                    and pod_processes(hub, name) == []
                ),
                "the stop to delete the pod and its containers to stop",
            )
            assert (hub.server(user) or {}).get("pending") == "stop"
            hub.kill()

            # The killed hub's stop never ended: the pod is still there (Terminating) and its
            # interval still open.
            (terminating,) = cluster.pods(user)
            assert terminating["metadata"]["uid"] == uid
            (run,) = open_intervals(hub, user)
            assert run.last_seen is not None

            # What the restarted hub does (JupyterHub 5 and 6): it forgets a server only once its
            # Spawner.stop has returned, so its database still has this one as running, and at
            # start it polls it. The pod is still there, not finished, so our poll says it runs;
            # JupyterHub then waits up to http_timeout for it to answer, and it does not (its
            # containers were stopped by the first delete), so JupyterHub stops it: our stop
            # deletes the pod again (a no-op on a Terminating pod) and waits for it to go. The
            # server is never re-adopted as running. The reconciler leaves all this to
            # JupyterHub: a Terminating pod is not in its inventory, and a server with a stop in
            # progress settles its own interval.
            hub.start()
            seen: list[dict[str, Any]] = []

            def stopping_again() -> bool:
                model = hub.server(user) or {}
                seen.append(model)
                return model.get("pending") == "stop"

            hub.wait_for(stopping_again, "the restarted hub to stop the server", 90)
            assert not any(model.get("ready") for model in seen), seen
            assert [i.user for i in open_intervals(hub, user)] == [user]  # counted until it goes
            assert [p["metadata"]["uid"] for p in cluster.pods(user)] == [uid]
        finally:
            hold_pod(cluster, name, False)  # the kubelet's termination ends: the pod goes
        released = time.time()

        # The restarted hub's stop sees the pod go, closes the interval there and forgets the
        # server: the three records agree.
        assert settled(hub, user) == {}
        hub.wait_for(lambda: cluster.pods(user) == [], "the pod to go")
        assert open_intervals(hub, user) == []
        assert agree(cluster, hub, [user])
        (run,) = intervals_of(hub, user)
        assert run.stopped is not None and run.stopped >= released  # billed until it went
        log = log_since_last_start(hub)
        assert f"Could not stop {user}" not in log
        assert f"pod {NAMESPACE}/{name} that no hub knows" not in log  # not the reconciler

        # Nothing is left in the way of the same server: it starts again, once, and stops.
        again = running_pod(cluster, hub, user)
        assert again["metadata"]["uid"] != uid
        hub.stop_server(user)
        assert cluster.pods(user) == [] and open_intervals(hub, user) == []
        assert agree(cluster, hub, [user])
