"""End to end: the usage ledger, quotas and metrics in a real JupyterHub with the local backend.

A hub of its own (its instance folder is profiles/hub with small quotas; polls every second), so
that killing it and counting servers disturbs no other test. The ledger is read directly from the
hub's SQLite file. Demo users: ada (gpu, meta, projects), grace (gpu), ben (projects); hedy (gpu) is
this module's own, for the browser test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.async_api import Browser, expect

from einfra_spawner.models import Prices
from einfra_spawner.usage import Interval, Ledger, rates_for

from .conftest import REPOSITORY, Hub
from .test_browser import browser, chromium, log_in  # noqa: F401 - fixtures shared with the browser tests

pytestmark = pytest.mark.e2e

QUOTAS = {"max_servers": 2, "max_gpus": 2, "group_max_gpus": {"gpu": 3}}
MIG = "mig-1g.10gb"  # 7 in the demo's GPU inventory: GPU quotas bind before the inventory does


@pytest.fixture(scope="module")
def usage_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("usage-hub")
    profiles = root / "profiles"
    shutil.copytree(REPOSITORY / "profiles" / "hub", profiles)
    instance = yaml.safe_load((profiles / "instance.yaml").read_text())
    instance["quotas"] = QUOTAS
    (profiles / "instance.yaml").write_text(yaml.safe_dump(instance))
    config = (
        "c.Spawner.poll_interval = 1\n"
        "c.JupyterHub.authenticate_prometheus = False\n"
        'c.JupyterHub.load_roles[0]["scopes"].append("tokens")  # to make user tokens\n'
        # A GPU user for the browser test alone, so that no other test's runs change its cost.
        'c.JupyterHub.load_groups["gpu"]["users"].append("hedy")\n'
    )
    running = Hub(root=root, profiles=profiles, extra_config=config)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def runs(hub: Hub, user: str, server: str) -> list[Interval]:
    ledger = Ledger(hub.usage_db_url)
    try:
        return [
            i for i in ledger.intervals(0, time.time() + 3600, "hub", [user], False) if i.server == server
        ]
    finally:
        ledger.dispose()


def stop_all(hub: Hub, user: str, *names: str) -> None:
    for name in names:
        if (hub.server(user, name) or {}).get("ready"):
            hub.stop_server(user, name)


def test_quotas_are_refused_and_granted_at_their_limits(usage_hub: Hub) -> None:
    hub = usage_hub
    try:
        granted = hub.spawn("ada", "one", {"gpu": MIG, "gpu_count": 2})
        assert granted.status in (201, 202), granted.text  # 2 of ada's 2 GPUs
        over = hub.ask_start("ada", "two", {"gpu": MIG, "gpu_count": 1})
        assert over.status == 403, over.text
        assert over.body["message"] == (
            "You may use at most 2 GPUs at once on this hub; "
            "your running servers use 2 and this one asks for 1."
        )
        assert not (hub.server("ada", "two") or {}).get("ready")
        assert hub.spawn("ada", "two", {"cpu": "1"}).status in (201, 202)  # no GPU: 2 of 2 servers
        third = hub.ask_start("ada", "three", {"cpu": "1"})
        assert third.status == 403, third.text
        assert third.body["message"] == (
            "You may run at most 2 server(s) at once on this hub; 2 are running. Stop one first."
        )
        # The group gpu may hold 3 GPUs: ada holds 2, so grace gets 1 and not 2.
        group = hub.ask_start("grace", "g", {"gpu": MIG, "gpu_count": 2})
        assert group.status == 403, group.text
        assert "group 'gpu' may use at most 3 GPUs at once; they use 2 now" in group.body["message"]
        assert hub.spawn("grace", "g", {"gpu": MIG, "gpu_count": 1}).status in (201, 202)
        metrics = hub.request("GET", "/hub/metrics").text
        assert 'einfra_spawn_failures_total{reason="quota"} 3.0' in metrics
        assert 'einfra_spawn_duration_seconds_count{outcome="success",profile="jupyterlab"}' in metrics
    finally:
        stop_all(hub, "ada", "one", "two")
        stop_all(hub, "grace", "g")
    # Once stopped, the quota is free again, and the refused starts left no interval.
    assert [(i.gpu_count, i.stopped is not None) for i in runs(hub, "ada", "one")] == [(2, True)]
    assert [i.gpu for i in runs(hub, "ada", "two")] == [None]
    assert runs(hub, "ada", "three") == []
    assert hub.spawn("ada", "three", {"gpu": MIG, "gpu_count": 2}).status in (201, 202)
    stop_all(hub, "ada", "three")


def seen_after(hub: Hub, user: str, server: str, moment: float) -> Interval:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (run,) = runs(hub, user, server)
        if run.last_seen is not None and run.last_seen > moment:
            return run
        time.sleep(0.2)
    raise AssertionError(f"poll never recorded {user}/{server} as running:\n{hub.log_tail()}")


def test_a_hub_crash_while_the_server_runs_leaves_one_correct_interval(usage_hub: Hub) -> None:
    hub = usage_hub
    assert hub.spawn("ben", "survives", {"cpu": "1"}).status in (201, 202)
    before_crash = seen_after(hub, "ben", "survives", time.time())
    hub.kill()
    time.sleep(1.5)
    hub.start()
    # The restarted hub polls it, finds it running, and keeps the same interval open.
    seen_after(hub, "ben", "survives", time.time())
    hub.stop_server("ben", "survives")
    stopped_at = time.time()
    (run,) = runs(hub, "ben", "survives")
    assert run.id == before_crash.id and run.started == before_crash.started
    assert run.stopped is not None and before_crash.last_seen is not None
    assert before_crash.last_seen < run.stopped <= stopped_at  # it ran all along: charged all along


def test_a_server_that_dies_with_the_hub_ends_where_it_was_last_seen(usage_hub: Hub) -> None:
    hub = usage_hub
    assert hub.spawn("ben", "dies", {"cpu": "1"}).status in (201, 202)
    model = hub.server("ben", "dies")
    assert model is not None
    pid = model["state"]["server"]["pid"]
    seen_after(hub, "ben", "dies", time.time())
    hub.kill()
    os.kill(pid, signal.SIGKILL)  # the server dies while no hub watches
    died = time.time()
    time.sleep(2)
    hub.start()
    hub.wait_for(lambda: runs(hub, "ben", "dies")[0].stopped is not None, "the interval to close")
    (run,) = runs(hub, "ben", "dies")
    assert run.stopped is not None and run.stopped == run.last_seen  # last seen, never "now"
    assert run.started < run.stopped <= died
    assert not (hub.server("ben", "dies") or {}).get("ready")


def test_the_form_shows_usage_and_the_gpu_route_answers_users_only(usage_hub: Hub) -> None:
    hub = usage_hub
    token = hub.api("POST", "/users/ada/tokens", {"note": "e2e", "expires_in": 600})
    assert token.status == 201, token.text
    # The GPU figures service (more in test_gpu_service.py).
    figures = hub.request("GET", "/services/gpus/gpus", token=token.body["token"])
    assert figures.status == 200, figures.text
    assert figures.body["gpus"]["a40"] == {"free": 2, "total": 2, "note": "2 of 2 free"}
    assert figures.body["gpus"][MIG] == {"free": 7, "total": 7, "note": "7 of 7 free"}
    assert hub.request("GET", "/services/gpus/gpus").status == 403  # the tests' service token
    with urllib.request.urlopen(f"{hub.url}/services/gpus/gpus", timeout=10) as anonymous:
        assert anonymous.url.startswith(f"{hub.url}/hub/login")  # sent to log in, no figures
    metrics = hub.request("GET", "/hub/metrics").text
    assert 'einfra_gpus_total{gpu="a40"} 2.0' in metrics
    ben = hub.api("POST", "/users/ben/tokens", {"note": "e2e", "expires_in": 600}).body["token"]
    assert "a40" not in hub.request("GET", "/services/gpus/gpus", token=ben).body["gpus"]  # no GPU group


def record_past_usage(hub: Hub, user: str) -> None:
    """Runs of the last weeks, written straight into the hub's ledger (as earlier hub runs would
    have), so that the form has a cost to show."""
    now = time.time()
    ledger = Ledger(hub.usage_db_url)
    try:
        for days_ago, hours, gpus in [(40, 6.0, 1), (12, 30.0, 0), (2, 3.5, 2)]:
            started = now - days_ago * 86400
            opened = ledger.open(
                Interval(
                    instance="hub",
                    user=user,
                    server=f"past-{days_ago}",
                    profile="jupyterlab",
                    groups=("gpu",),
                    cpu_millicores=4000,
                    memory_bytes=16 * 2**30,
                    gpu="a40" if gpus else None,
                    gpu_count=gpus,
                    rates=rates_for(yaml_prices(), "a40" if gpus else None),
                    started=started,
                )
            )
            ledger.mark_running(opened.id, started)
            ledger.end(opened.id, started + hours * 3600)
    finally:
        ledger.dispose()


def yaml_prices() -> Prices:
    instance = yaml.safe_load((REPOSITORY / "profiles" / "hub" / "instance.yaml").read_text())
    return Prices.model_validate(instance["prices"])


async def test_the_form_shows_usage_and_refreshes_gpu_figures_in_place(
    usage_hub: Hub,
    browser: Browser,  # noqa: F811 - the fixture imported above
    artifacts: Path,
) -> None:
    hub = usage_hub
    await asyncio.to_thread(record_past_usage, hub, "hedy")
    page = await log_in(browser, hub, "hedy")
    await page.goto(f"{hub.url}/hub/spawn/hedy/shown")
    usage = page.locator(".einfra-usage")
    # By hand: 39.5 h of 4 CPUs (x 0.35 = 55.30) and 16 GiB (x 0.04 = 25.28); GPUs: 6 h of one
    # A40 (x 38 = 228) and 3.5 h of two (266): 574.58 CZK.
    await expect(usage).to_contain_text(
        "Your usage over the last 90 days: 574.58 CZK (CPU 55.30, memory 25.28, GPU 494.00)"
    )
    await expect(usage).to_contain_text("You use 0 of your 2 GPUs.")
    a40 = page.locator('[data-einfra-gpu="a40"]').first
    await expect(a40).to_have_text("2 of 2 free")
    # Another user takes an A40 while the page is open: the script's refresh shows it, no reload.
    taken = await asyncio.to_thread(hub.spawn, "ada", "takes-one", {"gpu": "a40", "gpu_count": 1})
    assert taken.status in (201, 202), taken.text
    try:
        assert await page.evaluate("window.einfraRefreshGpus()") is True
        await expect(a40).to_have_text("1 of 2 free")
        await page.locator("#jupyterlab--gpu\\:a40").check()
        await page.screenshot(path=str(artifacts / "usage-form.png"), full_page=True)
    finally:
        await asyncio.to_thread(hub.stop_server, "ada", "takes-one")
