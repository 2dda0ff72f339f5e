"""End to end: what a refused or failed start leaves behind (issue 11), in a real JupyterHub with
the local backend.

The rules checked here (ARCHITECTURE.md, "The hub process and the life cycle"):

* a home is reset only by the request that asked for it, in that very request: a refused request
  leaves nothing of itself in the stored ``user_options`` (the last granted options, or none,
  are kept), so a later start without a body, after a PATCH or after a hub restart, never
  replays its reset;
* a start that fails after admission releases its quota reservation: the ledger counts only
  what runs, and the ``einfra-spawner usage`` report and the form's usage lines agree on it;
* a refused body is not kept in the hub database.

JupyterHub 6.1.1 stores a request's ``user_options`` before the pre-spawn hook runs (FACTS.md),
which is where these defects come from. Each test has users of its own (``lc-*``, put into the
group ``gpu`` where it needs GPU choices), so that no other test's servers count against their
quotas; every server started here is stopped in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from einfra_spawner import ServerNames
from einfra_spawner.usage import Interval, Ledger

from .conftest import VENV_BIN, Hub, Response, server_path

pytestmark = pytest.mark.e2e

MIG = "mig-1g.10gb"  # 7 in the demo's GPU inventory: 4 of them fill a user's GPU quota (max_gpus: 4)
GRANTED = {"cpu": "1"}  # the options of the first, granted start of each scenario
NOTE = "notes.txt"

# A request with a reset that is refused, the status and the start of the message.
REFUSED_RESETS = {
    # Another server of the user already holds the 4 GPUs of the quota.
    "quota": (
        {"home": "reset", "gpu": MIG, "gpu_count": 1},
        403,
        "You may use at most 4 GPUs at once on this hub; your running servers use 4 and this one asks for 1.",
    ),
    "options": ({"home": "reset", "memory": "1Pi"}, 400, "memory: '1Pi' is not allowed"),
}


def home_of(hub: Hub, user: str, server: str) -> Path:
    return hub.home_root / ServerNames(user, server).home


def moved_aside(home: Path) -> list[str]:
    """The folders the local backend moved this home to on a reset."""
    return sorted(path.name for path in home.parent.glob(f"{home.name}.reset-*"))


def start(hub: Hub, user: str, name: str, body: object) -> Response:
    """POST a start with exactly this body (``None``: no body at all) and wait until the server
    is ready or the start failed."""
    response = hub.api("POST", server_path(user, name), body)
    # 202: still starting. JupyterHub 6 may also answer 201 for a start that is still pending
    # (slow to start under load): wait for the start to end either way.
    if response.status in (201, 202):
        hub.wait_for(
            lambda: not (hub.server(user, name) or {}).get("pending"),
            f"the start of {user}/{name} to end",
        )
    return response


def stop_all(hub: Hub, user: str, *names: str) -> None:
    for name in names:
        model = hub.server(user, name) or {}
        if model.get("ready") or model.get("pending"):
            hub.stop_server(user, name)


def remove_servers(hub: Hub, user: str, *names: str) -> None:
    for name in names:
        if hub.server(user, name) is not None:
            response = hub.api("DELETE", f"/users/{user}/servers/{name}", {"remove": True})
            assert response.status in (202, 204), response.text
            hub.wait_for(lambda name=name: hub.server(user, name) is None, f"{user}/{name} to be removed")


def open_runs(hub: Hub, user: str) -> list[Interval]:
    """The user's open intervals in the ledger: running servers and admitted starts."""
    ledger = Ledger(hub.usage_db_url)
    try:
        return [interval for interval in ledger.open_intervals("hub") if interval.user == user]
    finally:
        ledger.dispose()


def stored(hub: Hub, user: str, name: str) -> Any:
    """The server's ``user_options`` as the hub database holds them (parsed)."""
    raw = hub.stored_user_options(user, name)
    return None if raw is None else json.loads(raw)


# -- 1. a refused reset is never replayed ---------------------------------------------------------


