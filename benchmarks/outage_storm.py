"""The outage storm: N starts arriving over a few seconds, an API outage in the middle, then
stop-all and one reconcile pass; how each start ended, and whether anything was left behind.

Run: ``python benchmarks/outage_storm.py [--n 200 | --smoke] [--outage 20] [--outage-at S]
[--spread 10] [--variant home|nohome] [--start-timeout 120] [--drop-watches] [--grace S]
[--json outage.json] [--log hub.log]``.

Like a spawn-storm trial (``benchmarks/storm_trial.py``), this process plays a hub: it builds N
real ``EInfraSpawner`` objects with the Kubernetes backend (JupyterHub's user, hub and
``orm_spawner`` stand-ins, ``configure()`` as in a ``jupyterhub_config.py``, a fresh SQLite
usage ledger) against the fake API server in a child process of its own (2 ms per request, a
pod Running 50 ms after it is bound, no schema validation). Start ``i`` is issued at
``i * spread / N`` seconds, as JupyterHub's ``User.spawn`` does it (``run_pre_spawn_hook()`` then
``start()``; on failure what ``User.stop`` does: ``stop()`` if ``poll()`` says it runs, then
``clear_state()``). When half of the starts have been issued (or ``--outage-at`` seconds into
the storm), every API request is answered 503 for ``--outage`` seconds
(``POST /_harness/faults {"error_rate": 1.0}``, then ``0.0``); watches already open stay open
unless ``--drop-watches`` ends them as the outage begins, as a real API server restart does.
``start_timeout`` is 120 s (``--start-timeout``), so a start may outlast the outage. A
reconciler is registered with the hub runtime, as in a hub with ``reconcile_interval > 0`` (a
stop that cannot reach the API then leaves the removal to it), but it runs only once: after
every server that ran was stopped the way JupyterHub's ``User.stop`` stops it.

Printed: each start's outcome (running, or failed with its message, user names folded to
``user-NNNN``) and count; start latency p50/p99 of the starts that ran and the storm's wall
time; pods with our labels that no spawner holds ("orphans") and open intervals in the usage
ledger, after stop-all and after the reconcile pass (each expected 0); what the reconcile pass
did; the API server's request counts by phase and the faults it injected. Times are never
asserted; the exit status is 1 when an orphan or an open interval remains (after stop-all or
after the pass).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from jupyterhub.utils import maybe_future
from storm_trial import NODES_YAML, PROFILES, hub_log, quantile, requests_by_kind, stand_ins
from traitlets.config import Config

from einfra_spawner.hub import configure
from einfra_spawner.reconcile import (
    CloseInterval,
    HubServer,
    HubView,
    MarkRunning,
    Reconciler,
    RemoveOrphan,
)
from einfra_spawner.runtime import current_runtime
from einfra_spawner.spawner import EInfraSpawner
from einfra_spawner.testing import FakeKubernetesProcess
from einfra_spawner.usage import AsyncLedger, Ledger

#: Seconds a start may take (``Spawner.start_timeout``): long enough to outlast the outage.
START_TIMEOUT = 120.0
DEFAULT_N = 200
SMOKE_N = 20
MANAGED_BY = "app.kubernetes.io/managed-by=einfra-spawner"
_USER_NAME = re.compile(r"user-\d{4}")
_POD_SUFFIX = re.compile(r"jupyter-user-nnnn[-a-z0-9]*")


@dataclass(slots=True)
class Start:
    """How one start went: seconds from the storm's beginning, and its outcome."""

    index: int
    issued: float = 0.0
    ended: float = 0.0
    outcome: str = "pending"  # running | failed
    message: str = ""
    cleanup_error: str = ""

    @property
    def latency(self) -> float:
        return self.ended - self.issued


@dataclass(slots=True)
class Phases:
    """Snapshots of the API server's request counters at the phase boundaries."""

    marks: dict[str, dict[str, int]] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    at: dict[str, float] = field(default_factory=dict)


