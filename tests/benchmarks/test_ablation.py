"""Smoke run of the ablation of our storm measures (``benchmarks/ablation.py --quick``: N = 10,
one trial per configuration): every configuration runs with its measure switched, its counts add
up, and the table judges every measure.

Never a time: which measure earns its keep is decided on the figures of a full run on a quiet
machine (``docs/benchmarks.md``), not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
N = 10


def test_every_measure_is_switched_and_judged(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from storm_trial import MEASURES
    finally:
        sys.path.remove(str(BENCHMARKS))
    out, table = tmp_path / "ablation.json", tmp_path / "ablation.md"
    command = [
        sys.executable,
        str(BENCHMARKS / "ablation.py"),
        "--quick",
        "--json",
        str(out),
        "--markdown",
        str(table),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    configs = [row["config"] for row in report["trials"]]
    assert configs == ["baseline", *MEASURES]
    for row in report["trials"]:
        trial = row["trial"]
        # Each trial ran with its own measure switched, and only that one.
        assert trial["toggled"] == ([] if row["config"] == "baseline" else [row["config"]])
        assert trial["start"]["returned"] == N, trial["start"]["errors"]
        assert trial["start"]["pods_running"] == N
        assert trial["poll"]["running"] == N
        assert trial["stop"]["pods_left"] == 0
    assert set(report["verdicts"]) == set(MEASURES)
    text = table.read_text()
    for measure in MEASURES:
        assert f"| {measure} |" in text
