"""In a real headless Chromium: log in, see the form for your groups, start, land in JupyterLab.

Debian's ``/usr/bin/chromium`` driven by Playwright (``playwright install`` cannot download its
own browser here). Screenshots of the form, the progress page (when the start is slow enough to
catch it) and JupyterLab go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, Route, async_playwright, expect
from playwright.async_api import Error as PlaywrightError

from einfra_spawner import UserContext, load_profiles, parse_profile_set, resolve_options
from einfra_spawner.demo.auth import DEMO_PASSWORD
from einfra_spawner.form import build_form, request_from_form
from einfra_spawner.pricing import hourly_cost, money_text
from einfra_spawner.spawner_form import form_template

from .conftest import Hub

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest_asyncio.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def log_in(browser: Browser, hub: Hub, user: str) -> Page:
    page = await browser.new_page(viewport={"width": 1000, "height": 1000})
    page.set_default_timeout(30_000)
    await page.goto(f"{hub.url}/hub/login")
    await page.fill("#username_input", user)
    await page.fill("#password_input", DEMO_PASSWORD)
    await page.click("#login_submit")
    await page.wait_for_url(lambda url: "/hub/login" not in url)
    return page


async def capture_progress(page: Page, path: Path) -> None:
    """A screenshot of the progress page, with its event log open, if the start is still running
    (a local start takes a second or two: the page may already have moved on, which is no
    failure; the events themselves are checked through the REST API in test_hub.py)."""
    await asyncio.to_thread(path.unlink, missing_ok=True)
    try:
        await page.locator("#progress-details").evaluate("details => { details.open = true; }")
        await expect(page.locator(".progress-log-event").first).to_be_visible(timeout=2_000)
        await page.screenshot(path=str(path))
    except (AssertionError, PlaywrightError):
        pass


async def test_a_user_chooses_options_starts_and_lands_in_jupyterlab(
    hub: Hub, browser: Browser, artifacts: Path
) -> None:
    page = await log_in(browser, hub, "ada")
    try:
        await page.goto(f"{hub.url}/hub/spawn")
        # ada is in gpu, meta and projects: every GPU type and the extra mounts are shown.
        await expect(page.get_by_role("radio", name="JupyterLab", exact=True)).to_be_checked()
        await expect(page.get_by_role("radio", name="RStudio", exact=True)).not_to_be_checked()
        a40 = page.locator("label[for='jupyterlab--gpu:a40']")
        await expect(a40).to_have_text("NVIDIA A40 (up to 2, 2 of 2 free, 38.00 CZK per GPU-hour)")
        reset = page.locator("#jupyterlab--home")
        await expect(reset).not_to_be_checked()
        form = page.locator(".einfra-form")
        await expect(form).to_contain_text(
            "Images do not apply on this hub (its servers run as local processes)."
        )
        # The local backend mounts no volumes: the mounts are listed as not provided, not offered.
        await expect(form).to_contain_text(
            "Extra storage is not provided on this hub (its servers run as local processes)."
        )
        await expect(form).to_contain_text(
            "MetaCentrum storage (sshfs) (/home/jovyan/metacentrum) (not provided)"
        )
        await expect(page.locator("[name='jupyterlab--mounts']")).to_have_count(0)
        await page.screenshot(path=str(artifacts / "form.png"), full_page=True)

        # CPU and memory are ranges: number fields (in CPUs and GiB).
        await page.fill("#jupyterlab--cpu", "4")
        await page.fill("#jupyterlab--memory", "16")
        await page.check("input[id='jupyterlab--gpu:mig-1g.10gb']")
        visited: list[str] = []
        page.on("framenavigated", lambda frame: visited.append(frame.url))
        await page.get_by_role("button", name="Start").click()
        await page.wait_for_url("**/hub/spawn-pending/ada**")
        await capture_progress(page, artifacts / "progress.png")
        await page.wait_for_url("**/user/ada/lab**", timeout=60_000)
        await expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)
        await expect(page.locator(".jp-Launcher-body, .jp-Launcher").first).to_be_visible(timeout=60_000)
        await page.screenshot(path=str(artifacts / "jupyterlab.png"))
        assert any("/hub/spawn-pending/ada" in url for url in visited), visited
    finally:
        await page.close()

    model = hub.server("ada")
    assert model is not None and model["ready"]
    assert model["user_options"] == {
        "profile": "jupyterlab",
        "gpu": "mig-1g.10gb",
        "gpu_count": "1",
        "cpu": "4",
        "memory": "16Gi",
    }
    hub.stop_server("ada")


async def test_a_user_in_no_group_sees_no_gpu_and_a_forged_post_is_refused(
    hub: Hub, browser: Browser
) -> None:
    page = await log_in(browser, hub, "cleo")
    try:
        await page.goto(f"{hub.url}/hub/spawn")
        form = page.locator(".einfra-form")
        await expect(form).to_be_visible()
        await expect(page.locator("[name='jupyterlab--gpu']")).to_have_count(0)
        await expect(page.locator("[name='jupyterlab--mounts']")).to_have_count(0)
        await expect(form).not_to_contain_text("NVIDIA")
        # cleo may choose no GPU: no "You use 0 of your 4 GPUs" (the ledger's lines are there).
        await expect(form).to_contain_text("You run 0 of your 5 servers.")
        await expect(form).not_to_contain_text("GPUs")
        # Forge a CPU count beyond the range, as a hand-made POST would (the browser itself would
        # not submit a number field above its max).
        await page.evaluate(
            """() => {
                const cpu = document.getElementById('jupyterlab--cpu');
                cpu.removeAttribute('max');
                cpu.value = '97';
            }"""
        )
        async with page.expect_response(lambda r: r.request.method == "POST") as posted:
            await page.get_by_role("button", name="Start").click()
        # JupyterHub 6 answers a refused form with its status; 5 with 200 and the form again.
        assert (await posted.value).status == (400 if hub.rest6 else 200)
        refusal = "cpu: '97' is not allowed; allowed: 1 to 96 in steps of 1"
        # The resolver's message alone on both versions (JupyterHub 5 shows str() of the error).
        await expect(page.locator(".spawn-error-msg")).to_have_text(f"Error: {refusal}")
        await expect(page.locator(".einfra-form")).to_be_visible()  # the form, shown again
    finally:
        await page.close()
    assert hub.server("cleo") is None


# --- prices and GPU availability on the form (issue 13) ----------------------------------------

HUB_PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "profiles" / "hub")


def server_figure(cpus: int, gib: int, gpu: str | None = None, count: int = 0) -> str:
    """The server's hourly cost of a choice: the usage report's rule (einfra_spawner.pricing)."""
    amount = hourly_cost(
        HUB_PROFILES.instance.prices,
        cpu_millicores=cpus * 1000,
        memory_bytes=gib * 2**30,
        gpu=gpu,
        gpu_count=count,
    )
    return f"Hourly cost of this choice: {money_text(amount, 'CZK')}"


async def test_the_cost_line_follows_the_choice_with_the_servers_figures(hub: Hub, browser: Browser) -> None:
    hub.join_group("ines", "gpu")
    page = await log_in(browser, hub, "ines")
    try:
        await page.goto(f"{hub.url}/hub/spawn")
        lab = page.locator("#einfra-profile-jupyterlab")
        cost = lab.locator("[data-einfra-cost]")
        await expect(cost).to_have_text(server_figure(2, 8))  # the defaults
        await page.fill("#jupyterlab--cpu", "4")
        await page.fill("#jupyterlab--memory", "16")
        await page.check("input[id='jupyterlab--gpu:a40']")
        await page.select_option("#jupyterlab--gpu_count", "2")
        await expect(cost).to_have_text(server_figure(4, 16, "a40", 2))
        # "Number of GPUs" follows the chosen type's bound: 2 for an A40, 4 for a MIG slice.
        await expect(page.locator("#jupyterlab--gpu_count option[value='3']")).to_be_disabled()
        await page.check("input[id='jupyterlab--gpu:mig-1g.10gb']")
        await expect(page.locator("#jupyterlab--gpu_count option[value='3']")).to_be_enabled()
        await page.select_option("#jupyterlab--gpu_count", "3")
        await page.fill("#jupyterlab--cpu", "96")
        await page.fill("#jupyterlab--memory", "1024")
        await expect(cost).to_have_text(server_figure(96, 1024, "mig-1g.10gb", 3))
        await page.check("input[id='jupyterlab--gpu:none']")
        await expect(cost).to_have_text(server_figure(96, 1024))
        # The other profile's selects carry their prices the same way.
        await page.check("#profile\\:rstudio")
        await page.select_option("#rstudio--cpu", "16")
        await page.select_option("#rstudio--memory", "64Gi")
        await expect(page.locator("#einfra-profile-rstudio [data-einfra-cost]")).to_have_text(
            server_figure(16, 64)
        )
    finally:
        await page.close()


async def test_without_javascript_each_choice_still_shows_its_price(hub: Hub, browser: Browser) -> None:
    hub.join_group("jon", "gpu")
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    try:
        page.set_default_timeout(30_000)
        await page.goto(f"{hub.url}/hub/login")
        await page.fill("#username_input", "jon")
        await page.fill("#password_input", DEMO_PASSWORD)
        await page.click("#login_submit")
        await page.wait_for_url(lambda url: "/hub/login" not in url)
        await page.goto(f"{hub.url}/hub/spawn")
        form = page.locator(".einfra-form")
        await expect(form).to_contain_text("NVIDIA A40 (up to 2, 2 of 2 free, 38.00 CZK per GPU-hour)")
        await expect(form).to_contain_text("0.35 CZK per CPU-hour")
        await expect(form).to_contain_text("0.04 CZK per GiB-hour")
        await expect(page.locator("#rstudio--cpu option[value='4']")).to_have_text("4 CPUs (1.40 CZK/h)")
        # The total would go stale without the script: it stays hidden.
        await expect(page.locator("#einfra-profile-jupyterlab [data-einfra-cost]")).to_be_hidden()
    finally:
        await context.close()


async def test_gpu_types_the_cluster_lacks_are_disabled_and_busy_ones_are_not(
    hub: Hub, browser: Browser, artifacts: Path
) -> None:
    # The demo's local backend has 2 A40s and 7 MIG slices, and no other GPU type.
    for user in ("kai", "lena"):
        hub.join_group(user, "gpu")
    holding = hub.spawn("kai", "holds-a40s", {"gpu": "a40", "gpu_count": 2})
    assert holding.status in (201, 202), holding.text
    page = await log_in(browser, hub, "lena")
    try:
        await page.goto(f"{hub.url}/hub/spawn")
        h100 = page.locator("input[id='jupyterlab--gpu:h100']")
        await expect(h100).to_be_disabled()
        await expect(page.locator("label[for='jupyterlab--gpu:h100']")).to_have_text(
            "NVIDIA H100 (none on this cluster, 120.00 CZK per GPU-hour)"
        )
        await expect(page.locator("input[id='jupyterlab--gpu:a10']")).to_be_disabled()
        # Busy, not absent: still selectable; the backend's fail-fast message explains a start.
        a40 = page.locator("input[id='jupyterlab--gpu:a40']")
        await expect(a40).to_be_enabled()
        await expect(page.locator("label[for='jupyterlab--gpu:a40']")).to_have_text(
            "NVIDIA A40 (up to 2, 0 of 2 free, 38.00 CZK per GPU-hour)"
        )
        await expect(page.locator("label[for='jupyterlab--gpu:mig-1g.10gb']")).to_contain_text("up to 4, ")
        await page.screenshot(path=str(artifacts / "form-gpu-availability.png"), full_page=True)
    finally:
        await page.close()
        hub.stop_server("kai", "holds-a40s")


ODD_PRICES = {
    "instance.yaml": """