def message_of(error: BaseException) -> str:
    """What JupyterHub would show the user for ``error``, with user names (and the pod names
    built from them) folded so that equal messages are counted together."""
    text = str(getattr(error, "jupyterhub_message", None) or error) or type(error).__name__
    text = _USER_NAME.sub("user-NNNN", text)
    return _POD_SUFFIX.sub("jupyter-user-NNNN", text)


def spawners_for(
    n: int, variant: str, url: str, log: logging.Logger, workdir: Path, start_timeout: float
) -> tuple[list[Any], str, str]:
    """N spawners configured as a hub with ``configure()`` would have them; the instance's
    name and the usage ledger's URL."""
    c = Config()
    profiles = configure(c, PROFILES, backend="kubernetes")
    usage_db_url = f"sqlite:///{workdir / 'usage.sqlite'}"  # a fresh ledger, as a new hub has
    c.EInfraSpawner.usage_db_url = usage_db_url
    c.EInfraSpawner.start_timeout = start_timeout
    c.KubernetesBackend.api_url = url
    c.KubernetesBackend.namespace = "default"
    c.KubernetesBackend.delete_grace_seconds = 1
    spawners = [
        EInfraSpawner(config=c, log=log, user_options={"profile": variant}, **stand_ins(i)) for i in range(n)
    ]
    return spawners, profiles.instance.name, usage_db_url


async def start_as_jupyterhub(spawner: Any, record: Start, t0: float) -> None:
    """``User.spawn``: the hook, then start; a failed start is stopped as ``User.stop`` does."""
    record.issued = time.perf_counter() - t0
    try:
        await maybe_future(spawner.run_pre_spawn_hook())
        await spawner.start()
    except Exception as error:
        record.outcome, record.message = "failed", message_of(error)
        try:
            if await spawner.poll() is None:
                await spawner.stop()
        except Exception as stop_error:
            record.cleanup_error = message_of(stop_error)
        spawner.clear_state()
    else:
        record.outcome = "running"
    record.ended = time.perf_counter() - t0


async def stop_as_jupyterhub(spawner: Any) -> str:
    """``User.stop``: stop if poll says it runs, then clear the state; how it went."""
    try:
        if await spawner.poll() is None:
            await spawner.stop()
            outcome = "stopped"
        else:
            outcome = "already gone (poll)"
    except Exception as error:
        outcome = f"stop failed: {message_of(error)}"
    spawner.clear_state()
    return outcome


def holds_server(spawner: Any) -> bool:
    """Whether JupyterHub would have this spawner's server as running (it has backend state)."""
    return bool(spawner.get_state().get("server"))


def hub_view_of(spawners: Sequence[Any]) -> HubView:
    """What JupyterHub knows, as the reconciler asks it: the servers the spawners hold."""

    async def view() -> Sequence[HubServer] | None:
        return [
            HubServer(user=s.user.name, server=s.name, running=True, pending=False)
            for s in spawners
            if holds_server(s)
        ]

    return view


async def harness_pods(session: aiohttp.ClientSession, url: str, instance: str) -> list[dict[str, Any]]:
    """The pods with our labels, read from the API server itself (not the backend's cache)."""
    selector = f"{MANAGED_BY},app.kubernetes.io/instance={instance}"
    async with session.get(
        f"{url}/api/v1/namespaces/default/pods", params={"labelSelector": selector}
    ) as response:
        response.raise_for_status()
        body: dict[str, Any] = await response.json()
    return list(body.get("items") or [])


async def leftovers(
    session: aiohttp.ClientSession,
    url: str,
    instance: str,
    spawners: Sequence[Any],
    ledger: AsyncLedger,
) -> dict[str, Any]:
    """Orphans (pods with our labels no spawner holds) and the ledger's open intervals."""
    held = {str(s.get_state()["server"].get("pod")) for s in spawners if holds_server(s)}
    pods = await harness_pods(session, url, instance)
    orphans = [p for p in pods if p["metadata"]["name"] not in held]
    intervals = await ledger.call(Ledger.open_intervals, instance)
    return {
        "pods": len(pods),
        "orphans": len(orphans),
        "orphans_terminating": sum(1 for p in orphans if p["metadata"].get("deletionTimestamp")),
        "orphan_phases": dict(
            collections.Counter(str((p.get("status") or {}).get("phase")) for p in orphans)
        ),
        "orphan_names": sorted(p["metadata"]["name"] for p in orphans)[:10],
        "open_intervals": len(intervals),
        "open_reservations": sum(1 for i in intervals if i.last_seen is None),
        "open_intervals_users": sorted(i.user for i in intervals)[:10],
    }


