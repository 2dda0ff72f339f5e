"""Which of our spawn-storm measures earn their keep: the fair storm with each one switched.

Run: ``python benchmarks/ablation.py [--sizes 500,1000] [--repeat 3] [--json ablation.json]
[--markdown ablation.md] [--quick]``; ``--recompute a.json b.json`` prints the table of earlier
runs, their trials together.

The storm of ``spawn_storm.py`` (same trial process, same fake API server, same warm-up), ours
only, in one configuration per measure of ``storm_trial.MEASURES``: the baseline (the product's
defaults) and each measure switched off alone. Trials alternate between configurations
(baseline, each toggle, baseline, ...) so that drift of the machine hits each alike; figures are
medians. For each figure (hub CPU per start, start p50 and p99, the longest event-loop stall)
the table shows the toggled run's change against the baseline, and the baseline's own spread
(half the range of its trials). A measure **earns its keep** where switching it off makes one of
those figures worse by 5% or more, and by more than the baseline's spread, at some N. The
verdict is the table's; the decision to delete a measure is taken on it by hand, with the
figures in ``docs/benchmarks.md``. ``--quick`` (N = 10, one trial) only checks that every
configuration runs and its counts add up, as CI does: never a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spawn_storm import consistent, figures
from spawn_storm import run_trial as storm_run_trial
from storm_trial import MEASURES

#: The figures judged, with their labels; lower is better for each.
JUDGED: list[tuple[str, str]] = [
    ("cpu_ms_per_spawn", "hub CPU ms per start"),
    ("start_p50_ms", "start p50 ms"),
    ("start_p99_ms", "start p99 ms"),
    ("stall_ms", "longest stall ms"),
]
#: A change of this fraction or more is an effect (the issue's rule).
THRESHOLD = 0.05
BASELINE = "baseline"


def configurations() -> list[str]:
    return [BASELINE, *MEASURES]


def run_configuration(config: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    extra: tuple[str, ...] = () if config == BASELINE else ("--toggle", config)
    if args.priced:
        extra += ("--priced",)
    if args.usage_db_url:
        extra += ("--usage-db-url", args.usage_db_url)
    return storm_run_trial("einfra", args.variant, n, args, extra=extra)


def change(value: float, baseline: float) -> float:
    """``value`` against ``baseline`` as a signed fraction (+0.10: 10% higher)."""
    return value / baseline - 1.0 if baseline else 0.0


def spread(values: list[float]) -> float:
    """Half the range of ``values`` against their median: how far one trial strays."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / 2 / middle if middle else 0.0


def verdict(
    config: str, changes: dict[int, dict[str, float]], noise: dict[int, dict[str, float]], turned_on: bool
) -> str:
    """Whether the measure ``config`` earns its keep, from its changes against the baseline at
    each N: switched off, a figure 5% worse or more keeps it; switched on (``turned_on``: a run
    whose baseline had it off), a figure 5% better or more. A change within the baseline's own
    spread at that N (half the range of its trials) is noise, whatever its size."""
    worse_when_off = not turned_on
    reasons = []
    for n, by_key in changes.items():
        for key, label in JUDGED:
            effect = by_key[key] if worse_when_off else -by_key[key]
            if effect >= max(THRESHOLD, noise[n][key]):
                reasons.append(f"{label} {by_key[key]:+.0%} at N={n}")
    if not reasons:
        return "no effect of 5% or more beyond the baseline's spread: delete"
    return "keep: " + "; ".join(reasons)


def recompute(paths: list[Path]) -> dict[str, Any]:
    """The reports of earlier runs (``--json``, same settings) as one: their trials together,
    medians and verdicts computed again."""
    reports = [json.loads(path.read_text()) for path in paths]
    keys = ("latency_ms", "running_delay_ms", "variant", "priced", "ledger")
    settings = {key: reports[0]["settings"].get(key) for key in keys}
    for other in reports[1:]:
        if any(other["settings"].get(key) != value for key, value in settings.items()):
            raise SystemExit("the reports were run with different settings")
    report: dict[str, Any] = {
        "settings": {**reports[0]["settings"], "runs": len(reports)},
        "trials": [trial for each in reports for trial in each["trials"]],
    }
    summarise(report)
    return report


def summarise(report: dict[str, Any]) -> None:
    """Medians per configuration and N, the changes against the baseline, and the verdicts."""
    collected: dict[str, dict[int, dict[str, list[float]]]] = {}
    settings = report["settings"]
    for row in report["trials"]:
        flat = figures(row["trial"], settings["latency_ms"], settings["running_delay_ms"])
        by_key = collected.setdefault(row["config"], {}).setdefault(row["n"], {})
        for key, _ in JUDGED:
            by_key.setdefault(key, []).append(flat[key])
    medians = {
        config: {n: {k: statistics.median(got) for k, got in by_key.items()} for n, by_key in by_n.items()}
        for config, by_n in collected.items()
    }
    baseline = medians[BASELINE]
    noise = {n: {k: spread(got) for k, got in by_key.items()} for n, by_key in collected[BASELINE].items()}
    changes = {
        config: {n: {key: change(by_n[n][key], baseline[n][key]) for key, _ in JUDGED} for n in baseline}
        for config, by_n in medians.items()
        if config != BASELINE
    }
    report["medians"] = medians
    report["noise"] = noise
    report["changes"] = changes
    turned_on = set(report["settings"].get("turned_on", []))
    report["verdicts"] = {
        config: verdict(config, by_n, noise, config in turned_on) for config, by_n in changes.items()
    }


