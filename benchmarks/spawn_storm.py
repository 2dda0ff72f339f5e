"""The spawn storm: N spawners started at once in one event loop, as in a hub, then polled and stopped.

Run: ``python benchmarks/spawn_storm.py [--sizes 1,10,100,500,1000] [--repeat 3]
[--compare kubespawner] [--variants home,nohome] [--json storm.json] [--markdown storm.md]``.

Each trial runs in a fresh process (``benchmarks/storm_trial.py``) with the fake API server in a
child process of its own (2 ms per request, a pod Running 50 ms after creation, no schema
validation), so neither the server's CPU nor an earlier trial's garbage is counted. A trial builds
N real ``EInfraSpawner`` objects with the Kubernetes backend (or, with ``--compare kubespawner``,
N ``KubeSpawner`` objects configured for the same pod), calls ``start()`` on all at once, then
``poll()`` and ``stop()``. Variants: ``home`` (a PVC per user) and ``nohome`` (none). With
``--compare``, trials of the two spawners alternate, and each figure is printed for both with
the ratio ours/theirs. Figures are medians over the repeats; times are never asserted anywhere
(``tests/benchmarks`` only checks that the storm runs and its counts add up).

Figures: start latency p50/p99 and the storm's wall time; hub-process CPU per spawn (the start
phase; the server's CPU is shown apart); the longest event-loop stall (a ticker task asking to
wake every 2 ms); poll cost per spawner; stop latency; API requests per spawn by verb and
resource for each phase, and the reads (get, list) among them. ``floor`` is what a start cannot
beat: the kubelet's delay, two request round trips and, for the median spawn, half the storm's
CPU work queued ahead of it.
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

#: (key, label, how to read it from a trial); lower is better for each.
FIGURES: list[tuple[str, str]] = [
    ("start_p50_ms", "start p50 (ms)"),
    ("start_p99_ms", "start p99 (ms)"),
    ("start_wall_ms", "storm wall time (ms)"),
    ("floor_p50_ms", "floor of p50 (ms)"),
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


def run_trial(spawner: str, variant: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
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


def print_block(n: int, variant: str, results: dict[str, dict[str, Any]]) -> None:
    spawners = list(results)
    header = f"N={n} {variant}"
    line = f"{header:<32}" + "".join(f"{s:>14}" for s in spawners)
    if len(spawners) == 2:
        line += f"{'ours/theirs':>14}"
    print(line)
    for key, label in FIGURES:
        values = [results[s]["figures"][key] for s in spawners]
        row = f"  {label:<30}" + "".join(f"{v:>14.2f}" for v in values)
        if len(values) == 2:
            row += f"{values[0] / values[1]:>14.2f}" if values[1] else f"{'-':>14}"
        print(row)
    for spawner in spawners:
        for phase, kinds in results[spawner]["requests"].items():
            if kinds:
                text = ", ".join(f"{kind} {count:g}" for kind, count in kinds.items())
                print(f"  {spawner} {phase} requests per spawn: {text}")
        for problem in results[spawner]["problems"]:
            print(f"  {spawner} PROBLEM: {problem}")
    print()


def markdown_table(report: dict[str, Any]) -> str:
    """The headline figures of a report (``--json``) as a Markdown table: ours / theirs (ratio)
    where both spawners ran, ours alone otherwise."""

    def cell(row: dict[str, Any], key: str, digits: int, ratio: bool = False) -> str:
        values = [spawner["figures"][key] for spawner in row["spawners"].values()]
        text = " / ".join(f"{v:.{digits}f}" for v in values)
        if ratio and len(values) == 2 and values[1]:
            text += f" ({values[0] / values[1]:.2f})"
        return text

    lines = [
        "| N, variant | start p50 ms | start p99 ms | ours: p50 / floor | hub CPU ms per spawn "
        "| longest loop stall ms | longest GC pause ms | poll µs | stop p50 ms | API requests per spawn |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        ours = row["spawners"]["einfra"]["figures"]
        lines.append(
            f"| {row['n']} {row['variant']} | {cell(row, 'start_p50_ms', 0, True)} "
            f"| {cell(row, 'start_p99_ms', 0)} | {ours['start_p50_ms'] / ours['floor_p50_ms']:.2f} "
            f"| {cell(row, 'cpu_ms_per_spawn', 2, True)} | {cell(row, 'stall_ms', 0)} "
            f"| {cell(row, 'gc_longest_ms', 0)} | {cell(row, 'poll_us', 0)} | {cell(row, 'stop_p50_ms', 0)} "
            f"| {cell(row, 'requests_per_spawn', 2)} |"
        )
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1,10,100,500,1000", help="comma-separated N (default: %(default)s)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="trials per figure; the median is shown")
    parser.add_argument("--compare", choices=["kubespawner"], help="also run the storm through KubeSpawner")
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    spawners = ["einfra"] + ([args.compare] if args.compare else [])
    report: dict[str, Any] = {
        "settings": {
            "latency_ms": args.latency_ms,
            "running_delay_ms": args.running_delay_ms,
            "repeat": args.repeat,
            "idle_seconds": args.idle_seconds,
        },
        "results": [],
    }
    problems = 0
    for n in sizes:
        for variant in variants:
            trials: dict[str, list[dict[str, Any]]] = {s: [] for s in spawners}
            for _ in range(args.repeat):
                for spawner in spawners:  # alternated, so that drift of the machine hits both
                    trials[spawner].append(run_trial(spawner, variant, n, args))
            results = {s: summarise(trials[s], args) for s in spawners}
            print_block(n, variant, results)
            problems += sum(len(r["problems"]) for r in results.values())
            report["results"].append({"n": n, "variant": variant, "spawners": results})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown_table(report))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
