"""The floors environment tests the versions pyproject.toml declares (scripts/test, issue 12).

constraints/floors.txt pins the lowest version of every runtime, test and benchmarks dependency;
a floor raised or lowered in one file and not the other would test versions nobody declared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

REPOSITORY = Path(__file__).resolve().parents[2]
#: The extras installed in the floors environment (dev and docs tools run in the newest only).
FLOORS_EXTRAS = ("test", "benchmarks")


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    for extra in FLOORS_EXTRAS:
        requirements += [Requirement(line) for line in project["optional-dependencies"][extra]]
    return {canonicalize_name(r.name): r for r in requirements if r.name != "einfra-spawner"}


def pinned() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in (REPOSITORY / "constraints" / "floors.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints/floors.txt: not a pin: {raw!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def floor(requirement: Requirement) -> Version | None:
    lows = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return max(lows) if lows else None


def test_every_declared_dependency_is_pinned_at_its_floor() -> None:
    pins = pinned()
    wrong = {}
    for name, requirement in declared().items():
        low = floor(requirement)
        if low is None:  # no floor declared (e.g. types-PyYAML): nothing to test at a floor
            continue
        if pins.get(name) != low:
            wrong[name] = (str(requirement), str(pins.get(name)))
    assert wrong == {}, f"declared vs constraints/floors.txt: {wrong}"


def test_every_pin_is_a_declared_dependency() -> None:
    names = set(declared())
    # psycopg[binary] brings psycopg-binary at psycopg's own version.
    names |= {f"{name}-{extra}" for name, r in declared().items() for extra in r.extras}
    assert set(pinned()) - names == set()
    assert pinned()["psycopg-binary"] == pinned()["psycopg"]