@pytest.mark.parametrize("then", ["no body", "empty object", "patch", "hub restart"])
@pytest.mark.parametrize("refusal", sorted(REFUSED_RESETS))
def test_a_refused_reset_is_never_replayed(hub: Hub, refusal: str, then: str) -> None:
    if then == "patch" and not hub.rest6:
        pytest.skip("JupyterHub 5 cannot change a server's stored options (PATCH came in 6.0)")
    user = f"lc-{refusal}-{then.replace(' ', '-')}"
    request, status, message = REFUSED_RESETS[refusal]
    if refusal == "quota":
        hub.join_group(user, "gpu")  # GPU choices, so that the refusal is the quota's
    else:
        hub.ensure_user(user)
    home = home_of(hub, user, "work")
    try:
        granted = hub.spawn(user, "work", GRANTED)
        assert granted.status in (201, 202), granted.text
        (home / NOTE).write_text("mine\n")
        hub.stop_server(user, "work")

        if refusal == "quota":
            holder = hub.spawn(user, "hold", {"gpu": MIG, "gpu_count": 4})
            assert holder.status in (201, 202), holder.text
        refused = hub.ask_start(user, "work", request)
        assert refused.status == status, refused.text
        assert refused.body["message"].startswith(message), refused.body
        kept_after_refusal = stored(hub, user, "work")
        # The holder goes: a replayed request would now be granted, and would reset the home.
        stop_all(hub, user, "hold")

        expected = GRANTED
        body: object = None  # a REST start without a body
        if then == "empty object":
            body = {}
            if not hub.rest6:
                # JupyterHub 6 reads {} as "no options" and replays the stored ones; 5 takes it
                # as a request of its own, with no keys (every default), and stores it.
                expected = {}
        elif then == "patch":
            # JupyterHub 6 updates a stopped server's stored options with PATCH: what it stores
            # is what the next start without a body uses.
            expected = {"cpu": "2"}
            patched = hub.api("PATCH", f"/users/{user}/servers/work", {"user_options": expected})
            assert patched.status == 200, patched.text
        elif then == "hub restart":
            hub.kill()
            hub.start()

        again = start(hub, user, "work", body)
        assert again.status in (201, 202), (
            f"the start without a body ({then}) was refused: {again.status} {again.text}; "
            f"the stored options it replayed: {stored(hub, user, 'work')}"
        )
        model = hub.server(user, "work")
        assert model is not None and model["ready"], model
        assert (home / NOTE).exists(), (
            f"the home was reset by a start that did not ask for it ({then} after a {refusal} "
            f"refusal); moved aside: {moved_aside(home)}; ran with {model['user_options']}"
        )
        assert (home / NOTE).read_text() == "mine\n"
        assert moved_aside(home) == []
        assert model["user_options"] == expected
        assert kept_after_refusal == GRANTED, (
            f"the refused request was kept as the stored user_options: {kept_after_refusal}"
        )
    finally:
        stop_all(hub, user, "work", "hold")


def test_a_home_beside_display_name_is_no_reset(hub: Hub) -> None:
    """JupyterHub 6 reads a body with ``display_name`` as ``{"display_name", "user_options"}``:
    a ``home`` beside it is no option, and the start replays the stored options. Even when those
    say reset (an admin's PATCH may store one), this request did not ask for it."""
    user = "lc-display-name"
    hub.ensure_user(user)
    home = home_of(hub, user, "work")
    body = {"display_name": "Work", "home": "reset"}
    try:
        granted = hub.spawn(user, "work", GRANTED)
        assert granted.status in (201, 202), granted.text
        (home / NOTE).write_text("mine\n")
        hub.stop_server(user, "work")
        if not hub.rest6:
            # JupyterHub 5 takes the whole body as the options: "display_name" is no request key.
            refused = hub.api("POST", server_path(user, "work"), body)
            assert refused.status == 400, refused.text
            assert refused.body["message"].startswith("display_name: "), refused.body
        else:
            patched = hub.api(
                "PATCH", f"/users/{user}/servers/work", {"user_options": {"home": "reset", "cpu": "2"}}
            )
            assert patched.status == 200, patched.text
            again = start(hub, user, "work", body)
            assert again.status in (201, 202), again.text
            model = hub.server(user, "work")
            assert model is not None and model["ready"], model
            assert model["user_options"] == {"cpu": "2"}
        assert (home / NOTE).exists(), f"the home was reset; moved aside: {moved_aside(home)}"
        assert (home / NOTE).read_text() == "mine\n"
        assert moved_aside(home) == []
    finally:
        stop_all(hub, user, "work")


