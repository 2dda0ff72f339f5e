"""Scale beyond the storm: a hub restart with thousands of running servers, the steady state of
polling them, and the hub's memory per running server; ours against KubeSpawner.

Run: ``python benchmarks/scale.py [--sizes 1000,5000] [--contenders einfra,kubespawner]
[--repeat 1] [--steady-seconds 60] [--steady-period 30] [--json scale.json] [--png scale.png]
[--quick]``.

For each size N and contender (alternated), the driver starts the fake API server (2 ms per
request, Kubernetes events on) in a process of its own, then runs two hub processes one after
the other, as a hub that is restarted:

1. **populate**: N servers started through the contender (in waves of 250), their states
   saved as JupyterHub's database would hold them; the hub's RSS before and after (memory per
   server after start). The process then ends without stopping anything.
2. **restart**: a new hub process on the same API server and states: construct N spawners,
   ``load_state``, warm up (the shared watches), the first ``poll()`` of every server at once
   as JupyterHub does at start, and (ours) the reconciler once. Measured: the time until the
   warm-up is done and until every server is known (its poll answered), against one list of
   every pod read in the same process; the API requests, the longest event-loop stall after the spawners are
   built (a ticker asking to wake every 2 ms; JupyterHub builds them all in one synchronous
   loop whatever the spawner, so that is timed apart, per spawner), hub CPU and RSS. Then the
   **steady state**: every server polled every ``--steady-period`` seconds, spread evenly,
   for ``--steady-seconds``: hub CPU per minute, the longest stall, the requests.

Ours runs with prices (``scale_profiles``), so its usage ledger records every run as a
national hub's does. Figures are reported, never asserted; ``--quick`` (N = 20, a 3 s steady
state polled every second) is what ``tests/benchmarks`` runs, checking counts only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROFILES = HERE / "scale_profiles"
WAVE = 250
#: Enough room for 5,000 pods of 1 CPU and 4Gi each.
NODES_YAML = "nodes:\n" + "".join(
    f"  - {{name: node-{i}, cpu: '1024', memory: 4096Gi, pods: 1000}}\n" for i in range(8)
)


# --- inside a hub process ------------------------------------------------------------------------


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def harness(url: str, method: str, path: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.request(method, url + path) as response:
        body: dict[str, Any] = await response.json()
        return body


def prepare(contender: str, url: str, usage_db: str, log: Any, toggles: list[str]) -> tuple[Any, Any]:
    """What a hub has done before it builds any spawner: its modules imported, its
    configuration read (for ours, ``configure()``, with the storm measures in ``toggles``
    switched off). Returns (make N spawners, close)."""
    sys.path.insert(0, str(HERE))
    from storm_trial import kubespawner_spawners, stand_ins, toggle_measures
    from traitlets.config import Config

    if contender == "kubespawner":
        import kubespawner  # noqa: F401 - imported before the clock starts, as in a running hub

        closing: list[Any] = []

        def make_kubespawners(n: int) -> list[Any]:
            spawners, close = kubespawner_spawners(n, "nohome", url, log)
            closing.append(close)
            return spawners

        async def close_kubespawners() -> None:
            for close in closing:
                await close()

        return make_kubespawners, close_kubespawners
    from einfra_spawner.hub import configure
    from einfra_spawner.runtime import current_runtime
    from einfra_spawner.spawner import EInfraSpawner

    c = Config()
    # As a hub once started (no JupyterHub runs here): the start-up heap frozen.
    freeze = toggle_measures(toggles, c)
    configure(c, PROFILES, backend="kubernetes", freeze_heap=freeze)
    c.EInfraSpawner.profiles_dir = str(PROFILES)
    c.EInfraSpawner.backend = "kubernetes"
    c.EInfraSpawner.usage_db_url = usage_db
    c.KubernetesBackend.api_url = url
    c.KubernetesBackend.namespace = "default"
    c.KubernetesBackend.delete_grace_seconds = 1

    def make(n: int) -> list[Any]:
        return [
            EInfraSpawner(config=c, log=log, user_options={"profile": "nohome"}, **stand_ins(i))
            for i in range(n)
        ]

    async def close() -> None:
        await current_runtime().close()

    return make, close


async def warm_up(contender: str, spawners: list[Any]) -> None:
    if contender == "kubespawner":
        await spawners[0]._start_watching_pods()
        if spawners[0].events_enabled:
            await spawners[0]._start_watching_events()
        return
    from einfra_spawner.runtime import current_runtime

    backend = current_runtime().backend("kubernetes", spawners[0].config, spawners[0].log)
    await backend.warm_up()


async def reconcile_once(spawners: list[Any], usage_db: str) -> int:
    """Ours: the reconciler's pass over the whole instance, as at hub start (JupyterHub knows
    every server as running). Returns how many actions it took (0: nothing was out of step)."""
    from einfra_spawner.reconcile import HubServer, Reconciler
    from einfra_spawner.runtime import current_runtime

    runtime = current_runtime()
    backend = runtime.backend("kubernetes", spawners[0].config, spawners[0].log)
    ledger = runtime.ledger(usage_db)
    # JupyterHub's view (its database's servers): the stand-ins' names, as stand_ins() makes them.
    known = tuple(
        HubServer(user=f"user-{i:04d}", server="", running=True, pending=False) for i in range(len(spawners))
    )

    async def opened() -> Any:
        return ledger

    async def hub_view() -> tuple[HubServer, ...]:
        return known

    reconciler = Reconciler(
        instance="scale",
        backend=backend,
        ledger=opened,
        hub_view=hub_view,
        grace=300.0,
        process_started=runtime.started,
        log=spawners[0].log,
    )
    return len(await reconciler.run_once())


async def populate(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from jupyterhub.utils import maybe_future
    from storm_trial import hub_log

    log = hub_log()
    make, close = prepare(args.spawner, args.url, args.usage_db, log, args.toggle)
    gc.collect()
    rss0 = rss_bytes()
    spawners = make(args.n)
    await warm_up(args.spawner, spawners)
    failures: list[str] = []

    async def start(spawner: Any) -> None:
        await maybe_future(spawner.run_pre_spawn_hook())
        await spawner.start()

    for first in range(0, args.n, WAVE):
        wave = spawners[first : first + WAVE]
        results = await asyncio.gather(*(start(s) for s in wave), return_exceptions=True)
        failures += [repr(r) for r in results if isinstance(r, BaseException)]
    gc.collect()
    rss1 = rss_bytes()
    states = json.dumps([s.get_state() for s in spawners])
    await asyncio.to_thread(Path(args.states).write_text, states)
    stats = await harness(args.url, "GET", "/_harness/stats")
    await close()
    return {
        "started": args.n - len(failures),
        "errors": failures[:5],
        "pods": stats["objects"]["pods"],
        "rss_mib": rss1 / 2**20,
        "kib_per_server": (rss1 - rss0) / 1024 / args.n,
    }


async def list_every_pod(url: str) -> float:
    """Seconds for one list of every pod, read and decoded in this process: what a restart to
    "all known" is measured against (the faster of two, so that importing and connecting the
    first time is not counted)."""
    import aiohttp

    took = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            t0 = time.perf_counter()
            async with session.get(f"{url}/api/v1/pods") as response:
                listed = await response.json()
            took.append(time.perf_counter() - t0)
            if not listed["items"]:
                raise RuntimeError("no pods to list: the restart has nothing to find")
    return min(took)


async def restart(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from storm_trial import StallTicker, hub_log, requests_by_kind

    log = hub_log()
    states = json.loads(await asyncio.to_thread(Path(args.states).read_text))
    # Before anything of the hub runs (prepare() lets the warm-up begin at the next await).
    one_list = await list_every_pod(args.url)
    make, close = prepare(args.spawner, args.url, args.usage_db, log, args.toggle)
    gc.collect()
    rss0 = rss_bytes()
    await harness(args.url, "POST", "/_harness/stats/reset")
    profiler = start_profiler(args)
    cpu0, t0 = time.process_time(), time.perf_counter()
    # JupyterHub builds every spawner in one synchronous loop before it polls them (its own
    # structure, the same for any spawner): timed apart, and the stall counted after it.
    spawners = make(args.n)
    for spawner, state in zip(spawners, states, strict=True):
        spawner.load_state(state)
    constructed = time.perf_counter() - t0
    ticker = StallTicker()
    ticker.start()
    gc_clock = GcPauses()
    gc.callbacks.append(gc_clock)
    # The warm-up (the shared watches listed and watching), then the first poll of every server
    # at once; a server is known once its poll has answered.
    await warm_up(args.spawner, spawners)
    warmed = time.perf_counter() - t0
    polls = await asyncio.gather(*(s.poll() for s in spawners), return_exceptions=True)
    all_known = time.perf_counter() - t0
    stall_to_known = ticker.longest
    actions = await reconcile_once(spawners, args.usage_db) if args.spawner == "einfra" else 0
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    gc.callbacks.remove(gc_clock)
    stop_profiler(profiler, args, "restart")
    stats = await harness(args.url, "GET", "/_harness/stats")
    gc.collect()
    rss1 = rss_bytes()
    result: dict[str, Any] = {
        "restart": {
            "all_known_s": all_known,
            "warmed_up_s": warmed,
            "one_list_s": one_list,
            "construct_ms_per_server": constructed * 1e3 / args.n,
            "with_reconciler_s": wall,
            "cpu_s": cpu,
            "stall_ms": ticker.longest * 1e3,
            "stall_to_all_known_ms": stall_to_known * 1e3,
            **gc_clock.figures(),
            "requests": requests_by_kind(stats),
            "running": sum(1 for p in polls if p is None),
            "errors": [repr(p) for p in polls if isinstance(p, BaseException)][:5],
            "reconciler_actions": actions,
            "rss_mib": rss1 / 2**20,
            "kib_per_server": (rss1 - rss0) / 1024 / args.n,
        }
    }
    await ticker.stop()
    result["steady"] = await steady(args, spawners)
    await close()
    return result


async def steady(args: argparse.Namespace, spawners: list[Any]) -> dict[str, Any]:
    """Every server polled every ``period`` seconds, spread evenly, as JupyterHub's poll loops."""
    sys.path.insert(0, str(HERE))
    from storm_trial import StallTicker, requests_by_kind, thread_cpu

    period, seconds = args.steady_period, args.steady_seconds
    for spawner in spawners:
        # ours writes "seen" within one poll interval (an Integer trait in JupyterHub 5)
        spawner.poll_interval = round(period) if float(period).is_integer() else period
    counts = {"polls": 0, "running": 0}
    in_polls = [0.0]  # CPU inside the poll calls: the spawner's own cost, without the harness's
    stop_at = time.perf_counter() + seconds

    async def loop(offset: float, spawner: Any) -> None:
        await asyncio.sleep(offset)
        while time.perf_counter() < stop_at:
            counts["polls"] += 1
            before = time.thread_time()
            counts["running"] += (await spawner.poll()) is None
            in_polls[0] += time.thread_time() - before
            await asyncio.sleep(period)

    await harness(args.url, "POST", "/_harness/stats/reset")
    ticker = StallTicker(period=0.01)  # coarser than the restart's: its own wake-ups cost CPU here
    ticker.start()
    profiler = start_profiler(args)
    gc_clock = GcPauses()
    gc.callbacks.append(gc_clock)
    threads0 = thread_cpu()
    cpu0 = time.process_time()
    tasks = [asyncio.create_task(loop(i * period / len(spawners), s)) for i, s in enumerate(spawners)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu = time.process_time() - cpu0
    threads = {name: used - threads0.get(name, 0.0) for name, used in thread_cpu().items()}
    gc.callbacks.remove(gc_clock)
    stop_profiler(profiler, args, "steady")
    await ticker.stop()
    stats = await harness(args.url, "GET", "/_harness/stats")
    polls = max(1, counts["polls"])
    return {
        "seconds": seconds,
        "period_s": period,
        "polls": counts["polls"],
        "running": counts["running"],
        "cpu_s_per_min": cpu * 60 / seconds,
        "cpu_ms_per_poll": cpu * 1e3 / polls,
        "in_poll_us": in_polls[0] * 1e6 / polls,
        # at JupyterHub's default (every server every 30 s): N * 2 polls a minute
        "cpu_s_per_min_at_30s": cpu / polls * len(spawners) * 2,
        "stall_ms": ticker.longest * 1e3,
        "requests": requests_by_kind(stats),
        "thread_cpu_s": threads,
        **gc_clock.figures(),
    }


def start_profiler(args: argparse.Namespace) -> Any:
    """pyinstrument over a phase, when ``--profile DIR`` asks for it (``--profile-cpu``:
    cProfile of the loop thread's CPU time instead, where waiting costs nothing)."""
    if not args.profile:
        return None
    if args.profile_cpu:
        import cProfile

        exact = cProfile.Profile(time.thread_time)
        exact.enable()
        return exact
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    return profiler


def stop_profiler(profiler: Any, args: argparse.Namespace, phase: str) -> None:
    if profiler is None:
        return
    folder = Path(args.profile)
    folder.mkdir(parents=True, exist_ok=True)
    if args.profile_cpu:
        import io
        import pstats

        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)
        (folder / f"{args.spawner}-{phase}-{args.n}.cpu.txt").write_text(out.getvalue())
        return
    profiler.stop()
    (folder / f"{args.spawner}-{phase}-{args.n}.html").write_text(profiler.output_html())
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    (folder / f"{args.spawner}-{phase}-{args.n}.txt").write_text(text)


