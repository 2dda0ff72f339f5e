"""End to end: the GPU figures service in a real JupyterHub (5.3 or 6.x) behind its real proxy.

The demo's configuration (einfra_spawner/demo/jupyterhub_config.py) calls
``einfra_spawner.configure``, which starts the service in the hub's process and registers it; the
tests' own configuration assigns ``JupyterHub.services`` and ``load_roles`` after that call, as an
operator's file may. Checked: the hub's log has no deprecation warning; a logged-in user (API
token, cookies after the OAuth exchange, a real browser's ``fetch`` as the form's script makes it)
gets their figures, JSON; anonymous callers are sent to log in and services are refused; and a
hub whose service cannot listen still starts and shows the form, with the figures of the moment.

Run it with both environments: ``.venv`` (JupyterHub 6) and ``.venv-floors`` (JupyterHub 5.3).
"""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser

from .conftest import Hub, Response
from .test_browser import browser, chromium, log_in  # noqa: F401 - fixtures shared with the browser tests

pytestmark = pytest.mark.e2e

FIGURES = "/services/gpus/gpus"
A40 = {"free": 2, "total": 2, "note": "2 of 2 free"}  # the demo's pretend inventory, nothing running
# The tests' service may also make user tokens and read the hub's list of services.
MAKES_TOKENS = 'c.JupyterHub.load_roles[0]["scopes"] += ["tokens", "list:services", "read:services"]\n'


@pytest.fixture(scope="module")
def gpu_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    running = Hub(root=tmp_path_factory.mktemp("gpu-hub"), extra_config=MAKES_TOKENS)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def hub_without_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub configured again with the service on an address another process holds."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = (
            "from einfra_spawner import configure\n"
            "from einfra_spawner.gpu_service import GpuService\n"
            f"configure(c, c.EInfraSpawner.profiles_dir, gpu_service=GpuService(port={port}))\n"
        )
        running = Hub(root=tmp_path_factory.mktemp("no-gpu-service"), extra_config=MAKES_TOKENS + config)
        try:
            running.start()
            yield running
        finally:
            running.stop()


def user_token(hub: Hub, user: str) -> str:
    made = hub.api("POST", f"/users/{user}/tokens", {"note": "e2e gpu figures", "expires_in": 600})
    assert made.status == 201, made.text
    token: str = made.body["token"]
    return token


def anonymous(hub: Hub, path: str, *, follow: bool) -> tuple[int, str, str]:
    """Status, Location (when not followed) or final URL, and body of a request without credentials."""

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(Stay)
    try:
        with opener.open(hub.url + path, timeout=30) as answer:
            return answer.status, answer.url, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", ""), error.read().decode()


def test_the_hub_freezes_its_start_up_heap_once_started(gpu_hub: Hub) -> None:
    # configure()'s default in a running JupyterHub (docs/benchmarks.md: the ablation keeps it).
    log = gpu_hub.log_path.read_text(errors="replace")
    frozen = re.search(r"froze the hub's start-up heap \((\d+) objects\)", log)
    assert frozen is not None, log[-3000:]
    assert int(frozen.group(1)) > 10_000  # JupyterHub, its libraries and ours
    started = log.index("JupyterHub is now running")
    assert log.index(frozen.group(0)) > started  # once the hub had started, not before


def test_the_hub_starts_without_deprecation_warnings(gpu_hub: Hub) -> None:
    log = gpu_hub.log_path.read_text(errors="replace")
    assert "extra_handlers" not in log
    assert [line for line in log.splitlines() if "deprecat" in line.lower()] == []
    assert re.search(r"Adding external service gpus at http://127\.0\.0\.1:\d+", log), log[-3000:]
    assert "Cannot connect to external service" not in log
    # Registered even though the tests' configuration assigns services and roles afterwards.
    services = gpu_hub.api("GET", "/services")
    assert services.status == 200, services.text
    assert "gpus" in services.body and "e2e-tests" in services.body


def test_a_users_token_gets_their_figures_and_only_users_do(gpu_hub: Hub) -> None:
    figures = gpu_hub.request("GET", FIGURES, token=user_token(gpu_hub, "ada"))
    assert figures.status == 200, figures.text
    assert figures.body["gpus"]["a40"] == A40
    assert figures.body["gpus"]["mig-1g.10gb"]["total"] == 7
    # ben's groups unlock no GPU type: none of the GPU-group types is shown to him.
    ben = gpu_hub.request("GET", FIGURES, token=user_token(gpu_hub, "ben"))
    assert ben.status == 200 and "a40" not in ben.body["gpus"], ben.text
    # The tests' own service token: a service, not a user.
    service = gpu_hub.request("GET", FIGURES)
    assert service.status == 403 and "Only users" in service.body["message"], service.text


def test_anonymous_callers_are_sent_to_log_in(gpu_hub: Hub) -> None:
    status, location, _ = anonymous(gpu_hub, FIGURES, follow=False)
    assert status == 302
    target = urllib.parse.urlparse(location)
    assert target.path == "/hub/api/oauth2/authorize"
    assert urllib.parse.parse_qs(target.query)["client_id"] == ["service-gpus"]
    status, final, body = anonymous(gpu_hub, FIGURES, follow=True)
    assert urllib.parse.urlparse(final).path == "/hub/login"
    assert '"gpus"' not in body and "a40" not in body


def test_a_logged_in_browser_session_gets_the_figures_through_oauth(gpu_hub: Hub) -> None:
    session = gpu_hub.log_in("grace")
    figures: Response = session.request("GET", FIGURES)  # follows the OAuth redirects
    assert figures.status == 200, figures.text
    assert '"a40": {"free": 2, "total": 2, "note": "2 of 2 free"}' in figures.text
    again = session.request("GET", FIGURES)  # now with the service's own cookie
    assert again.status == 200 and again.text == figures.text


async def test_the_forms_script_fetches_the_figures_in_a_browser(
    gpu_hub: Hub,
    browser: Browser,  # noqa: F811 - the fixture imported above
) -> None:
    page = await log_in(browser, gpu_hub, "grace")
    await page.goto(f"{gpu_hub.url}/hub/spawn/grace")
    assert FIGURES in await page.content()  # the URL the form's script fetches
    # As the script does it: fetch() from the hub's page, cookies only, the OAuth exchange on the
    # first call (redirects followed by the browser), the service's cookie afterwards.
    fetch = f"fetch({FIGURES!r}, {{credentials: 'same-origin'}}).then(r => r.json())"
    for _ in range(2):
        figures = await page.evaluate(fetch)
        assert figures["gpus"]["a40"] == A40


def test_a_service_that_cannot_listen_leaves_the_hub_and_the_form_working(hub_without_service: Hub) -> None:
    hub = hub_without_service
    log = hub.log_path.read_text(errors="replace")
    assert "The GPU figures service cannot listen" in log
    assert "Adding external service gpus" not in log  # nothing routed to a service that is not there
    assert "gpus" not in hub.api("GET", "/services").body
    form = hub.log_in("ada").request("GET", "/hub/spawn/ada")
    assert form.status == 200, form.text
    assert "2 of 2 free" in form.text  # the figures of the moment the form was built
    assert FIGURES not in form.text  # and no script polling a service that is not there
    assert hub.request("GET", FIGURES, token=user_token(hub, "ada")).status == 404