def describe_action(action: Any) -> str:
    if isinstance(action, RemoveOrphan):
        return "remove orphan" + (" (had run)" if any(i.last_seen for i in action.intervals) else "")
    if isinstance(action, CloseInterval):
        return "close interval" if action.interval.last_seen is not None else "drop reservation"
    if isinstance(action, MarkRunning):
        return "mark running"
    return type(action).__name__


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    kinds = sorted(set(after) | set(before))
    return {k: after.get(k, 0) - before.get(k, 0) for k in kinds if after.get(k, 0) != before.get(k, 0)}


@dataclass(slots=True)
class Measured:
    """What one outage storm measured; :func:`summarise` turns it into the report."""

    records: list[Start]
    phases: Phases
    grace: float = 0.0
    wall: float = 0.0
    stops: list[str] = field(default_factory=list)
    stop_wall: float = 0.0
    actions: list[Any] = field(default_factory=list)
    reconcile_wall: float = 0.0
    watches_dropped: int = 0
    faults_total: int = 0
    left: dict[str, dict[str, Any]] = field(default_factory=dict)
    log_lines: collections.Counter[str] = field(default_factory=collections.Counter)


async def run(args: argparse.Namespace) -> Measured:
    """Start the API server, play the hub through the storm, the outage, stop-all and one
    reconcile pass, and close everything."""
    log = hub_log()
    measured = Measured(records=[Start(index=i) for i in range(args.n)], phases=Phases())
    handlers: list[logging.Handler] = [_CountingHandler(measured.log_lines)]
    if args.log is not None:
        to_file = logging.FileHandler(args.log, mode="w")
        to_file.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s %(name)s] %(message)s"))
        handlers.append(to_file)
    for handler in handlers:
        log.addHandler(handler)
    try:
        with tempfile.TemporaryDirectory(prefix="outage-") as tmp:
            nodes = Path(tmp) / "nodes.yaml"
            nodes.write_text(NODES_YAML)
            async with (
                FakeKubernetesProcess(
                    nodes_file=nodes,
                    validate=False,
                    latency_ms=args.latency_ms,
                    extra_args=["--running-delay-ms", str(args.running_delay_ms)],
                ) as server,
                aiohttp.ClientSession() as session,
            ):
                await play_hub(args, measured, server, session, log, Path(tmp))
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
    return measured


