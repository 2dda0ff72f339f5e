"""The layers hold: the pure core imports no I/O framework, and the core imports no backend."""

from __future__ import annotations

import ast
from pathlib import Path

import einfra_spawner

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "einfra_spawner"
PURE = (
    "errors",
    "models",
    "names",
    "profiles",
    "quantities",
    "render",
    "resolve",
    "schema",
    "form",
)
FORBIDDEN_IN_PURE = (
    "asyncio",
    "kubernetes_asyncio",
    "tornado",
    "traitlets",
    "jupyterhub",
    "aiohttp",
    "subprocess",
    "socket",
    "logging",
    "time",
    "datetime",
    "random",
    "os",
)
BACKENDS = tuple(p.name for p in (ROOT / "backends").iterdir() if (p / "__init__.py").exists())


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_pure_modules_do_no_io() -> None:
    for name in PURE:
        path = CORE / f"{name}.py"
        if path.exists():
            bad = imports_of(path) & set(FORBIDDEN_IN_PURE)
            assert not bad, f"{path.name} imports {sorted(bad)}"


def test_core_imports_no_backend() -> None:
    assert BACKENDS, "the in-tree backends are packages under backends/"
    for path in CORE.rglob("*.py"):
        bad = imports_of(path) & set(BACKENDS)
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_backends_use_only_the_public_core() -> None:
    for backend in BACKENDS:
        for path in (ROOT / "backends" / backend).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    parts = node.module.split(".")
                    assert not (parts[0] == "einfra_spawner" and any(p.startswith("_") for p in parts)), (
                        f"{path.relative_to(ROOT)} imports private {node.module}"
                    )
                    other = set(BACKENDS) - {backend}
                    assert parts[0] not in other, f"{path.relative_to(ROOT)} imports {parts[0]}"


def test_public_surface() -> None:
    for name in einfra_spawner.__all__:
        assert getattr(einfra_spawner, name) is not None, name
    assert not [n for n in einfra_spawner.__all__ if n.startswith("_")]
