"""The command line: validate, render and schema, with their exit statuses and messages."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import yaml

from einfra_spawner.cli import main

from .strategies import PROFILES_DIR


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_validate_reference_instances() -> None:
    status, out, err = run("validate", *(str(PROFILES_DIR / n) for n in ("hub", "course", "ai")))
    assert status == 0 and err == ""
    assert out.startswith("valid: ")


def test_validate_reports_one_line_per_problem(tmp_path: Path) -> None:
    (tmp_path / "instance.yaml").write_text("name: x\ndisplay_name: X\nservers_per_user: 0\n")
    (tmp_path / "p.yaml").write_text("slug: p\ndisplay_name: P\nimage: a:1\ncpu: 1\n")
    status, out, err = run("validate", str(tmp_path))
    assert status == 1 and out == ""
    lines = err.splitlines()
    assert lines == [
        f"{tmp_path / 'instance.yaml'}: servers_per_user: "
        "Input should be greater than or equal to 1 (found 0)",
        f"{tmp_path / 'p.yaml'}: memory: Field required",
    ]


def test_render_a_gpu_request_as_json() -> None:
    status, out, err = run(
        "render",
        "--profiles",
        str(PROFILES_DIR / "hub"),
        "--user",
        "ada",
        "--server",
        "gpu",
        "--group",
        "gpu",
        "--group",
        "meta",
        "--option",
        "gpu=a40",
        "--option",
        "gpu_count=2",
        "--option",
        "mounts=metacentrum",
        "--option",
        "mounts=projects",
        "--format",
        "json",
    )
    # projects is not granted to ada (not in the group): the listed value is refused
    assert status == 2 and out == ""
    assert err.strip() == ("einfra-spawner: refused: mounts: 'projects' is not allowed; allowed: metacentrum")
    status, out, err = run(
        "render",
        "--profiles",
        str(PROFILES_DIR / "hub"),
        "--user",
        "ada",
        "--server",
        "gpu",
        "--group",
        "gpu",
        "--group",
        "meta",
        "--option",
        "gpu=a40",
        "--option",
        "gpu_count=2",
        "--option",
        "mounts=metacentrum",
        "--format",
        "json",
    )
    assert status == 0, err
    objects = json.loads(out)
    assert [o["kind"] for o in objects] == ["Pod", "PersistentVolumeClaim"]
    assert objects[0]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_render_yaml_and_errors(tmp_path: Path) -> None:
    status, out, _ = run("render", "--profiles", str(PROFILES_DIR / "course"), "--user", "student")
    assert status == 0
    (pod,) = yaml.safe_load_all(out)
    assert pod["kind"] == "Pod"
    status, _, err = run("render", "--profiles", str(tmp_path), "--user", "x")
    assert status == 1 and "no instance.yaml" in err
    status, _, err = run(
        "render", "--profiles", str(PROFILES_DIR / "hub"), "--user", "x", "--option", "novalue"
    )
    assert status == 2 and "expected KEY=VALUE" in err


def test_schema_command_and_module_entry() -> None:
    status, out, _ = run("schema")
    assert status == 0 and json.loads(out)["title"].startswith("einfra-spawner")
    done = subprocess.run(
        [sys.executable, "-m", "einfra_spawner", "validate", str(PROFILES_DIR / "course")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
