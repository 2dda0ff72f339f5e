"""One spawn-storm trial in a process of its own, as a hub would run it; used by spawn_storm.py.

Run: ``python benchmarks/storm_trial.py --spawner einfra|kubespawner|floor --variant home|nohome
-n 100 [--cold]``. It starts the fake API server in a child process (so that its CPU is not
counted here), builds ``n`` spawners in this process's event loop, warms each contender up the
same way (the shared watches listed and watching, the client connected: the state of a hub that
has been up for a while), ``start()``s them all at once, then ``poll()``s and ``stop()``s them
all, and prints one JSON object of measurements on stdout. With ``--cold`` it measures the first
spawn after hub start instead: one spawner started at once, without any warm-up. A process per trial
keeps the spawners' per-process caches (backends, KubeSpawner's reflectors and clients) and the
garbage of one trial out of the next.

The spawners are the real classes, built as JupyterHub builds them (user, hub, orm_spawner,
config), with plain stand-ins for JupyterHub's database objects; logging goes at INFO to
/dev/null, so the cost of formatting a hub's log lines is counted, not the terminal's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from jupyterhub.utils import maybe_future
from traitlets.config import Config

from einfra_spawner.testing import FakeKubernetesProcess

PROFILES = Path(__file__).resolve().parent / "storm_profiles"
IMAGE = "quay.io/jupyter/minimal-notebook:2025-03-10"
GIB = 1024**3
#: Requests that read state instead of writing or watching it.
READ_VERBS = ("get", "list")
# Enough room for 1000 pods of 1 CPU and 4Gi each, with the default scheduler filters.
NODES_YAML = "nodes:\n" + "".join(
    f"  - {{name: node-{i}, cpu: '256', memory: 1024Gi, pods: 300}}\n" for i in range(8)
)


def hub_log() -> logging.Logger:
    """A logger like a hub's: INFO, one formatted line per record, written to /dev/null."""
    log = logging.getLogger("storm.hub")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
        handler.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s %(name)s] %(message)s"))
        log.addHandler(handler)
    return log


def stand_ins(index: int) -> dict[str, Any]:
    """The JupyterHub objects a spawner is built with, for user ``index`` (default server)."""
    name = f"user-{index:04d}"
    user = SimpleNamespace(
        id=index + 1,
        name=name,
        escaped_name=name,
        groups=[],
        admin=False,
        url=f"/user/{name}/",
        orm_user=None,
    )
    hub = SimpleNamespace(
        public_host="",
        url="http://hub:8081/hub/",
        api_url="http://hub:8081/hub/api/",
        base_url="/hub/",
    )
    orm_spawner = SimpleNamespace(name="", display_name="", user_options={}, server=None, state=None)
    return {
        "user": user,
        "hub": hub,
        "orm_spawner": orm_spawner,
        "oauth_client_id": f"jupyterhub-user-{name}",
        "api_token": f"token-{index:032d}",
    }


#: The storm measures of our spawner that ``--toggle`` switches off (``benchmarks/ablation.py``
#: measures what each one earns). Each is on in a hub by default.
MEASURES: dict[str, str] = {
    "poll-turns": "polls take turns: a bounded number read a server's state per loop iteration",
    "submission-gate": "the Kubernetes backend's submission gate (32 creates at a time)",
    "ledger-batching": "the usage ledger's queued writes in one transaction per batch",
    "slim-pods": "the pod cache keeps only the fields the spawner reads",
    "gc-freeze": "gc.freeze() of the start-up heap once the hub has started",
}


def toggle_measures(toggles: list[str], c: Config) -> bool:
    """Switch off the measures named in ``toggles`` (for the ablation); whether to freeze the
    start-up heap (as a hub does once started: ``configure()``'s default).

    The measures are switched the way a hub without them would run: a gate that admits
    everything at once, a context that does nothing, one transaction per write, the pod as
    listed."""
    import contextlib

    def nothing(*_: Any) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    if "poll-turns" in toggles:
        from einfra_spawner.runtime import HubRuntime

        _replace(HubRuntime, "poll_turn", nothing)
    if "submission-gate" in toggles:
        c.KubernetesBackend.concurrent_submissions = 1_000_000
    if "ledger-batching" in toggles:
        from einfra_spawner.usage import AsyncLedger

        batched = AsyncLedger._run_writes

        def one_by_one(self: AsyncLedger, batch: list[Any]) -> None:
            for queued in batch:
                batched(self, [queued])

        _replace(AsyncLedger, "_run_writes", one_by_one)
    if "slim-pods" in toggles:
        import einfra_spawner_kubernetes._cluster as cluster

        _replace(cluster, "slim_pod", lambda pod: pod)
    return "gc-freeze" not in toggles