async def play_hub(
    args: argparse.Namespace,
    measured: Measured,
    server: FakeKubernetesProcess,
    session: aiohttp.ClientSession,
    log: logging.Logger,
    workdir: Path,
) -> None:
    records, phases = measured.records, measured.phases
    spawners, instance, usage_db_url = spawners_for(
        args.n, args.variant, server.url, log, workdir, args.start_timeout
    )
    runtime = current_runtime()
    # configure() has asked the runtime to begin (ledger, backend warm-up) at the next turn of
    # the loop; the backend is built now, with the hub's log, and shared with the reconciler.
    spawners[0].backend_object()
    measured.grace = args.grace if args.grace is not None else float(spawners[0].reconcile_grace)
    reconciler = Reconciler(
        instance=instance,
        backend=runtime.backends["kubernetes"],
        ledger=_ledger_getter(usage_db_url),
        hub_view=hub_view_of(spawners),
        grace=measured.grace,
        process_started=runtime.started,
        log=log,
    )
    # As HubRuntime.begin registers it in a hub with reconcile_interval > 0 (a stop that cannot
    # reach the API then leaves the removal to the reconciler); it runs once, below.
    runtime.reconcilers.append(reconciler)
    ledger = runtime.ledger(usage_db_url)
    try:
        await asyncio.sleep(1.0)  # the hub has started: ledger open, watches synced
        await server.reset_stats()
        t0 = time.perf_counter()

        async def mark(name: str) -> None:
            stats = await server.stats()
            phases.marks[name] = requests_by_kind(stats)
            phases.injected[name] = int(stats["faultsInjected"])
            phases.at[name] = time.perf_counter() - t0

        await mark("storm began")
        outage_began = asyncio.Event()

        async def outage(at: float | None) -> None:
            if at is not None:
                await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
            await server.set_faults(error_rate=1.0)
            await mark("outage began")
            if args.drop_watches:  # as when the API server goes away: open watches end
                measured.watches_dropped = await server.drop_watches()
            outage_began.set()
            await asyncio.sleep(args.outage)
            await server.set_faults(error_rate=0.0)
            await mark("outage ended")

        outage_task = None if args.outage_at is None else asyncio.create_task(outage(args.outage_at))
        gap = args.spread / args.n
        tasks = []
        for i, (spawner, record) in enumerate(zip(spawners, records, strict=True)):
            delay = t0 + i * gap - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if outage_task is None and i == args.n // 2:
                # Half issued: start n/2 is sent once every request is answered 503.
                outage_task = asyncio.create_task(outage(None))
                await outage_began.wait()
            tasks.append(asyncio.create_task(start_as_jupyterhub(spawner, record, t0)))
        assert outage_task is not None
        await asyncio.gather(*tasks)
        measured.wall = time.perf_counter() - t0
        await outage_task  # the outage is over before anything is stopped
        await mark("storm ended")
        # The oracle's self-check: every server that ran is seen, and held.
        measured.left["after_storm"] = await leftovers(session, server.url, instance, spawners, ledger)
        await mark("stop-all began")  # the benchmark's own reads are left out of the phases

        running = [s for s, r in zip(spawners, records, strict=True) if r.outcome == "running"]
        began = time.perf_counter()
        measured.stops = list(await asyncio.gather(*(stop_as_jupyterhub(s) for s in running)))
        measured.stop_wall = time.perf_counter() - began
        await mark("stop-all ended")
        measured.left["after_stop_all"] = await leftovers(session, server.url, instance, spawners, ledger)
        await mark("reconcile began")

        began = time.perf_counter()
        measured.actions = await reconciler.run_once()
        measured.reconcile_wall = time.perf_counter() - began
        await mark("reconcile ended")
        measured.left["after_reconcile"] = await leftovers(session, server.url, instance, spawners, ledger)
        measured.faults_total = int((await server.stats())["faultsInjected"])
    finally:
        await runtime.close()  # the backend's watches and connections, the ledger