class GcPauses:
    """Garbage-collector pauses (``gc.callbacks``): the total, the longest, and the generation
    and size of the longest (a full collection of a large heap stalls the loop)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self.longest_generation = -1
        self.full = 0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        pause = time.perf_counter() - self._began
        self.total += pause
        self.full += info["generation"] == 2
        if pause > self.longest:
            self.longest, self.longest_generation = pause, info["generation"]

    def figures(self) -> dict[str, float]:
        return {
            "gc_total_ms": self.total * 1e3,
            "gc_longest_ms": self.longest * 1e3,
            "gc_longest_generation": self.longest_generation,
            "gc_full_collections": self.full,
        }


# --- the driver ----------------------------------------------------------------------------------


def child(
    phase: str, contender: str, n: int, url: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        phase,
        "--spawner",
        contender,
        "-n",
        str(n),
        "--url",
        url,
        "--states",
        str(work / f"states-{contender}.json"),
        "--usage-db",
        f"sqlite:///{work / 'usage.sqlite'}",
        "--steady-seconds",
        str(args.steady_seconds),
        "--steady-period",
        str(args.steady_period),
        *(["--profile", str(args.profile)] if args.profile else []),
        *(["--profile-cpu"] if args.profile_cpu else []),
        *(f"--toggle={measure}" for measure in args.toggle),
    ]
    env = {**os.environ, "KUBECONFIG": str(work / "kubeconfig")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{phase} {contender} n={n} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def one_run(contender: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    from einfra_spawner.testing import FakeKubernetesProcess

    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = Path(tmp)
        (work / "nodes.yaml").write_text(NODES_YAML)
        async with FakeKubernetesProcess(
            nodes_file=work / "nodes.yaml",
            validate=False,
            latency_ms=args.latency_ms,
            kubeconfig=work / "kubeconfig",
            extra_args=["--running-delay-ms", "50", "--history-limit", str(max(10_000, 8 * n))],
        ) as server:
            populated = await asyncio.to_thread(child, "populate", contender, n, server.url, work, args)
            restarted = await asyncio.to_thread(child, "restart", contender, n, server.url, work, args)
    return {"contender": contender, "n": n, "populate": populated, **restarted}


def problems(run: dict[str, Any]) -> list[str]:
    """What does not add up in a run (empty when every server started, was found, was polled)."""
    n, found = run["n"], []
    if run["populate"]["started"] != n or run["populate"]["pods"] != n:
        found.append(f"populate: {run['populate']['started']} started, {run['populate']['pods']} pods")
    if run["restart"]["running"] != n:
        found.append(f"restart: {run['restart']['running']} of {n} found running {run['restart']['errors']}")
    if run["steady"]["running"] != run["steady"]["polls"]:
        found.append(f"steady: {run['steady']['running']} of {run['steady']['polls']} polls said running")
    return found


FIGURES = [
    ("restart", "all_known_s", "restart: all known (s)"),
    ("restart", "one_list_s", "restart: one list of every pod (s)"),
    ("restart", "warmed_up_s", "restart: warm-up done (s)"),
    ("restart", "with_reconciler_s", "restart: + reconciler (s)"),
    ("restart", "cpu_s", "restart: hub CPU (s)"),
    ("restart", "stall_to_all_known_ms", "restart: stall to all known (ms)"),
    ("restart", "stall_ms", "restart: stall, + reconciler (ms)"),
    ("restart", "gc_longest_ms", "restart: longest GC pause (ms)"),
    ("restart", "construct_ms_per_server", "restart: build ms per spawner"),
    ("restart", "kib_per_server", "restart: KiB per server"),
    ("populate", "kib_per_server", "after start: KiB per server"),
    ("steady", "cpu_s_per_min_at_30s", "steady: CPU s/min (30 s polls)"),
    ("steady", "cpu_ms_per_poll", "steady: CPU ms per poll"),
    ("steady", "in_poll_us", "steady: CPU in poll() (µs)"),
    ("steady", "stall_ms", "steady: longest stall (ms)"),
    ("steady", "gc_longest_ms", "steady: longest GC pause (ms)"),
]


def figure(runs: list[dict[str, Any]], phase: str, key: str) -> float:
    return statistics.median(float(r[phase][key]) for r in runs)


def slopes(report: dict[str, Any]) -> dict[str, float]:
    """Hub RSS per running server after a restart, as the slope between the smallest and the
    largest size (KiB per server): the fixed cost of a hub process cancels out."""
    found = {}
    for contender in report["contenders"]:
        rows = sorted((r for r in report["results"] if r["contender"] == contender), key=lambda r: r["n"])
        if len(rows) >= 2 and rows[-1]["n"] > rows[0]["n"]:
            first, last = rows[0], rows[-1]
            rise = last["figures"]["restart"]["rss_mib"] - first["figures"]["restart"]["rss_mib"]
            found[contender] = rise * 1024 / (last["n"] - first["n"])
    return found


def markdown_table(report: dict[str, Any]) -> str:
    """The figures of a report as a Markdown table, one column per contender and size."""
    contenders = report["contenders"]
    sizes = sorted({r["n"] for r in report["results"]})
    rows = {(r["contender"], r["n"]): r for r in report["results"]}
    heads = [f"{c} N={n}" for n in sizes for c in contenders]
    lines = ["| figure | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for phase, key, label in FIGURES:
        cells = [f"{rows[(c, n)]['figures'][phase][key]:.2f}" for n in sizes for c in contenders]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    found = slopes(report)
    if found:
        text = ", ".join(f"{c} {v:.1f}" for c, v in found.items())
        lines += [
            "",
            f"RSS per running server after a restart (slope from N={sizes[0]} to N={sizes[-1]}, KiB): {text}",
        ]
    return "\n".join(lines) + "\n"


def picture(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = [
        (axes[0], "restart", "all_known_s", "restart: until every server is known (s)"),
        (axes[1], "restart", "rss_mib", "hub RSS after the restart (MiB)"),
        (axes[2], "steady", "cpu_s_per_min_at_30s", "steady state: hub CPU s per minute"),
    ]
    for contender in report["contenders"]:
        rows = sorted((r for r in report["results"] if r["contender"] == contender), key=lambda r: r["n"])
        for ax, phase, key, _ in panels:
            ax.plot(
                [r["n"] for r in rows], [r["figures"][phase][key] for r in rows], marker="o", label=contender
            )
    for ax, _, _, title in panels:
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("running servers")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure_.tight_layout()
    figure_.savefig(path, dpi=110)
    plt.close(figure_)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000")
    parser.add_argument("--contenders", default="einfra,kubespawner")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=2.0)
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--steady-period", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per hub process")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path, help="default: beside --json, as .png")
    parser.add_argument("--markdown", type=Path, help="also write the figures as a Markdown table")
    parser.add_argument(
        "--redraw", action="store_true", help="run nothing: write --markdown and the picture from --json"
    )
    parser.add_argument("--quick", action="store_true", help="N = 20, one run, a 3 s steady state")
    parser.add_argument("--profile", type=Path, help="pyinstrument profiles of each phase into this folder")
    parser.add_argument("--profile-cpu", action="store_true", help="with --profile: cProfile of CPU time")
    parser.add_argument(
        "--toggle",
        action="append",
        default=[],
        help="ours: switch one of the storm measures off (storm_trial.MEASURES; repeatable)",
    )
    # a hub process of the driver's
    parser.add_argument("--phase", choices=["populate", "restart"], help=argparse.SUPPRESS)
    parser.add_argument("--spawner", help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--states", help=argparse.SUPPRESS)
    parser.add_argument("--usage-db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat, args.steady_seconds, args.steady_period = "20", 1, 3.0, 1.0
    return args


#: Command-line options that name output files.
_OUTPUTS = frozenset({"json", "png", "markdown", "profile"})


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.phase is not None:
        run = populate if args.phase == "populate" else restart
        print(json.dumps(asyncio.run(run(args))))
        return 0
    if args.redraw:
        saved = json.loads(args.json.read_text())
        if args.markdown:
            args.markdown.write_text(markdown_table(saved))
        picture(saved, args.png or args.json.with_suffix(".png"))
        return 0
    contenders = [c for c in args.contenders.split(",") if c]
    report: dict[str, Any] = {
        # What was measured, not where the outputs went (paths of one machine do not belong in
        # a report that is committed).
        "settings": {k: v for k, v in vars(args).items() if k not in _OUTPUTS},
        "contenders": contenders,
    }
    report["results"] = []
    trouble = 0
    for n in [int(s) for s in args.sizes.split(",") if s]:
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
        for _ in range(args.repeat):
            for contender in contenders:  # alternated
                runs[contender].append(asyncio.run(one_run(contender, n, args)))
        print(f"N={n:<6}" + "".join(f"{c:>16}" for c in contenders))
        for contender in contenders:
            found = [p for r in runs[contender] for p in problems(r)]
            trouble += len(found)
            report["results"].append(
                {
                    "contender": contender,
                    "n": n,
                    "figures": {
                        phase: {
                            key: figure(runs[contender], phase, key)
                            for key in runs[contender][0][phase]
                            if isinstance(runs[contender][0][phase][key], (int, float))
                        }
                        for phase in ("populate", "restart", "steady")
                    },
                    "problems": found,
                    "runs": runs[contender],
                }
            )
        rows = {r["contender"]: r for r in report["results"] if r["n"] == n}
        for phase, key, label in FIGURES:
            print(f"  {label:<32}" + "".join(f"{rows[c]['figures'][phase][key]:>16.2f}" for c in contenders))
        for contender in contenders:
            requests = runs[contender][0]["restart"]["requests"]
            print(f"  {contender} restart requests: {requests}")
            print(f"  {contender} steady requests: {runs[contender][0]['steady']['requests']}")
            for problem in rows[contender]["problems"]:
                print(f"  {contender} PROBLEM: {problem}")
        print()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown_table(report))
    png = args.png or (args.json.with_suffix(".png") if args.json else None)
    if png is not None:
        picture(report, png)
    return 1 if trouble else 0


if __name__ == "__main__":
    raise SystemExit(main())