def _replace(owner: object, name: str, value: object) -> None:
    """Replace ``owner.name`` for this trial's process (which ends with the trial)."""
    if not hasattr(owner, name):
        raise AttributeError(f"{owner!r} has no {name}: the ablation switch needs updating")
    setattr(owner, name, value)


#: What ``--priced`` adds to the instance: prices, so that every start and stop is recorded in
#: the usage ledger, as on an instance that shows costs.
PRICES_YAML = "prices:\n  currency: CZK\n  cpu_hour: 0.35\n  memory_gib_hour: 0.04\n"


def priced_profiles(workdir: Path) -> Path:
    """The storm's instance folder with prices (``--priced``), written in ``workdir``."""
    folder = workdir / "priced_profiles"
    folder.mkdir()
    for source in PROFILES.iterdir():
        (folder / source.name).write_text(source.read_text())
    with (folder / "instance.yaml").open("a") as instance:
        instance.write(PRICES_YAML)
    return folder


def fresh_database(server_url: str) -> tuple[str, Callable[[], None]]:
    """A new, empty PostgreSQL database on the server of ``server_url`` (a SQLAlchemy URL), its
    URL, and how to drop it: a new hub's ledger, as SQLite's new file is."""
    import sqlalchemy

    name = f"storm_{os.getpid()}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.make_url(server_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def einfra_spawners(
    n: int, variant: str, url: str, log: logging.Logger, workdir: Path, args: argparse.Namespace
) -> tuple[list[Any], Callable[[], Any]]:
    from einfra_spawner.hub import configure
    from einfra_spawner.runtime import current_runtime
    from einfra_spawner.spawner import EInfraSpawner

    c = Config()
    freeze = toggle_measures(args.toggle, c)
    profiles = priced_profiles(workdir) if args.priced else PROFILES
    # A fresh usage ledger per trial, as a new hub has, never one in the working directory.
    drop_database: Callable[[], None] | None = None
    if args.usage_db_url:
        c.EInfraSpawner.usage_db_url, drop_database = fresh_database(args.usage_db_url)
    else:
        c.EInfraSpawner.usage_db_url = f"sqlite:///{workdir / 'usage.sqlite'}"
    # What a hub's jupyterhub_config.py does at hub start: load the profiles, import the backend,
    # and (as a hub does once it has started; no JupyterHub runs here) freeze the start-up heap.
    configure(c, profiles, backend="kubernetes", freeze_heap=freeze)
    c.KubernetesBackend.api_url = url
    c.KubernetesBackend.namespace = "default"
    c.KubernetesBackend.delete_grace_seconds = 1  # KubeSpawner's delete_grace_period default
    spawners = [
        EInfraSpawner(config=c, log=log, user_options={"profile": variant}, **stand_ins(i)) for i in range(n)
    ]

    async def close() -> None:
        await current_runtime().close()  # the backend's watches and connections, the ledger
        if drop_database is not None:
            await asyncio.to_thread(drop_database)

    return spawners, close


