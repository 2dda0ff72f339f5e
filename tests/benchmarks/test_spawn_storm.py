"""Smoke run of the spawn-storm benchmark (``--quick``: N = 10, one trial): it runs and its counts
add up, for ours, KubeSpawner (when installed) and the floor, warm and cold.

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
    command = [sys.executable, str(SCRIPT), "--quick", "--json", str(out), *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "storm.png").stat().st_size > 0  # the picture beside the figures
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
    contenders = ["kubespawner", "floor"] if compare else ["floor"]
    report = run_storm(tmp_path, "--variants", "home", "--compare", ",".join(contenders))
    assert [(r["n"], r["variant"]) for r in report["results"]] == [(N, "home")]
    for result in report["results"]:
        assert list(result["spawners"]) == ["einfra", *contenders]
        for name, spawner in result["spawners"].items():
            assert spawner["problems"] == [], name
            (trial,) = spawner["trials"]
            check_counts(trial, pvc=True)
        # Our stop path reads nothing, and our start path writes one claim and one pod per
        # spawn; the shared informers listed and started watching as the hub started.
        ours = result["spawners"]["einfra"]["trials"][0]
        writes = {k: v for k, v in ours["start"]["requests"].items() if k.split()[0] == "create"}
        assert writes == {"create pods": N, "create persistentvolumeclaims": N}
        assert ours["start"]["requests"].get("list pods", 0) == 0
        assert ours["start"]["requests"].get("list events", 0) == 0
        assert ours["start"]["requests"].get("list persistentvolumeclaims", 0) == 0  # warmed too
        assert set(ours["stop"]["requests"]) == {"delete pods"}
        # The floor is one create per object and one delete per pod, nothing else.
        floor = result["spawners"]["floor"]["trials"][0]
        assert floor["start"]["requests"] == {"create pods": N, "create persistentvolumeclaims": N}
        assert floor["stop"]["requests"] == {"delete pods": N}
    # The cold first spawn after hub start: one pod each, and the watches started inside it.
    cold = report["cold"]["home"]
    assert list(cold) == ["einfra", *contenders]
    for name, summary in cold.items():
        assert summary["problems"] == [], name
        (trial,) = summary["trials"]
        assert trial["cold"]["requests"]["create pods"] == 1, name
        assert trial["cold"]["requests"].get("watch pods", 0) == 1, name
