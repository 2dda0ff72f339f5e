"""In a real headless Chromium: log in, see the form for your groups, start, land in JupyterLab.

Debian's ``/usr/bin/chromium`` driven by Playwright (``playwright install`` cannot download its
own browser here). Screenshots of the form, the progress page (when the start is slow enough to
catch it) and JupyterLab go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect
from playwright.async_api import Error as PlaywrightError

from einfra_spawner.demo.auth import DEMO_PASSWORD

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
        # ada is in gpu, meta and projects: every GPU type and both extra mounts are offered.
        await expect(page.get_by_role("radio", name="JupyterLab", exact=True)).to_be_checked()
        await expect(page.get_by_role("radio", name="RStudio", exact=True)).not_to_be_checked()
        a40 = page.locator("label[for='jupyterlab--gpu:a40']")
        await expect(a40).to_have_text("NVIDIA A40 (up to 2, 2 of 2 free)")
        await expect(page.get_by_label("Project directories").first).to_be_checked()
        await expect(page.get_by_label("MetaCentrum storage (sshfs)").first).not_to_be_checked()
        reset = page.locator("#jupyterlab--home")
        await expect(reset).not_to_be_checked()
        await expect(page.locator(".einfra-form")).to_contain_text(
            "Images do not apply on this hub (its servers run as local processes)."
        )
        await page.screenshot(path=str(artifacts / "form.png"), full_page=True)

        await page.select_option("#jupyterlab--cpu", "4")
        await page.select_option("#jupyterlab--memory", "16Gi")
        await page.check("input[id='jupyterlab--gpu:mig-1g.10gb']")
        await page.check("input[id='jupyterlab--mounts:metacentrum']")
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
        "mounts": ["metacentrum", "projects"],
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
        # Forge a CPU count the form never offered, as a hand-made POST would.
        await page.evaluate(
            """() => {
                const cpu = document.getElementById('jupyterlab--cpu');
                cpu.add(new Option('64 CPUs', '64', true, true));
            }"""
        )
        async with page.expect_response(lambda r: r.request.method == "POST") as posted:
            await page.get_by_role("button", name="Start").click()
        # JupyterHub 6 answers a refused form with its status; 5 with 200 and the form again.
        assert (await posted.value).status == (400 if hub.rest6 else 200)
        refusal = "cpu: '64' is not allowed; allowed: 1, 2, 4, 8, 16, 32"
        if hub.rest6:
            await expect(page.locator(".spawn-error-msg")).to_have_text(f"Error: {refusal}")
        else:  # JupyterHub 5 shows str() of the error: "Error: HTTP 400: options (<message>)"
            await expect(page.locator(".spawn-error-msg")).to_contain_text(refusal)
        await expect(page.locator(".einfra-form")).to_be_visible()  # the form, shown again
    finally:
        await page.close()
    assert hub.server("cleo") is None
