"""The wheel is what an operator installs: build it, install it alone, and use what it ships.

Built as PyPI users get it (``python -m build``: the sdist first, then the wheel from the sdist),
installed with ``pip`` into a new virtual environment that has nothing from this checkout, then
checked from the outside: the version is single-sourced, the reference instances and
``schema.json`` are inside the package, ``einfra-spawner validate`` accepts them, the shipped
schema is current, and both in-tree backends and the pytest plugin are registered.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import einfra_spawner
from einfra_spawner.schema import profile_schema_json

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
INSTANCES = ("hub", "course", "ai")


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 240) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, REPO)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("einfra_spawner-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its bin folder."""
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    bin_dir = env / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    return bin_dir


def test_the_version_is_single_sourced(wheel: Path) -> None:
    assert wheel.name.startswith(f"einfra_spawner-{einfra_spawner.__version__}-")


def test_the_sdist_holds_real_files_not_the_symlink(dist: Path) -> None:
    (sdist,) = dist.glob("einfra_spawner-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1]: m for m in archive.getmembers() if "/" in m.name}
    shipped = members["einfra_spawner/reference_profiles/hub/instance.yaml"]
    assert shipped.isfile()
    assert not any(m.issym() for m in members.values())


def test_the_wheel_ships_the_reference_profiles_and_schema(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        schema = archive.read("einfra_spawner/reference_profiles/schema.json").decode()
    for instance in INSTANCES:
        for source in (REPO / "profiles" / instance).glob("*.yaml"):
            assert f"einfra_spawner/reference_profiles/{instance}/{source.name}" in names
    assert "einfra_spawner/templates/form.html" in names
    assert "einfra_spawner/py.typed" in names
    assert schema == profile_schema_json()


def test_the_installed_cli_validates_the_shipped_profiles(installed: Path) -> None:
    # Run from a folder outside the checkout, so nothing can be imported from it.
    where = run(
        installed / "python",
        "-c",
        "import importlib.resources as r; print(r.files('einfra_spawner') / 'reference_profiles')",
        cwd=installed,
    ).strip()
    assert not where.startswith(str(REPO))
    folders = [Path(where) / instance for instance in INSTANCES]
    out = run(installed / "einfra-spawner", "validate", *folders, cwd=installed)
    assert out.startswith("valid: ")
    assert json.loads(run(installed / "einfra-spawner", "schema", cwd=installed)) == json.loads(
        (Path(where) / "schema.json").read_text()
    )


def test_the_installed_package_registers_its_plugins(installed: Path) -> None:
    code = (
        "from importlib.metadata import entry_points, version\n"
        "import einfra_spawner\n"
        "from einfra_spawner.backend import available_backends\n"
        "assert version('einfra-spawner') == einfra_spawner.__version__\n"
        "print(available_backends())\n"
        "print(sorted(ep.name for ep in entry_points(group='pytest11')))\n"
        "print(sorted(ep.name for ep in entry_points(group='jupyterhub.spawners')))\n"
    )
    backends, plugins, spawners = run(installed / "python", "-c", code, cwd=installed).splitlines()
    assert backends == "['kubernetes', 'local']"
    assert "einfra_spawner_testing" not in plugins  # the harness's pytest plugin is opt-in
    assert "einfra" in spawners