# -- 2. a start that fails after admission releases its reservation -------------------------------


def h100_start_fails(hub: Hub, user: str, name: str) -> None:
    """A start the quota admits and the local backend then refuses (no H100 in its inventory)."""
    response = hub.ask_start(user, name, {"gpu": "h100"})
    assert response.status == 503, response.text
    assert response.body["message"].startswith("This machine has no NVIDIA H100"), response.body
    model = hub.server(user, name) or {}
    assert not model.get("ready") and not model.get("pending"), model


def test_starts_the_backend_refuses_give_their_gpus_back(hub: Hub) -> None:
    user = "lc-h100"
    hub.join_group(user, "gpu")
    failed = ["h1", "h2", "h3", "h4"]  # the 4 named servers servers_per_user: 5 allows
    try:
        for name in failed:
            h100_start_fails(hub, user, name)
        held = [(run.server, run.gpu, run.gpu_count, run.last_seen) for run in open_runs(hub, user)]
        # 4 failed starts of 1 GPU each, then 1 A40 of the 4 GPUs of the quota.
        granted = hub.spawn(user, "", {"gpu": "a40", "gpu_count": 1})
        assert granted.status in (201, 202), (
            f"{granted.text}; open intervals (server, gpu, count, last seen) after the failed starts: {held}"
        )
        assert held == [], "a start the backend refused still holds its quota"
        assert [(run.server, run.gpu, run.gpu_count) for run in open_runs(hub, user)] == [("", "a40", 1)]
    finally:
        stop_all(hub, user, "")
        remove_servers(hub, user, *failed)