def markdown_table(report: dict[str, Any]) -> str:
    """One row per configuration and N: each judged figure and its change against the baseline."""
    lines = [
        "| configuration | N | " + " | ".join(label for _, label in JUDGED) + " |",
        "|---|---|" + "---|" * len(JUDGED),
    ]
    for config, by_n in report["medians"].items():
        for n, values in sorted(by_n.items()):
            cells = []
            for key, _ in JUDGED:
                text = f"{values[key]:.2f}" if key == "cpu_ms_per_spawn" else f"{values[key]:.0f}"
                if config == BASELINE:
                    text += f" (±{report['noise'][n][key]:.0%})"
                else:
                    text += f" ({report['changes'][config][n][key]:+.0%})"
                cells.append(text)
            switched = "on" if config in report["settings"].get("turned_on", []) else "off"
            name = "baseline (defaults)" if config == BASELINE else f"{config} {switched}"
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "| measure | what it is | verdict |", "|---|---|---|"]
    described = {**MEASURES, **report["settings"].get("measures", {})}
    for config, text in report["verdicts"].items():
        lines.append(f"| {config} | {described.get(config, '')} | {text} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000", help="comma-separated N (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="trials per configuration and N")
    parser.add_argument("--variant", default="home", choices=["home", "nohome"])
    parser.add_argument("--latency-ms", type=float, default=2.0, help="API server latency per request")
    parser.add_argument("--running-delay-ms", type=float, default=50.0, help="pod created -> Running")
    parser.add_argument("--trial-timeout", type=float, default=600.0, help="seconds per trial")
    parser.add_argument(
        "--priced", action="store_true", help="an instance with prices: every start is recorded in the ledger"
    )
    parser.add_argument("--usage-db-url", help="the ledger on this PostgreSQL server (default: SQLite)")
    parser.add_argument("--only", default="", help="comma-separated configurations (default: all)")
    parser.add_argument("--quick", action="store_true", help="N = 10, one trial (CI: counts only)")
    parser.add_argument("--json", type=Path, help="also write every trial and figure to this file")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    parser.add_argument(
        "--recompute",
        type=Path,
        nargs="+",
        help="instead of running: the table of earlier runs' --json files, their trials together",
    )
    args = parser.parse_args(argv)
    args.idle_seconds = 0.0
    if args.quick:
        args.sizes, args.repeat = "10", 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.recompute:
        together = recompute(args.recompute)
        print(markdown_table(together))
        if args.json:
            args.json.write_text(json.dumps(together, indent=1) + "\n")
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    configs = configurations()
    if args.only:
        wanted = [c for c in args.only.split(",") if c]
        unknown = set(wanted) - set(configs)
        if unknown:
            raise SystemExit(f"unknown configurations: {', '.join(sorted(unknown))}")
        configs = [BASELINE] + [c for c in wanted if c != BASELINE]
    report: dict[str, Any] = {
        "settings": {
            "latency_ms": args.latency_ms,
            "running_delay_ms": args.running_delay_ms,
            "repeat": args.repeat,
            "variant": args.variant,
            "priced": args.priced,
            "ledger": "postgresql" if args.usage_db_url else "sqlite",
            "threshold": THRESHOLD,
            # Measures whose toggle turned them on: none since every measure is on by default.
            "turned_on": [],
            "measures": {config: MEASURES[config] for config in configs if config != BASELINE},
        },
        "trials": [],
    }
    problems = 0
    for n in sizes:
        for attempt in range(args.repeat):
            for config in configs:  # alternated
                trial = run_configuration(config, n, args)
                found = consistent(trial)
                problems += len(found)
                report["trials"].append({"config": config, "n": n, "attempt": attempt, "trial": trial})
                cpu = trial["start"]["cpu_ms_per_spawn"]
                start = trial["start"]
                print(
                    f"N={n} #{attempt + 1} {config:<18} CPU/start {cpu:6.2f} ms p50 {start['p50_ms']:7.0f} ms"
                    f"  p99 {start['p99_ms']:7.0f} ms  stall {trial['stall_ms']:5.0f} ms"
                    + "".join(f"  PROBLEM: {p}" for p in found),
                    flush=True,
                )
    summarise(report)
    table = markdown_table(report)
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
