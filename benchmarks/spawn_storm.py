"""The spawn storm: N spawners started at once in one event loop, as in a hub, then polled and stopped.

Run: ``python benchmarks/spawn_storm.py [--sizes 1,10,100,500,1000] [--repeat 3]
[--compare kubespawner,floor] [--variants home,nohome] [--json storm.json] [--markdown storm.md]
[--png storm.png] [--quick]``.

Each trial runs in a fresh process (``benchmarks/storm_trial.py``) with the fake API server in a
child process of its own (2 ms per request, a pod Running 50 ms after creation, no schema
validation), so neither the server's CPU nor an earlier trial's garbage is counted. A trial builds
N real ``EInfraSpawner`` objects with the Kubernetes backend (or, with ``--compare kubespawner``,
N ``KubeSpawner`` objects configured for the same pod), calls ``start()`` on all at once, then
``poll()`` and ``stop()``. Variants: ``home`` (a PVC per user) and ``nohome`` (none). With
``--compare``, trials of the contenders alternate (ours, KubeSpawner, the floor, ours, ...), and
each figure is printed for each with the ratios ours/KubeSpawner and ours/floor. Every contender
is warmed up the same way before a storm (its shared watches listed and watching); the first
spawn after hub start, without any warm-up, is a row of its own ("cold"). The floor
(``floor.py``) is the least a Python hub can do per spawn: a pre-serialised pod, one POST over
a keep-alive session, one shared watch. Figures are medians over the repeats; times are never
asserted anywhere (``tests/benchmarks`` only checks that the storm runs and its counts add up).
``--quick``: N = 10, one trial, one variant, for CI.

Figures: start latency p50/p99 and the storm's wall time; hub-process CPU per spawn (the start
phase; the server's CPU is shown apart); the longest event-loop stall (a ticker task asking to
wake every 2 ms); poll cost per spawner; stop latency; API requests per spawn by verb and
resource for each phase, and the reads (get, list) among them. ``bound of p50`` is what a start
cannot beat: the kubelet's delay, two request round trips and, for the median spawn, half the
storm's CPU work queued ahead of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

TRIAL = Path(__file__).resolve().parent / "storm_trial.py"
#: Short names of the contenders in tables and pictures.
LABELS = {"einfra": "ours", "kubespawner": "KubeSpawner", "floor": "floor"}

#: (key, label, how to read it from a trial); lower is better for each.
FIGURES: list[tuple[str, str]] = [
    ("start_p50_ms", "start p50 (ms)"),
    ("start_p99_ms", "start p99 (ms)"),
    ("start_wall_ms", "storm wall time (ms)"),
    ("floor_p50_ms", "bound of p50 (ms)"),
    ("cpu_ms_per_spawn", "hub CPU per spawn (ms)"),
    ("server_cpu_ms_per_spawn", "API server CPU per spawn (ms)"),
    ("stall_ms", "longest loop stall (ms)"),
    ("gc_longest_ms", "longest GC pause (ms)"),
    ("poll_us", "poll, per spawner (µs)"),
    ("stop_p50_ms", "stop p50 (ms)"),
    ("stop_p99_ms", "stop p99 (ms)"),
    ("requests_per_spawn", "API requests per spawn"),
    ("reads_per_spawn", "reads (get+list) per spawn"),
]


def run_trial(
    spawner: str,
    variant: str,
    n: int,
    args: argparse.Namespace,
    *,
    cold: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(TRIAL),
        "--spawner",
        spawner,
        "--variant",
        variant,
        "-n",
        str(n),
        "--latency-ms",
        str(args.latency_ms),
        "--running-delay-ms",
        str(args.running_delay_ms),
        "--idle-seconds",
        str(args.idle_seconds),
        *(["--cold"] if cold else []),
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.trial_timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"trial {spawner} {variant} n={n} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def reads(requests: dict[str, int]) -> int:
    return sum(count for kind, count in requests.items() if kind.split()[0] in ("get", "list"))


def figures(trial: dict[str, Any], latency_ms: float, running_delay_ms: float) -> dict[str, float]:
    """The flat figures of one trial."""
    n = trial["n"]
    start, poll, stop = trial["start"], trial["poll"], trial["stop"]
    all_requests = [start["requests"], poll["requests"], stop["requests"]]
    cpu = start["cpu_ms_per_spawn"]
    return {
        "start_p50_ms": start["p50_ms"],
        "start_p99_ms": start["p99_ms"],
        "start_wall_ms": start["wall_ms"],
        # The kubelet's delay, two round trips, and half the storm's CPU work queued ahead.
        "floor_p50_ms": running_delay_ms + 2 * latency_ms + cpu * n / 2,
        "cpu_ms_per_spawn": cpu,
        "server_cpu_ms_per_spawn": start["server_cpu_ms_per_spawn"],
        "stall_ms": trial["stall_ms"],
        "gc_longest_ms": trial["gc"]["longest_ms"],
        "poll_us": poll["us_per_poll"],
        "stop_p50_ms": stop["p50_ms"],
        "stop_p99_ms": stop["p99_ms"],
        "requests_per_spawn": sum(sum(r.values()) for r in all_requests) / n,
        "reads_per_spawn": sum(reads(r) for r in all_requests) / n,
    }


def consistent(trial: dict[str, Any]) -> list[str]:
    """What does not add up in a trial (empty when every start returned and every pod went)."""
    n = trial["n"]
    problems = []
    if trial["start"]["returned"] != n:
        problems.append(f"{n - trial['start']['returned']} starts failed: {trial['start']['errors']}")
    if trial["start"]["pods_running"] != n:
        problems.append(f"{trial['start']['pods_running']} pods after the starts, not {n}")
    if trial["poll"]["running"] != n:
        problems.append(f"{trial['poll']['running']} polls said running, not {n}")
    if trial["stop"]["errors"]:
        problems.append(f"stops failed: {trial['stop']['errors']}")
    if trial["stop"]["pods_left"]:
        problems.append(f"{trial['stop']['pods_left']} pods left after the stops")
    return problems


def per_spawn_requests(trials: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median requests per spawn, by phase and by "verb resource"."""
    result: dict[str, dict[str, float]] = {}
    for phase in ("start", "poll", "stop"):
        kinds = sorted({k for t in trials for k in t[phase]["requests"]})
        result[phase] = {
            kind: statistics.median(t[phase]["requests"].get(kind, 0) / t["n"] for t in trials)
            for kind in kinds
        }
    idle = [t["idle"] for t in trials if "idle" in t]
    if idle:
        kinds = sorted({k for i in idle for k in i["requests"]})
        result["idle (total)"] = {k: statistics.median(i["requests"].get(k, 0) for i in idle) for k in kinds}
    return result