def summarise(measured: Measured, args: argparse.Namespace) -> dict[str, Any]:
    """The report (printed, and written by ``--json``)."""
    records, phases = measured.records, measured.phases
    began, ended = phases.at["outage began"], phases.at["outage ended"]
    overlapped = [r for r in records if r.issued < ended and r.ended > began]
    ran = [r.latency for r in records if r.outcome == "running"]
    failed = [r.latency for r in records if r.outcome == "failed"]
    hit = [r.latency for r in overlapped if r.outcome == "running"]
    clear = [r.latency for r in records if r.outcome == "running" and r not in overlapped]
    by_outcome = collections.Counter(
        "running" if r.outcome == "running" else f"failed: {r.message}" for r in records
    )
    marks = phases.marks
    requests = {
        "storm, before the outage": diff(marks["outage began"], marks["storm began"]),
        "outage": diff(marks["outage ended"], marks["outage began"]),
        "storm, after the outage": diff(marks["storm ended"], marks["outage ended"]),
        "stop-all": diff(marks["stop-all ended"], marks["stop-all began"]),
        "reconcile pass": diff(marks["reconcile ended"], marks["reconcile began"]),
    }
    return {
        "settings": {
            "n": args.n,
            "spread_s": args.spread,
            "outage_s": args.outage,
            "outage_at_s": args.outage_at,
            "variant": args.variant,
            "drop_watches": args.drop_watches,
            "start_timeout_s": args.start_timeout,
            "reconcile_grace_s": measured.grace,
            "latency_ms": args.latency_ms,
            "running_delay_ms": args.running_delay_ms,
        },
        "outage": {
            "began_s": began,
            "ended_s": ended,
            "starts_issued_before": sum(1 for r in records if r.issued < began),
            "faults_injected": phases.injected["outage ended"] - phases.injected["outage began"],
            "faults_injected_total": measured.faults_total,
            "watches_dropped": measured.watches_dropped,
        },
        "starts": {
            "outcomes": dict(by_outcome.most_common()),
            "cleanup_errors": dict(collections.Counter(r.cleanup_error for r in records if r.cleanup_error)),
            "wall_s": measured.wall,
            "p50_ms": _ms(ran, 0.5),
            "p99_ms": _ms(ran, 0.99),
            "p50_ms_clear": _ms(clear, 0.5),
            "p99_ms_clear": _ms(clear, 0.99),
            "p50_ms_in_outage": _ms(hit, 0.5),
            "p99_ms_in_outage": _ms(hit, 0.99),
            "failed_p50_ms": _ms(failed, 0.5),
            "failed_p99_ms": _ms(failed, 0.99),
            "in_flight_during_outage": len(overlapped),
            "in_flight_during_outage_ran": sum(1 for r in overlapped if r.outcome == "running"),
        },
        "stop_all": {"outcomes": dict(collections.Counter(measured.stops)), "wall_s": measured.stop_wall},
        **measured.left,
        "reconcile": {
            "actions": dict(collections.Counter(describe_action(a) for a in measured.actions)),
            "wall_s": measured.reconcile_wall,
        },
        "requests": requests,
        "requests_total": {name: sum(kinds.values()) for name, kinds in requests.items()},
        "phase_marks_s": dict(phases.at),
        "hub_log": dict(measured.log_lines.most_common(20)),
        "starts_detail": [asdict(r) for r in records],
    }


def _ms(values: list[float], q: float) -> float | None:
    return quantile(values, q) * 1e3 if values else None


def _ledger_getter(url: str) -> Callable[[], Awaitable[AsyncLedger]]:
    async def ledger() -> AsyncLedger:
        return current_runtime().ledger(url)

    return ledger


class _CountingHandler(logging.Handler):
    """Counts the hub log's WARNING and ERROR lines by their format string."""

    def __init__(self, counts: collections.Counter[str]) -> None:
        super().__init__(logging.WARNING)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.msg}"] += 1


