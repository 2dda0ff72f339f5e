"""Smoke run of the spawn-storm benchmark (N = 10, one repeat): it runs and its counts add up.

Never a time: figures belong to ``benchmarks/``, on a quiet machine. This only checks that every
start returned, every poll saw a running server, every pod was gone after the stops, and the
requests per spawn are the ones the backend promises (one create per object, no reads on the
start, poll and stop paths: the shared informers listed once as the hub started). With
``jupyterhub-kubespawner`` installed, the KubeSpawner side of the comparison runs too.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "spawn_storm.py"
N = 10


def run_storm(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "storm.json"
    command = [sys.executable, str(SCRIPT), "--sizes", str(N), "--repeat", "1", "--json", str(out), *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def check_counts(trial: dict[str, Any], pvc: bool) -> None:
    assert trial["start"]["returned"] == N, trial["start"]["errors"]
    assert trial["start"]["pods_running"] == N
    assert trial["poll"]["running"] == N
    assert trial["stop"]["errors"] == []
    assert trial["stop"]["pods_left"] == 0
    start, poll, stop = (trial[phase]["requests"] for phase in ("start", "poll", "stop"))
    assert start.get("create pods") == N
    assert start.get("create persistentvolumeclaims", 0) == (N if pvc else 0)
    assert stop.get("delete pods") == N
    assert poll == {}


def test_the_storm_runs_and_its_counts_add_up(tmp_path: Path) -> None:
    compare = importlib.util.find_spec("kubespawner") is not None
    # Within ~20 s: with the comparison, one variant (two trials); without it, both variants.
    extra = ["--variants", "home", "--compare", "kubespawner"] if compare else ["--variants", "home,nohome"]
    report = run_storm(tmp_path, *extra)
    variants = {r["variant"] for r in report["results"]}
    assert variants == ({"home"} if compare else {"home", "nohome"})
    for result in report["results"]:
        for name, spawner in result["spawners"].items():
            assert spawner["problems"] == [], name
            (trial,) = spawner["trials"]
            check_counts(trial, pvc=result["variant"] == "home")
        ours = result["spawners"]["einfra"]["trials"][0]
        # Our start and stop paths read nothing: the shared informers listed and started watching
        # as the hub started (configure() warms the backend up), before the storm.
        homes = N if result["variant"] == "home" else 0
        expected = {"create pods": N} | ({"create persistentvolumeclaims": homes} if homes else {})
        assert ours["start"]["requests"] == expected
        assert set(ours["stop"]["requests"]) == {"delete pods"}