name: odd
display_name: Odd prices
gpu_types:
  a40: {display_name: A40, resource: nvidia.com/gpu}
  a100: {display_name: A100, resource: nvidia.com/gpu}
prices:
  currency: EUR
  cpu_hour: "0.125"
  memory_gib_hour: "0.005"
  gpu_hour: {a40: "0.015", a100: "1.234567"}
""",
    "lab.yaml": """
slug: lab
display_name: Lab
image: quay.io/a/b:1
cpu: {min: 0.5, max: 8, step: 0.25, default: 1}
memory: {min: 512Mi, max: 8Gi, step: 256Mi, default: 1Gi}
gpu: [none, {id: a40, max_count: 3}, {id: a100, max_count: 2, cpu: 3, memory: 5Gi}]
""",
}


async def test_the_scripts_cost_is_the_servers_to_the_cent(browser: Browser) -> None:
    """Prices with fractions of a cent (0.125 per CPU-hour, 0.005 per GiB-hour...): the script's
    exact sum, rounded half to even, equals the server's figure for every choice tried. The form
    is rendered by the server's code and opened as a page of its own (no hub needed)."""
    profiles = parse_profile_set(ODD_PRICES, source="test")
    user = UserContext(name="u")
    page = await browser.new_page()
    try:
        await page.set_content(form_template().render(form=build_form(profiles, user)))
        cost = page.locator("#einfra-profile-lab [data-einfra-cost]")
        choices = random.Random(13)
        for _ in range(12):
            cpu = str(Decimal("0.5") + Decimal("0.25") * choices.randint(0, 30))
            memory = str(512 + 256 * choices.randint(0, 30))  # MiB, the field's unit
            gpu = choices.choice(["none", "a40", "a100"])
            count = str(choices.randint(1, 2))
            await page.fill("#lab--cpu", cpu)
            await page.fill("#lab--memory", memory)
            await page.check(f"input[id='lab--gpu:{gpu}']")
            await page.select_option("#lab--gpu_count", count)
            posted = {"profile": ["lab"], "lab--cpu": [cpu], "lab--memory": [memory], "lab--gpu": [gpu]}
            posted["lab--gpu_count"] = [count]
            options = resolve_options(profiles, user, request_from_form(posted, profiles, user))
            amount = hourly_cost(
                profiles.instance.prices,
                cpu_millicores=options.cpu_limit,
                memory_bytes=options.memory_limit,
                gpu=options.gpu.id if options.gpu else None,
                gpu_count=options.gpu.count if options.gpu else 0,
            )
            await expect(cost).to_have_text(f"Hourly cost of this choice: {money_text(amount, 'EUR')}")
    finally:
        await page.close()