def kubespawner_spawners(
    n: int, variant: str, url: str, log: logging.Logger
) -> tuple[list[Any], Callable[[], Any]]:
    """KubeSpawner configured for the same pod: image, resources, security context, and a
    10Gi PVC per user mounted as the home in the ``home`` variant."""
    from kubespawner import KubeSpawner
    from kubespawner.clients import _client_cache

    c = Config()
    c.KubeSpawner.k8s_api_host = url
    c.KubeSpawner.namespace = "default"
    c.KubeSpawner.image = IMAGE
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    c.KubeSpawner.cpu_limit = 2.0
    c.KubeSpawner.cpu_guarantee = 1.0
    c.KubeSpawner.mem_limit = 8 * GIB
    c.KubeSpawner.mem_guarantee = 4 * GIB
    c.KubeSpawner.uid = 1000
    c.KubeSpawner.gid = 100
    c.KubeSpawner.fs_gid = 100
    c.KubeSpawner.delete_grace_period = 1
    if variant == "home":
        c.KubeSpawner.storage_pvc_ensure = True
        c.KubeSpawner.storage_capacity = "10Gi"
        c.KubeSpawner.storage_class = "standard"
        c.KubeSpawner.storage_access_modes = ["ReadWriteOnce"]
        c.KubeSpawner.volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]
        c.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]
    else:
        c.KubeSpawner.storage_pvc_ensure = False
    # The same pod as ours (storm_profiles, rendered by render.py): non-root, no privilege
    # escalation, every capability dropped, the runtime's seccomp profile, no service account token.
    c.KubeSpawner.allow_privilege_escalation = False
    c.KubeSpawner.container_security_context = {
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    c.KubeSpawner.automount_service_account_token = False
    spawners = [KubeSpawner(config=c, log=log, **stand_ins(i)) for i in range(n)]

    async def close() -> None:
        await KubeSpawner._stop_all_reflectors()
        for api in list(_client_cache.values()):
            await api.api_client.close()
        _client_cache.clear()

    return spawners, close


def floor_spawners(n: int, variant: str, url: str) -> tuple[list[Any], Callable[[], Any], Any]:
    """The floor (``floor.py``): one session, one watch, a pre-serialised pod per start."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from floor import FloorHub, FloorSpawner

    hub = FloorHub(url, "default", home=variant == "home")
    return [FloorSpawner(hub, i) for i in range(n)], hub.close, hub


async def warm_up(contender: str, spawners: list[Any], floor_hub: Any) -> None:
    """What a hub that has been up for a while has done, the same for every contender: the
    shared pod and event watches listed and watching, the API client connected."""
    if contender == "kubespawner":
        first = spawners[0]
        await first._start_watching_pods()
        if first.events_enabled:
            await first._start_watching_events()
    elif contender == "floor":
        await floor_hub.warm()
    else:
        from einfra_spawner.runtime import current_runtime

        # configure() began warming the backend at "hub start"; wait until its watches synced
        # (a second warm-up finds them started and only waits).
        backend = current_runtime().backend("kubernetes", spawners[0].config, spawners[0].log)
        await backend.warm_up()


#: How long the hub runs, after the warm-up, before the storm (for every contender).
HUB_START_SECONDS = 1.0


class StallTicker:
    """A task that asks to wake every ``period`` seconds and records how late it woke: the
    longest event-loop stall (one callback or a batch of them holding the loop)."""

    def __init__(self, period: float = 0.002) -> None:
        self.period = period
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            self.longest = max(self.longest, time.perf_counter() - before - self.period)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class GcClock:
    """Pauses of the garbage collector (``gc.callbacks``): a full collection of a large heap
    is a loop stall that no spawner code shows in a profile."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            pause = time.perf_counter() - self._began
            self.total += pause
            self.longest = max(self.longest, pause)


def _stat_cpu(stat: Path) -> float:
    """CPU seconds (user + system) from a /proc ``stat`` file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by thread name (threads of one name summed):
    the event loop is ``MainThread``; the usage ledger's worker is ``einfra-usage_0``."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    seconds: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            used = _stat_cpu(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(task.name), "other")
        seconds[name] = seconds.get(name, 0.0) + used
    return seconds


def requests_by_kind(stats: dict[str, Any]) -> dict[str, int]:
    return {f"{r['verb']} {r['resource']}": int(r["count"]) for r in stats["requests"]}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def timed_all(
    spawners: list[Any], call: Callable[[Any], Awaitable[Any]]
) -> tuple[list[float], list[Any], float, float]:
    """Run ``call`` on every spawner at once; per-call latencies (s), results, wall (s), CPU (s)."""
    latencies = [0.0] * len(spawners)
    cpu0 = time.process_time()
    t0 = time.perf_counter()

    async def one(i: int, spawner: Any) -> Any:
        try:
            return await call(spawner)
        finally:
            latencies[i] = time.perf_counter() - t0

    results = await asyncio.gather(*(one(i, s) for i, s in enumerate(spawners)), return_exceptions=True)
    return latencies, list(results), time.perf_counter() - t0, time.process_time() - cpu0


async def run_trial(args: argparse.Namespace) -> dict[str, Any]:
    n = args.n
    log = hub_log()
    with tempfile.TemporaryDirectory(prefix="storm-") as tmp:
        nodes = Path(tmp) / "nodes.yaml"
        nodes.write_text(NODES_YAML)
        kubeconfig = Path(tmp) / "kubeconfig"
        async with FakeKubernetesProcess(
            nodes_file=nodes,
            validate=False,
            latency_ms=args.latency_ms,
            kubeconfig=kubeconfig,
            extra_args=["--running-delay-ms", str(args.running_delay_ms)],
        ) as server:
            # KubeSpawner loads a kubeconfig before it applies k8s_api_host.
            os.environ["KUBECONFIG"] = str(kubeconfig)
            floor_hub = None
            if args.spawner == "kubespawner":
                spawners, close = kubespawner_spawners(n, args.variant, server.url, log)
            elif args.spawner == "floor":
                spawners, close, floor_hub = floor_spawners(n, args.variant, server.url)
            else:
                spawners, close = einfra_spawners(n, args.variant, server.url, log, Path(tmp), args)
            assert server.pid is not None
            if args.cold:
                try:
                    return await cold_trial(args, spawners[0], floor_hub, server)
                finally:
                    await close()
            # The hub has finished starting before the class presses Start: every contender is
            # warmed up the same way (its shared watches listed and watching), then the hub
            # idles a moment as a hub that has been up for a while.
            await warm_up(args.spawner, spawners, floor_hub)
            await asyncio.sleep(HUB_START_SECONDS)
            gc.collect()
            gc_clock = GcClock()
            gc.callbacks.append(gc_clock)
            ticker = StallTicker()
            ticker.start()
            result: dict[str, Any] = {
                "spawner": args.spawner,
                "variant": args.variant,
                "n": n,
                "toggled": sorted(args.toggle),
            }
            try:
                await server.reset_stats()
                server_cpu0 = process_cpu(server.pid)

                async def start(spawner: Any) -> Any:
                    # As JupyterHub's User.spawn: the hook (where EInfraSpawner resolves) then start.
                    await maybe_future(spawner.run_pre_spawn_hook())
                    return await spawner.start()

                profiler = start_profiler(args.profile)
                threads0 = thread_cpu()
                latencies, results, wall, cpu = await timed_all(spawners, start)
                threads = thread_cpu()
                if profiler is not None:
                    stop_profiler(profiler, args.profile)
                server_cpu = process_cpu(server.pid) - server_cpu0
                errors = [repr(r) for r in results if isinstance(r, BaseException)]
                stats = await server.stats()
                result["start"] = {
                    "p50_ms": statistics.median(latencies) * 1e3,
                    "p99_ms": quantile(latencies, 0.99) * 1e3,
                    "wall_ms": wall * 1e3,
                    "cpu_ms_per_spawn": cpu * 1e3 / n,
                    "server_cpu_ms_per_spawn": server_cpu * 1e3 / n,
                    "thread_cpu_ms_per_spawn": {
                        name: (used - threads0.get(name, 0.0)) * 1e3 / n for name, used in threads.items()
                    },
                    "returned": len(results) - len(errors),
                    "errors": errors[:5],
                    "requests": requests_by_kind(stats),
                    "pods_running": stats["objects"]["pods"],
                }
                if args.dump_pod is not None:
                    await dump_pod(server.url, args.dump_pod)
                await server.reset_stats()
                _, polls, wall, cpu = await timed_all(spawners, lambda s: s.poll())
                stats = await server.stats()
                result["poll"] = {
                    "us_per_poll": wall * 1e6 / n,
                    "cpu_us_per_poll": cpu * 1e6 / n,
                    "running": sum(1 for p in polls if p is None),
                    "requests": requests_by_kind(stats),
                }
                await server.reset_stats()
                latencies, results, wall, cpu = await timed_all(spawners, lambda s: s.stop())
                stats = await server.stats()
                stop_errors = [repr(r) for r in results if isinstance(r, BaseException)]
                result["stop"] = {
                    "p50_ms": statistics.median(latencies) * 1e3,
                    "p99_ms": quantile(latencies, 0.99) * 1e3,
                    "wall_ms": wall * 1e3,
                    "cpu_ms_per_stop": cpu * 1e3 / n,
                    "errors": stop_errors[:5],
                    "requests": requests_by_kind(stats),
                    "pods_left": stats["objects"]["pods"],
                }
                result["stall_ms"] = ticker.longest * 1e3
                result["gc"] = {"total_ms": gc_clock.total * 1e3, "longest_ms": gc_clock.longest * 1e3}
                if args.idle_seconds > 0:
                    # Nothing changes now: any request here is a periodic relist or re-watch.
                    await server.reset_stats()
                    await asyncio.sleep(args.idle_seconds)
                    result["idle"] = {
                        "seconds": args.idle_seconds,
                        "requests": requests_by_kind(await server.stats()),
                    }
            finally:
                gc.callbacks.remove(gc_clock)
                await ticker.stop()
                await close()
    return result


async def cold_trial(args: argparse.Namespace, spawner: Any, floor_hub: Any, server: Any) -> dict[str, Any]:
    """The first spawn after hub start: nothing warmed up (ours has only begun warming up in the
    background, as configure() does at hub start; KubeSpawner starts its watches inside the
    start; the floor opens its session and watch first)."""
    await server.reset_stats()
    cpu0, t0 = time.process_time(), time.perf_counter()
    if floor_hub is not None:
        await floor_hub.warm()
    await maybe_future(spawner.run_pre_spawn_hook())
    await spawner.start()
    latency, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stats = await server.stats()
    await spawner.stop()
    return {
        "spawner": args.spawner,
        "variant": args.variant,
        "n": 1,
        "cold": {
            "latency_ms": latency * 1e3,
            "cpu_ms": cpu * 1e3,
            "requests": requests_by_kind(stats),
            "pods_running": stats["objects"]["pods"],
        },
    }


async def dump_pod(url: str, path: Path) -> None:
    """Write the first pod of the storm (as the API server stores it) to ``path``: the
    evidence that the contenders ask for the same pod."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/v1/namespaces/default/pods", params={"limit": "1"}) as response,
    ):
        listed = await response.json()
    pod = listed["items"][0]
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generateName"):
        pod["metadata"].pop(key, None)
    pod.pop("status", None)
    await asyncio.to_thread(path.write_text, json.dumps(pod, indent=1, sort_keys=True) + "\n")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawner", choices=["einfra", "kubespawner", "floor"], default="einfra")
    parser.add_argument("--cold", action="store_true", help="measure the first spawn after hub start")
    parser.add_argument("--dump-pod", type=Path, help="write the first pod of the storm to this file")
    parser.add_argument("--variant", choices=["home", "nohome"], default="home")
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=2.0)
    parser.add_argument("--running-delay-ms", type=float, default=50.0)
    parser.add_argument("--idle-seconds", type=float, default=0.0)
    parser.add_argument(
        "--priced", action="store_true", help="ours: an instance with prices (every start recorded)"
    )
    parser.add_argument(
        "--usage-db-url",
        help="ours: the ledger in a new database on this PostgreSQL server (default: a new SQLite file)",
    )
    parser.add_argument(
        "--toggle",
        action="append",
        default=[],
        choices=sorted(MEASURES),
        help="switch one of our storm measures off (repeatable)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="profile the start phase: cProfile for a .pstats path, else pyinstrument HTML",
    )
    return parser.parse_args(argv)


def start_profiler(path: Path | None) -> Any:
    """A running profiler of the start phase, when ``--profile`` asks for one: cProfile for a
    ``.pstats`` path (exact call counts), else pyinstrument (a readable call tree)."""
    if path is None:
        return None
    if path.suffix == ".pstats":
        import cProfile

        exact = cProfile.Profile(time.thread_time)  # the loop thread's CPU: waiting is not cost
        exact.enable()
        return exact
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    return profiler


def stop_profiler(profiler: Any, path: Path) -> None:
    """Stop ``profiler``, write it to ``path`` and print its hottest parts on stderr."""
    if path.suffix == ".pstats":
        import pstats

        profiler.disable()
        profiler.dump_stats(path)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
        return
    profiler.stop()
    path.write_text(profiler.output_html())
    print(profiler.output_text(unicode=False, color=False), file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(asyncio.run(run_trial(parse(argv)))))


if __name__ == "__main__":
    main()
