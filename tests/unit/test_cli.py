"""The command line: validate, render and schema, with their exit statuses and messages."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from einfra_spawner.cli import main

from .strategies import GATED_PROFILE, PROFILES_DIR


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


def test_validate_lists_every_planted_error_and_no_other(tmp_path: Path) -> None:
    # Issue 12, item 7: an unknown key, a bad CPU value and a GPU choice naming no GPU type of the
    # instance, in one profile that is the instance's default profile.
    (tmp_path / "instance.yaml").write_text(
        "name: x\ndisplay_name: X\ndefault_profile: p\n"
        "gpu_types: {a40: {display_name: A40, resource: nvidia.com/gpu}}\n"
    )
    (tmp_path / "p.yaml").write_text(
        "slug: p\ndisplay_name: P\nimage: a:1\nmemory: 1Gi\ncolour: red\n"
        "cpu: {choices: [1, lots]}\ngpu: [none, a40, h100]\n"
    )
    status, out, err = run("validate", str(tmp_path))
    assert status == 1 and out == ""
    profile = tmp_path / "p.yaml"
    assert sorted(err.splitlines()) == [
        f"{profile}: colour: unknown key; allowed keys: cpu, default_url, description, display_name, "
        "env, gpu, groups, home, image, memory, mounts, node_selector, pod, shm, slug, tolerations",
        f"{profile}: cpu.choices[1].value: must be a CPU count such as 2, 0.5 or '500m' "
        "(not a Kubernetes quantity) (found 'lots')",
        f"{profile}: gpu.choices[2].id: not a GPU type of this instance; allowed: none, a40 (found 'h100')",
    ]
    # The same three when the profile file is named alone (it is checked in its instance folder).
    assert run("validate", str(profile)) == (status, out, err)


def test_validate_warns_when_a_custom_pattern_matches_a_gated_image(tmp_path: Path) -> None:
    (tmp_path / "instance.yaml").write_text("name: x\ndisplay_name: X\n")
    (tmp_path / "lab.yaml").write_text(GATED_PROFILE)
    status, out, err = run("validate", str(tmp_path))
    assert status == 0, err  # a warning, not a failure
    assert out == f"valid: {tmp_path}\n"
    warnings = err.splitlines()
    assert all(
        line.startswith(f"warning: {tmp_path / 'lab.yaml'}: image.custom.pattern: ") for line in warnings
    )
    # The pattern accepts every reference: each gated choice is named with its groups, and only those
    # (shared-lic's image is open to all through shared-open).
    assert [line.split("choice ")[1].split(",")[0] for line in warnings] == [
        "'licensed'",
        "'hub-tool'",
        "'pinned'",
    ]
    assert (
        "matches 'cerit.io/hubs/licensed:1', the image of choice 'licensed', open only to groups lic"
        in (warnings[0])
    )
    # A profile file is checked the same way, in its instance folder and alone.
    status, _, err = run("validate", str(tmp_path / "lab.yaml"))
    assert status == 0 and err.count("warning: ") == 3
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "lab.yaml").write_text(GATED_PROFILE)
    status, _, err = run("validate", str(tmp_path / "alone" / "lab.yaml"))
    assert status == 0 and err.count(f"warning: {tmp_path / 'alone' / 'lab.yaml'}: ") == 3


_ANY_REFERENCE = "'(?:[A-Za-z0-9.-]+/)?[a-z0-9/._-]+(?::[A-Za-z0-9._-]+)?(?:@sha256:[0-9a-f]{64})?'"


@pytest.mark.parametrize(
    "custom",
    [
        "pattern: 'cerit\\.io/users/[a-z0-9._-]+:[A-Za-z0-9._-]+'",  # spares the gated references
        f"pattern: {_ANY_REFERENCE}\n    groups: [lic]",  # custom images only for those with the choices
    ],
)
def test_validate_does_not_warn_when_no_gated_image_is_exposed(tmp_path: Path, custom: str) -> None:
    (tmp_path / "instance.yaml").write_text("name: x\ndisplay_name: X\n")
    profile = GATED_PROFILE.replace(f"pattern: {_ANY_REFERENCE}", custom)
    assert profile != GATED_PROFILE
    (tmp_path / "lab.yaml").write_text(profile)
    assert run("validate", str(tmp_path)) == (0, f"valid: {tmp_path}\n", "")


def test_render_a_gpu_request_as_json() -> None:
    gpu_request = (
        "render", "--profiles", str(PROFILES_DIR / "hub"), "--user", "ada", "--server", "gpu",
        "--group", "gpu", "--group", "meta", "--option", "gpu=a40", "--option", "gpu_count=2",
        "--option", "mounts=metacentrum", "--format", "json",
    )  # fmt: skip
    # projects is not granted to ada (not in the group): the listed value is refused
    status, out, err = run(*gpu_request, "--option", "mounts=projects")
    assert status == 2 and out == ""
    assert err.strip() == (
        "einfra-spawner: refused: mounts: 'projects' is not allowed; allowed: metacentrum, scratch"
    )
    status, out, err = run(*gpu_request)
    assert status == 0, err
    objects = json.loads(out)
    # The pod, its home, and the PersistentVolume of the sshfs mount with its claim.
    assert [o["kind"] for o in objects] == [
        "Pod",
        "PersistentVolumeClaim",
        "PersistentVolume",
        "PersistentVolumeClaim",
    ]
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


# --- usage ------------------------------------------------------------------------------------


def _ledger_with_three_users(path: Path) -> str:
    import time
    from decimal import Decimal

    from einfra_spawner.usage import Interval, Ledger, Rates

    url = f"sqlite:///{path / 'usage.sqlite'}"
    ledger = Ledger(url)
    now = time.time()
    rates = Rates(
        currency="CZK", cpu_hour=Decimal("0.35"), memory_gib_hour=Decimal("0.04"), gpu_hour=Decimal(38)
    )
    runs = [  # user, groups, CPUs, GiB, GPUs, hours ago started, hours ago stopped (None: running)
        ("ada", ("gpu",), 4, 16, 2, 30.0, 20.0),
        ("ada", ("gpu",), 2, 8, 0, 3.0, None),
        ("ben", ("projects",), 8, 64, 0, 91 * 24.0, 89.5 * 24.0),  # partly before a 90-day window
        ("cleo", (), 1, 4, 0, 2.0, 1.0),
    ]
    for user, groups, cpus, gib, gpus, began, ended in runs:
        opened = ledger.open(
            Interval(
                instance="hub",
                user=user,
                profile="jupyterlab",
                groups=groups,
                cpu_millicores=cpus * 1000,
                memory_bytes=gib * 2**30,
                gpu="a40" if gpus else None,
                gpu_count=gpus,
                rates=rates,
                started=now - began * 3600,
            )
        )
        ledger.mark_running(opened.id, now - began * 3600)
        if ended is not None:
            ledger.end(opened.id, now - ended * 3600)
    ledger.dispose()
    return url


def test_usage_prints_per_user_totals(tmp_path: Path) -> None:
    url = _ledger_with_three_users(tmp_path)
    code, out, err = run("usage", "--db", url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "user",
        "servers",
        "running",
        "cpu",
        "hours",
        "gpu",
        "hours",
        "cpu",
        "memory",
        "gpu",
        "total",
        "currency",
    ]
    assert [line.split()[0] for line in lines[2:]] == ["ada", "ben", "cleo"]
    # ada: 10 h of 4 CPUs, 16 GiB, 2 A40 = 14 + 6.40 + 760 = 780.40; plus 3 h of 2 CPUs, 8 GiB
    # running (2.10 + 0.96); the exact figure depends on the seconds since the ledger was written.
    ada = lines[2].split()
    assert ada[1:3] == ["2", "1"] and ada[-1] == "CZK" and 783.4 <= float(ada[-2]) <= 783.5
    # ben: only the 12 hours inside the window count (clipped): 12 h x (8 x 0.35 + 64 x 0.04).
    assert lines[3].split()[-2] == "64.32"

    code, out, _ = run("usage", "--db", url, "--group", "gpu", "--format", "csv")
    assert (
        code == 0
        and out.splitlines()[0] == "user,servers,running,cpu_hours,gpu_hours,cpu,memory,gpu,total,currency"
    )
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == ["ada"]

    code, out, _ = run("usage", "--db", url, "--user", "cleo", "--days", "1", "--format", "json")
    assert code == 0
    assert json.loads(out) == [
        {
            "user": "cleo",
            "servers": 1,
            "running": 0,
            "cpu_hours": 1.0,
            "gpu_hours": 0.0,
            "cpu": "0.35",
            "memory": "0.16",
            "gpu": "0.00",
            "total": "0.51",
            "currency": "CZK",
        }
    ]


def test_usage_refuses_a_missing_database(tmp_path: Path) -> None:
    code, _, err = run("usage", "--db", f"sqlite:///{tmp_path / 'none.sqlite'}")
    assert code == 1 and "no usage database" in err
    assert not (tmp_path / "none.sqlite").exists()
    code, out, _ = run("usage", "--db", _ledger_with_three_users(tmp_path), "--user", "nobody")
    assert code == 0 and "(no usage in this window)" in out