def summarise(trials: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    flat = [figures(t, args.latency_ms, args.running_delay_ms) for t in trials]
    return {
        "figures": {key: statistics.median(f[key] for f in flat) for key, _ in FIGURES},
        "requests": per_spawn_requests(trials),
        "problems": [p for t in trials for p in consistent(t)],
        "trials": trials,
    }


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "-"


def print_block(n: int, variant: str, results: dict[str, dict[str, Any]]) -> None:
    spawners = list(results)
    others = [s for s in spawners if s != "einfra"]
    header = f"N={n} {variant}"
    line = f"{header:<32}" + "".join(f"{LABELS[s]:>14}" for s in spawners)
    line += "".join(f"{'ours/' + LABELS[o]:>18}" for o in others)
    print(line)
    for key, label in FIGURES:
        values = {s: results[s]["figures"][key] for s in spawners}
        row = f"  {label:<30}" + "".join(f"{v:>14.2f}" for v in values.values())
        row += "".join(f"{ratio(values['einfra'], values[o]):>18}" for o in others)
        print(row)
    for spawner in spawners:
        for phase, kinds in results[spawner]["requests"].items():
            if kinds:
                text = ", ".join(f"{kind} {count:g}" for kind, count in kinds.items())
                print(f"  {spawner} {phase} requests per spawn: {text}")
        for problem in results[spawner]["problems"]:
            print(f"  {spawner} PROBLEM: {problem}")
    print()


def cold_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the cold first spawns of one contender."""
    return {
        "latency_ms": statistics.median(t["cold"]["latency_ms"] for t in trials),
        "cpu_ms": statistics.median(t["cold"]["cpu_ms"] for t in trials),
        "requests": trials[0]["cold"]["requests"],
        "problems": [
            f"{t['cold']['pods_running']} pods, not 1" for t in trials if t["cold"]["pods_running"] != 1
        ],
        "trials": trials,
    }


def print_cold(variant: str, cold: dict[str, dict[str, Any]]) -> None:
    others = [s for s in cold if s != "einfra"]
    print(f"cold first spawn after hub start, {variant}")
    for key, label in (("latency_ms", "start latency (ms)"), ("cpu_ms", "hub CPU (ms)")):
        values = {s: cold[s][key] for s in cold}
        row = f"  {label:<30}" + "".join(f"{v:>14.2f}" for v in values.values())
        row += "".join(f"{ratio(values['einfra'], values[o]):>18}" for o in others)
        print(row)
    for spawner, summary in cold.items():
        text = ", ".join(f"{kind} {count}" for kind, count in summary["requests"].items())
        print(f"  {spawner} requests: {text}")
        for problem in summary["problems"]:
            print(f"  {spawner} PROBLEM: {problem}")
    print()


def markdown_table(report: dict[str, Any]) -> str:
    """The headline figures of a report (``--json``) as a Markdown table: each contender's figure
    (ours / KubeSpawner / floor, as far as they ran), and ours over each other's."""
    lines = []
    for variant, cold in report.get("cold", {}).items():
        names = list(cold)
        lines += [
            f"Cold first spawn after hub start ({variant}): "
            + "; ".join(
                f"{LABELS[s]} {cold[s]['latency_ms']:.0f} ms, {cold[s]['cpu_ms']:.0f} ms CPU" for s in names
            ),
            "",
        ]
    contenders = list(report["results"][0]["spawners"]) if report["results"] else ["einfra"]
    others = [s for s in contenders if s != "einfra"]
    heading = " / ".join(LABELS[s] for s in contenders)

    def cell(row: dict[str, Any], key: str, digits: int) -> str:
        values = {s: row["spawners"][s]["figures"][key] for s in contenders}
        text = " / ".join(f"{v:.{digits}f}" for v in values.values())
        ratios = ", ".join(ratio(values["einfra"], values[o]) for o in others)
        return f"{text} ({ratios})" if others else text

    lines += [
        f"Each cell: {heading}" + (f" (ours / {', ours / '.join(LABELS[o] for o in others)})" * bool(others)),
        "",
        "| N, variant | start p50 ms | start p99 ms | hub CPU ms per start | longest loop stall ms "
        "| longest GC pause ms | poll µs | stop p50 ms | API requests per spawn |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['n']} {row['variant']} | {cell(row, 'start_p50_ms', 0)} "
            f"| {cell(row, 'start_p99_ms', 0)} "
            f"| {cell(row, 'cpu_ms_per_spawn', 2)} | {cell(row, 'stall_ms', 0)} "
            f"| {cell(row, 'gc_longest_ms', 0)} | {cell(row, 'poll_us', 0)} | {cell(row, 'stop_p50_ms', 0)} "
            f"| {cell(row, 'requests_per_spawn', 2)} |"
        )
    return "\n".join(lines) + "\n"


def picture(report: dict[str, Any], path: Path) -> None:
    """Start p50/p99 and hub CPU per start against N, one line per contender and variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[tuple[str, str], list[tuple[int, dict[str, float]]]] = {}
    for row in report["results"]:
        for spawner, summary in row["spawners"].items():
            series.setdefault((spawner, row["variant"]), []).append((row["n"], summary["figures"]))
    for (spawner, variant), points in series.items():
        points.sort(key=lambda point: point[0])
        sizes = [n for n, _ in points]
        name = f"{LABELS[spawner]} ({variant})"
        drawn = latency.plot(sizes, [f["start_p50_ms"] for _, f in points], marker="o", label=f"{name} p50")
        latency.plot(
            sizes,
            [f["start_p99_ms"] for _, f in points],
            marker="x",
            linestyle="--",
            color=drawn[0].get_color(),
            label=f"{name} p99",
        )
        cpu.plot(sizes, [f["cpu_ms_per_spawn"] for _, f in points], marker="o", label=name)
    for axes, title, unit in ((latency, "start latency", "ms"), (cpu, "hub CPU per start", "ms")):
        axes.set_xscale("log")
        axes.set_xlabel("spawns at once (N)")
        axes.set_ylabel(unit)
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
    latency.set_yscale("log")
    latency.legend(fontsize=7)
    cpu.legend(fontsize=7)
    settings = report["settings"]
    figure.suptitle(
        f"Spawn storm: fake API server {settings['latency_ms']:g} ms per request, "
        f"pod Running {settings['running_delay_ms']:g} ms after creation; medians of {settings['repeat']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1,10,100,500,1000", help="comma-separated N (default: %(default)s)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="trials per figure; the median is shown")
    parser.add_argument(
        "--compare",
        default="",
        help="other contenders, comma-separated: kubespawner (if installed), floor",
    )
    parser.add_argument(
        "--cold-repeat", type=int, help="cold first spawns per contender and variant (default: --repeat)"
    )
    parser.add_argument("--quick", action="store_true", help="N = 10, one trial, one variant (CI)")
    parser.add_argument("--variants", default="home,nohome", help="home (a PVC per user), nohome, or both")
    parser.add_argument("--latency-ms", type=float, default=2.0, help="API server latency per request")
    parser.add_argument("--running-delay-ms", type=float, default=50.0, help="pod created -> Running")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=0.0,
        help="after the stops, count the requests of this long an idle period (periodic relists)",
    )
    parser.add_argument("--trial-timeout", type=float, default=600.0, help="seconds per trial")
    parser.add_argument("--json", type=Path, help="also write every figure and trial to this file")
    parser.add_argument("--markdown", type=Path, help="also write the headline figures as a Markdown table")
    parser.add_argument("--png", type=Path, help="the picture (default: beside --json, as .png)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat, args.variants = "10", 1, args.variants.split(",")[0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    spawners = ["einfra"] + [c for c in args.compare.split(",") if c]
    unknown = set(spawners) - set(LABELS)
    if unknown:
        raise SystemExit(f"unknown contenders: {', '.join(sorted(unknown))}")
    report: dict[str, Any] = {
        "settings": {
            "latency_ms": args.latency_ms,
            "running_delay_ms": args.running_delay_ms,
            "repeat": args.repeat,
            "idle_seconds": args.idle_seconds,
        },
        "cold": {},
        "results": [],
    }
    problems = 0
    cold_repeat = args.repeat if args.cold_repeat is None else args.cold_repeat
    for variant in variants:
        if cold_repeat <= 0:
            break
        colds: dict[str, list[dict[str, Any]]] = {s: [] for s in spawners}
        for _ in range(cold_repeat):
            for spawner in spawners:
                colds[spawner].append(run_trial(spawner, variant, 1, args, cold=True))
        cold = {s: cold_summary(colds[s]) for s in spawners}
        print_cold(variant, cold)
        problems += sum(len(c["problems"]) for c in cold.values())
        report["cold"][variant] = cold
    for n in sizes:
        for variant in variants:
            trials: dict[str, list[dict[str, Any]]] = {s: [] for s in spawners}
            for _ in range(args.repeat):
                for spawner in spawners:  # alternated, so that drift of the machine hits each
                    trials[spawner].append(run_trial(spawner, variant, n, args))
            results = {s: summarise(trials[s], args) for s in spawners}
            print_block(n, variant, results)
            problems += sum(len(r["problems"]) for r in results.values())
            report["results"].append({"n": n, "variant": variant, "spawners": results})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown_table(report))
    png = args.png or (args.json.with_suffix(".png") if args.json else None)
    if png is not None:
        picture(report, png)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