def cli_usage(hub: Hub, user: str) -> list[dict[str, Any]]:
    """``einfra-spawner usage`` on the hub's ledger, for one user, as JSON."""
    completed = subprocess.run(
        [
            str(VENV_BIN / "einfra-spawner"),
            "usage",
            "--db",
            hub.usage_db_url,
            "--user",
            user,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    rows: list[dict[str, Any]] = json.loads(completed.stdout)
    return rows


def form_usage(hub: Hub, user: str, server: str) -> list[str]:
    """The usage lines of the options form, as ``user`` sees it after logging in."""
    page = hub.log_in(user).request("GET", f"/hub/spawn/{user}/{server}")
    assert page.status == 200, page.text
    block = re.search(r'<div class="einfra-usage[^"]*"[^>]*>(.*?)</div>', page.text, re.S)
    assert block is not None, f"no usage lines on the form:\n{page.text}"
    return [unescape(line).strip() for line in re.findall(r"<p[^>]*>(.*?)</p>", block.group(1), re.S)]


def test_the_report_and_the_form_agree_on_what_runs_after_a_failed_start(hub: Hub) -> None:
    user = "lc-agree"
    hub.join_group(user, "gpu")
    try:
        running = hub.spawn(user, "", GRANTED)  # the one server that runs, without a GPU
        assert running.status in (201, 202), running.text
        h100_start_fails(hub, user, "broken")
        (row,) = cli_usage(hub, user)
        lines = form_usage(hub, user, "broken")
        form_servers = next(line for line in lines if line.startswith("You run "))
        form_gpus = next(line for line in lines if line.startswith("You use "))
        # The report counts runs that ran: the failed start is not one.
        assert (row["servers"], row["running"]) == (1, 1), row
        assert (form_servers, form_gpus) == (
            f"You run {row['running']} of your 5 servers.",
            "You use 0 of your 4 GPUs.",
        ), f"the form counts the failed start; the report says {row}"
    finally:
        stop_all(hub, user, "")
        remove_servers(hub, user, "broken")


def test_removing_a_server_after_a_failed_start_leaves_no_open_interval(hub: Hub) -> None:
    user = "lc-removed"
    hub.join_group(user, "gpu")
    try:
        h100_start_fails(hub, user, "gone")
        removed = hub.api("DELETE", f"/users/{user}/servers/gone", {"remove": True})
        assert removed.status in (202, 204), removed.text
        hub.wait_for(lambda: hub.server(user, "gone") is None, f"{user}/gone to be removed")
        left = [(run.server, run.gpu, run.last_seen) for run in open_runs(hub, user)]
        assert left == [], f"open intervals (server, gpu, last seen) of a removed server: {left}"
    finally:
        remove_servers(hub, user, "gone")


# -- 3. a refused body is not kept ----------------------------------------------------------------


def ten_megabytes_of_mounts() -> list[str]:
    mounts = [f"mount-{index:07d}-" + "x" * 86 for index in range(100_000)]
    assert len(json.dumps(mounts)) > 10_000_000
    return mounts


@pytest.mark.parametrize("before", ["a granted start", "nothing"])
def test_a_refused_body_is_not_kept_in_the_hub_database(hub: Hub, before: str) -> None:
    user = f"lc-huge-{before.replace(' ', '-')}"
    hub.ensure_user(user)
    try:
        if before == "a granted start":
            granted = hub.spawn(user, "big", GRANTED)
            assert granted.status in (201, 202), granted.text
            hub.stop_server(user, "big")
        refused = hub.ask_start(user, "big", {"mounts": ten_megabytes_of_mounts()})
        assert refused.status == 400, refused.text[:500]
        assert refused.body["message"].startswith("mounts: "), refused.text[:500]
        raw = hub.stored_user_options(user, "big")
        size = 0 if raw is None else len(raw)
        assert size < 1000, (
            f"the spawner row holds {size} characters of user_options: {(raw or '')[:120]!r}..."
        )
        kept = stored(hub, user, "big")
        if before == "a granted start":
            assert kept == GRANTED
        else:
            assert kept in (None, {})
    finally:
        stop_all(hub, user, "big")


# --- a hub killed during a start (local backend) -------------------------------------------------


@pytest.fixture
def crashing_hub(tmp_path: Path) -> Iterator[Hub]:
    """A hub of its own (it is killed and restarted), whose servers take a few seconds to answer
    (so that a start can be cut short), with a reconciler that passes every second."""
    slow = tmp_path / "slow-singleuser"
    slow.write_text(f'#!/bin/sh\nsleep 4\nexec {VENV_BIN / "jupyterhub-singleuser"} "$@"\n')
    slow.chmod(0o755)
    hub = Hub(
        root=tmp_path / "hub",
        extra_config=(
            f"c.Spawner.cmd = [{str(slow)!r}]\n"
            "c.EInfraSpawner.reconcile_interval = 1\n"
            "c.EInfraSpawner.reconcile_grace = 3\n"
        ),
    )
    hub.root.mkdir()
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_server_left_by_a_hub_killed_mid_start_is_removed_and_never_doubled(crashing_hub: Hub) -> None:
    hub, user = crashing_hub, "lc-crash"
    hub.ensure_user(user)
    record = hub.home_root / "records" / f"{ServerNames(user, '').pod}.json"

    def start_and_lose_the_hub() -> None:
        with contextlib.suppress(OSError):  # the hub dies under this request
            start(hub, user, "", GRANTED)

    starting = threading.Thread(target=start_and_lose_the_hub, daemon=True)
    starting.start()
    hub.wait_for(record.exists, "the start to launch its server")
    orphan = int(json.loads(record.read_text())["pid"])
    hub.kill()  # mid-start: the server process runs, JupyterHub has not recorded it
    starting.join(30)
    assert alive(orphan)
    assert [run.server for run in open_runs(hub, user)] == [""]  # its reservation
    hub.start()
    # The reconciler's first pass after the restart: the process no hub knows is removed (it
    # was created before this hub process started), its reservation closed.
    hub.wait_for(lambda: not alive(orphan), "the reconciler to remove the orphaned server")
    hub.wait_for(lambda: open_runs(hub, user) == [], "the reservation to be closed")
    assert re.search(rf"Reconcile: remove process {orphan}\b.*'{user}'", hub.log_path.read_text())
    # Starting the same server again runs exactly one process.
    restarted = hub.spawn(user)  # 202 and then ready when the start outlasts the hub's slow_spawn_timeout
    assert restarted.status in (201, 202), restarted.text
    try:
        hub.wait_for(lambda: (hub.server(user) or {}).get("ready"), "the new start to be ready")
        (current,) = [r for r in open_runs(hub, user)]
        assert current.last_seen is not None
        again = int(json.loads(record.read_text())["pid"])
        assert again != orphan and alive(again)
    finally:
        stop_all(hub, user, "")
    assert open_runs(hub, user) == []