def print_report(report: dict[str, Any]) -> None:
    settings, outage, starts = report["settings"], report["outage"], report["starts"]
    print(
        f"Outage storm: N={settings['n']} starts ({settings['variant']}) issued over "
        f"{settings['spread_s']:g} s; API outage (every request 503) of {settings['outage_s']:g} s; "
        f"start_timeout {settings['start_timeout_s']:g} s; "
        f"reconcile grace {settings['reconcile_grace_s']:g} s"
    )
    print(
        f"  outage from {outage['began_s']:.2f} s to {outage['ended_s']:.2f} s into the storm, after "
        f"{outage['starts_issued_before']} starts were issued; faults injected: "
        f"{outage['faults_injected']} in the outage ({outage['faults_injected_total']} in all)"
        + (f"; open watches ended: {outage['watches_dropped']}" if settings["drop_watches"] else "")
    )
    print()
    print(f"  {'start outcome':<100}{'count':>7}")
    for outcome, count in starts["outcomes"].items():
        print(f"  {outcome:<100}{count:>7}")
    for message, count in starts["cleanup_errors"].items():
        print(f"  cleanup after a failed start failed: {message}  x{count}")
    p50, p99 = starts["p50_ms"], starts["p99_ms"]
    print()
    print(f"  storm wall time (s)                     {starts['wall_s']:>10.2f}")
    for label, low, high in (
        ("start latency p50 / p99 (ms, all ran)", p50, p99),
        ("  untouched by the outage", starts["p50_ms_clear"], starts["p99_ms_clear"]),
        ("  in flight during the outage", starts["p50_ms_in_outage"], starts["p99_ms_in_outage"]),
        ("time to the error p50 / p99 (ms, failed)", starts["failed_p50_ms"], starts["failed_p99_ms"]),
    ):
        if low is not None:
            print(f"  {label:<40}{low:>10.0f} / {high:.0f}")
    print(
        f"  starts in flight during the outage      {starts['in_flight_during_outage']:>10}"
        f"   (ran: {starts['in_flight_during_outage_ran']})"
    )
    stop = report["stop_all"]
    print(f"  stop-all wall time (s)                  {stop['wall_s']:>10.2f}   {stop['outcomes']}")
    print()
    before, after = report["after_stop_all"], report["after_reconcile"]
    storm = report["after_storm"]
    print(
        f"  before stop-all: {storm['pods']} pods with our labels, {storm['orphans']} of them orphans; "
        f"{storm['open_intervals']} open intervals"
    )
    print(f"  {'left behind':<40}{'after stop-all':>16}{'after reconcile':>17}")
    for key, label in (
        ("orphans", "orphans (our pods no spawner holds)"),
        ("orphans_terminating", "  of which terminating"),
        ("open_intervals", "open intervals in the usage ledger"),
        ("open_reservations", "  of which reservations (never ran)"),
    ):
        print(f"  {label:<40}{before[key]:>16}{after[key]:>17}")
    actions = report["reconcile"]["actions"]
    text = ", ".join(f"{k} {v}" for k, v in actions.items()) or "nothing to do"
    print(f"  reconcile pass ({report['reconcile']['wall_s']:.2f} s): {text}")
    print()
    for phase, kinds in report["requests"].items():
        text = ", ".join(f"{k} {v}" for k, v in kinds.items()) or "none"
        print(f"  API requests, {phase} ({report['requests_total'][phase]}): {text}")
    if report["hub_log"]:
        print()
        print("  hub log, WARNING and ERROR lines by format:")
        for line, count in report["hub_log"].items():
            print(f"    {count:>6}  {line}")
    for problem in problems(report):
        print(f"  PROBLEM: {problem}")


def problems(report: dict[str, Any]) -> list[str]:
    found = []
    for when in ("after_stop_all", "after_reconcile"):
        left = report[when]
        if left["orphans"]:
            found.append(f"{left['orphans']} orphaned pods {when}: {left['orphan_names']}")
        if left["open_intervals"]:
            found.append(f"{left['open_intervals']} open intervals {when}: {left['open_intervals_users']}")
    return found


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help=f"starts (default: {DEFAULT_N}; with --smoke, {SMOKE_N})")
    parser.add_argument("--smoke", action="store_true", help=f"a quick run of {SMOKE_N} starts")
    parser.add_argument("--outage", type=float, default=20.0, help="seconds of API outage (default: 20)")
    parser.add_argument(
        "--outage-at", type=float, help="seconds into the storm the outage begins (default: half issued)"
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=START_TIMEOUT,
        help="Spawner.start_timeout, seconds (default: %(default)g, to outlast the outage)",
    )
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which the starts are issued")
    parser.add_argument("--variant", choices=["home", "nohome"], default="home")
    parser.add_argument(
        "--drop-watches",
        action="store_true",
        help="also end the open watches as the outage begins (a real API server restart does)",
    )
    parser.add_argument("--grace", type=float, help="the reconciler's grace (default: the spawner's)")
    parser.add_argument("--latency-ms", type=float, default=2.0, help="API server latency per request")
    parser.add_argument("--running-delay-ms", type=float, default=50.0, help="pod bound -> Running")
    parser.add_argument("--json", type=Path, help="also write the figures and every start to this file")
    parser.add_argument("--log", type=Path, help="write the hub log here (default: /dev/null)")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = SMOKE_N if args.smoke else DEFAULT_N
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    report = summarise(asyncio.run(run(args)), args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if problems(report) else 0


if __name__ == "__main__":
    raise SystemExit(main())