async def test_a_type_that_disappears_while_the_page_is_open_is_disabled_unless_chosen(
    hub: Hub, browser: Browser
) -> None:
    """The script's refresh: figures saying a type is gone disable it in place, except the type
    the user has already chosen (their choice is not taken away under them; a start explains)."""
    hub.join_group("mona", "gpu")
    page = await log_in(browser, hub, "mona")
    try:
        await page.goto(f"{hub.url}/hub/spawn")
        a40 = page.locator("input[id='jupyterlab--gpu:a40']")
        mig = page.locator("input[id='jupyterlab--gpu:mig-1g.10gb']")
        await expect(a40).to_be_enabled()
        await mig.check()
        gone = {"free": 0, "total": 0, "note": "none on this cluster"}
        body = json.dumps({"gpus": {"a40": gone, "mig-1g.10gb": gone}})

        async def figures(route: Route) -> None:
            if route.request.resource_type == "fetch":
                await route.fulfill(status=200, content_type="application/json", body=body)
            else:
                await route.continue_()

        await page.route("**/*", figures)
        assert await page.evaluate("window.einfraRefreshGpus()") is True
        await expect(a40).to_be_disabled()
        await expect(page.locator("label[for='jupyterlab--gpu:a40']")).to_contain_text("none on this cluster")
        await expect(mig).to_be_enabled()
        await expect(mig).to_be_checked()
    finally:
        await page.close()
