"""Smoke run of the scale benchmark (``--quick``: 20 servers, a 3 s steady state): counts only.

Never a time: every server started, the restarted hub found every one running, every poll of the
steady state said running, and our requests are the promised ones: a restart makes a constant
number of lists and watches (no read per server), the steady state makes none. With
``jupyterhub-kubespawner`` installed, KubeSpawner runs too.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"
N = 20


def test_the_scale_benchmark_runs_and_its_counts_add_up(tmp_path: Path) -> None:
    contenders = ["einfra"] + (["kubespawner"] if importlib.util.find_spec("kubespawner") else [])
    out = tmp_path / "scale.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--contenders", ",".join(contenders)]
    command += ["--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "scale.png").stat().st_size > 0
    report: dict[str, Any] = json.loads(out.read_text())
    assert [r["contender"] for r in report["results"]] == contenders
    for result in report["results"]:
        assert result["n"] == N and result["problems"] == [], result["contender"]
        (run,) = result["runs"]
        assert run["populate"]["started"] == N and run["populate"]["pods"] == N
        assert run["restart"]["running"] == N and run["restart"]["errors"] == []
        assert run["steady"]["polls"] >= N and run["steady"]["running"] == run["steady"]["polls"]
    ours = report["results"][0]["runs"][0]
    restart = ours["restart"]["requests"]
    # A constant number of requests, whatever N: a list (one page at this size) and a watch per
    # shared informer, no read of any one server.
    assert {kind.split()[0] for kind in restart} <= {"list", "watch"}
    assert restart["list pods"] == 1 and restart["list events"] == 1
    # (a watch begun at the very end, e.g. the PVC watch the reconciler's pass starts, may not
    # have reached the server when the counters are read: at most one of each, never two)
    assert all(count <= 1 for count in restart.values()), restart
    assert ours["restart"]["reconciler_actions"] == 0  # nothing out of step after a clean restart
    assert ours["steady"]["requests"] == {}  # polls read the shared watches' cache
