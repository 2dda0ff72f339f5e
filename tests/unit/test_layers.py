"""The layers hold: import-linter's contracts (``[tool.importlinter]`` in pyproject.toml) pass.

The contracts are the reference for the layering; ``lint-imports`` checks them in
scripts/test, and this module runs it too, so that pytest enforces them. Import-linter follows
relative, lazy and TYPE_CHECKING imports and indirect chains. So that the check cannot be
vacuous, the same contracts also run against a copy of the packages with one forbidden import
planted per contract, and each contract must report its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

import einfra_spawner

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGES = (
    ROOT / "einfra_spawner",
    ROOT / "backends" / "einfra_spawner_local",
    ROOT / "backends" / "einfra_spawner_kubernetes",
)

# One forbidden import per contract: (file in the copy, code appended to it, the contract that
# must break, the import lint-imports must name in that contract's report).
PLANTED = (
    (
        "einfra_spawner/spawner.py",
        "import einfra_spawner_local",
        "The core never imports a backend",
        "einfra_spawner.spawner -> einfra_spawner_local",
    ),
    (
        "einfra_spawner/models.py",
        "import traitlets",
        "The pure core imports no I/O framework",
        "einfra_spawner.models -> traitlets",
    ),
    (
        "einfra_spawner/render.py",
        "def _later() -> None:\n    import time",  # a lazy import counts too
        "The pure core is deterministic: no clock, environment, randomness, logger, process or socket",
        "einfra_spawner.render -> time",
    ),
    (
        "einfra_spawner/form.py",
        "import tornado",
        "The form imports no I/O framework",
        "einfra_spawner.form -> tornado",
    ),
    (
        # The example: a relative import, which the former AST walker did not see.
        "einfra_spawner/resolve.py",
        "from .usage import ledger",
        "Layers of the core",
        "einfra_spawner.resolve -> einfra_spawner.usage.ledger",
    ),
    (
        "einfra_spawner/gpu_service.py",
        "from .backend import Backend",
        "The GPU figures service computes no figures of its own",
        "einfra_spawner.gpu_service -> einfra_spawner.backend",
    ),
    (
        "einfra_spawner/testing/_quantities.py",
        "from einfra_spawner import quantities",
        "The test harness is independent of the code it tests",
        "einfra_spawner.testing._quantities -> einfra_spawner.quantities",
    ),
    (
        "einfra_spawner/runtime.py",
        "from .testing import FakeKubernetes",
        "Runtime code never imports the test harness (the demo excepted)",
        "einfra_spawner.runtime -> einfra_spawner.testing",
    ),
    (
        "einfra_spawner/cli.py",
        "from . import demo",
        "Runtime code never imports the demo",
        "einfra_spawner.cli -> einfra_spawner.demo",
    ),
    (
        "einfra_spawner_local/_home.py",
        "import einfra_spawner_kubernetes",
        "The in-tree backends are independent of each other",
        "einfra_spawner_local._home -> einfra_spawner_kubernetes",
    ),
    (
        "einfra_spawner_kubernetes/_pace.py",
        "from einfra_spawner import runtime",
        "Backends do not import the hub's glue",
        "einfra_spawner_kubernetes._pace -> einfra_spawner.runtime",
    ),
    (
        "einfra_spawner_kubernetes/_explain.py",
        "from einfra_spawner_local import _procfs",
        "Private modules are imported only from within their package",
        "einfra_spawner_kubernetes._explain -> einfra_spawner_local._procfs",
    ),
    (
        "einfra_spawner_kubernetes/_api_errors.py",
        "from . import _api",
        "The Kubernetes API layer: operations over requests and retries over errors",
        "einfra_spawner_kubernetes._api_errors -> einfra_spawner_kubernetes._api",
    ),
    (
        "einfra_spawner_kubernetes/_api_errors.py",
        "import aiohttp",
        "The Kubernetes API errors import no I/O framework",
        "einfra_spawner_kubernetes._api_errors -> aiohttp",
    ),
)


def contract_names() -> list[str]:
    section = PYPROJECT.read_text(encoding="utf-8").split("[tool.importlinter]", 1)[1]
    section = re.split(r"^\[(?!\[tool\.importlinter\.contracts\]\])", section, flags=re.M)[0]
    return re.findall(r'^name = "([^"]+)"$', section, flags=re.M)


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` of this environment with this repository's contracts, run in ``cwd``."""
    pytest.importorskip("importlinter", reason="import-linter is a dev dependency: pip install -e '.[dev]'")
    env = {**os.environ, "COLUMNS": "1000", "NO_COLOR": "1"}  # one contract name, one line
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [str(Path(sysconfig.get_path("scripts")) / "lint-imports"), "--no-cache", str(PYPROJECT)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def report_of(output: str, contract: str, names: list[str]) -> str:
    """The part of lint-imports' "Broken contracts" report about one contract."""
    broken = output.split("\nBroken contracts\n", 1)[1]
    starts = sorted(broken.index(f"\n{name}\n") for name in names if f"\n{name}\n" in broken)
    start = broken.index(f"\n{contract}\n")
    end = next((s for s in starts if s > start), len(broken))
    return broken[start:end]


def copy_python_files(source: Path, target: Path) -> None:
    """The modules of a package (not the reference_profiles symlink, templates or caches)."""

    def ignored(folder: str, names: list[str]) -> set[str]:
        def kept(path: Path) -> bool:
            if path.is_dir():
                return path.name != "__pycache__" and not path.is_symlink()
            return path.suffix == ".py"

        return {name for name in names if not kept(Path(folder) / name)}

    shutil.copytree(source, target, ignore=ignored)


def test_the_import_contracts_hold() -> None:
    names = contract_names()
    assert len(names) >= 10, names
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(names)} kept, 0 broken." in result.stdout, result.stdout


def test_every_contract_reports_a_planted_forbidden_import(tmp_path: Path) -> None:
    names = contract_names()
    assert {contract for _, _, contract, _ in PLANTED} == set(names), "each contract needs a planted import"
    for package in PACKAGES:
        copy_python_files(package, tmp_path / package.name)
    for file, code, _, _ in PLANTED:
        with (tmp_path / file).open("a", encoding="utf-8") as module:
            module.write(f"\n{code}\n")

    result = lint_imports(tmp_path, pythonpath=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Contracts: 0 kept, {len(names)} broken." in result.stdout, result.stdout
    for _, _, contract, planted_import in PLANTED:
        line = re.compile(rf"^[- ]+{re.escape(planted_import)} \(l\.\d+", re.M)  # "- a -> b (l.12)"
        assert line.search(report_of(result.stdout, contract, names)), (
            f"{contract!r} does not report {planted_import!r}:\n{result.stdout}"
        )


def test_public_surface() -> None:
    for name in einfra_spawner.__all__:
        assert getattr(einfra_spawner, name) is not None, name
    assert not [n for n in einfra_spawner.__all__ if n.startswith("_")]
