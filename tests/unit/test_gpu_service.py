"""The GPU figures service (einfra_spawner.gpu_service) and how configure() registers it.

The service runs for real on a loopback port and identifies callers with a small fake of the
hub's API (``GET /hub/api/user`` for a token, ``POST /hub/api/oauth2/token`` for an OAuth code),
through JupyterHub's own HubOAuth: what these tests check is our handler's rule and answers, and
that the OAuth exchange and the cookie it leaves work with the installed JupyterHub. The real hub
is in tests/e2e/test_gpu_service.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import List
from traitlets.config import Application, Config

from einfra_spawner import hub as hub_module
from einfra_spawner.gpu_service import (
    Figures,
    GpuService,
    GpuServiceServer,
    HubLink,
    is_ours,
    start_gpu_service,
)
from einfra_spawner.hub import configure
from einfra_spawner.runtime import HubRuntime, use_runtime

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
SCOPE = "access:services!service=gpus"
ADA = {"kind": "user", "name": "ada", "groups": ["gpu"], "scopes": [SCOPE, "read:users:name!user=ada"]}
TOKENS: dict[str, dict[str, Any]] = {
    "ada-token": ADA,
    "ben-no-access": {"kind": "user", "name": "ben", "groups": [], "scopes": ["read:users:name!user=ben"]},
    "a-service": {"kind": "service", "name": "culler", "scopes": [SCOPE]},
    "from-oauth": ADA,  # what the fake hub hands out for an OAuth code
}
A40: Figures = {"a40": {"free": 1, "total": 2, "note": "1 of 2 free"}}


class _UserAPI(web.RequestHandler):
    def get(self) -> None:
        token = self.request.headers.get("Authorization", "").removeprefix("token ")
        model = TOKENS.get(token)
        if model is None:
            raise web.HTTPError(403)
        self.finish(model)


class _TokenAPI(web.RequestHandler):
    def post(self) -> None:
        self.settings["codes"].append(self.get_body_argument("code"))
        self.finish({"access_token": "from-oauth", "token_type": "Bearer"})


@dataclass
class Figuring:
    """The hub's side: records for whom figures were asked; answers, returns None or hangs."""

    answer: Figures | None = field(default_factory=lambda: A40)
    hang: bool = False
    asked: list[str] = field(default_factory=list)

    async def __call__(self, name: str) -> Figures | None:
        self.asked.append(name)
        if self.hang:
            await asyncio.Event().wait()
        return self.answer


@dataclass
class Setup:
    service: GpuServiceServer
    figuring: Figuring
    codes: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    async def get(self, path: str, **headers: str) -> HTTPResponse:
        request = HTTPRequest(self.base + path, headers=headers, follow_redirects=False)
        try:
            return await AsyncHTTPClient().fetch(request)
        except HTTPClientError as error:
            assert error.response is not None
            return error.response


@pytest.fixture(autouse=True)
def runtime() -> Iterator[HubRuntime]:
    fresh = HubRuntime()
    previous = use_runtime(fresh)
    yield fresh
    use_runtime(previous)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    codes: list[str] = []
    fake_hub = HTTPServer(
        web.Application([(r"/hub/api/user", _UserAPI), (r"/hub/api/oauth2/token", _TokenAPI)], codes=codes)
    )
    sockets = bind_sockets(0, "127.0.0.1")
    fake_hub.add_sockets(sockets)
    hub_port = sockets[0].getsockname()[1]
    service = start_gpu_service(GpuService(timeout=0.5))
    figuring = Figuring()
    service.attach(
        HubLink(
            api_url=f"http://127.0.0.1:{hub_port}/hub/api",
            hub_prefix="/hub/",
            base_url="/",
            figures_for=figuring,
        )
    )
    try:
        yield Setup(service, figuring, codes)
    finally:
        await service.close()
        fake_hub.stop()
        await fake_hub.close_all_connections()


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "GPUs"},
        {"name": "gpus/x"},
        {"name": "-gpus"},
        {"name": ""},
        {"port": 70000},
        {"port": -1},
        {"url": "hub:8082"},
        {"url": "http://hub:8082/services/gpus"},
        {"url": "http://hub:8082\nX: y"},
        {"timeout": 0},
    ],
)
def test_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="GpuService"):
        GpuService(**bad)


def test_the_service_entry_is_an_external_service_of_the_hub() -> None:
    settings = GpuService(name="figures", ip="0.0.0.0", port=8082, url="http://hub:8082")
    assert settings.scope == "access:services!service=figures"
    assert settings.spec("http://hub:8082", "t") == {
        "name": "figures",
        "url": "http://hub:8082",
        "api_token": "t",
        "oauth_no_confirm": True,
        "display": False,
        "info": {"einfra-spawner": "GPU figures for the options form"},
    }
    assert is_ours(settings.spec("http://hub:8082", "t"))
    assert not is_ours({"name": "figures", "url": "http://hub:8082"})


# --- the handler ----------------------------------------------------------------------------------


async def test_a_users_token_gets_that_users_figures(setup: Setup) -> None:
    answer = await setup.get("/services/gpus/gpus", Authorization="token ada-token")
    assert answer.code == 200
    assert json.loads(answer.body) == {"gpus": A40}
    assert answer.headers["Cache-Control"] == "no-store"
    assert setup.figuring.asked == ["ada"]


async def test_the_route_works_under_any_base_url(setup: Setup) -> None:
    answer = await setup.get("/jhub/services/gpus/gpus", Authorization="token ada-token")
    assert answer.code == 200 and setup.figuring.asked == ["ada"]


async def test_an_anonymous_browser_is_sent_to_the_hubs_oauth(setup: Setup) -> None:
    answer = await setup.get("/services/gpus/gpus")
    assert answer.code == 302
    target = urlparse(answer.headers["Location"])
    assert target.path == "/hub/api/oauth2/authorize"
    query = parse_qs(target.query)
    assert query["client_id"] == ["service-gpus"]
    assert query["redirect_uri"] == ["/services/gpus/oauth_callback"]
    assert query["state"]
    assert "service-gpus-oauth-state" in answer.headers["Set-Cookie"]
    assert setup.figuring.asked == []


@pytest.mark.parametrize(
    ("token", "message"),
    [("a-service", "Only users have GPU figures"), ("ben-no-access", "access:services!service=gpus")],
)
async def test_services_and_tokens_without_access_are_refused(setup: Setup, token: str, message: str) -> None:
    answer = await setup.get("/services/gpus/gpus", Authorization=f"token {token}")
    assert answer.code == 403
    assert message in json.loads(answer.body)["message"]
    assert setup.figuring.asked == []


async def test_an_unknown_token_is_anonymous(setup: Setup) -> None:
    answer = await setup.get("/services/gpus/gpus", Authorization="token forged")
    assert answer.code == 302 and setup.figuring.asked == []


async def test_a_hub_without_einfra_spawner_for_the_user_answers_404(setup: Setup) -> None:
    setup.figuring.answer = None
    answer = await setup.get("/services/gpus/gpus", Authorization="token ada-token")
    assert answer.code == 404 and setup.figuring.asked == ["ada"]


async def test_figures_that_do_not_come_are_unavailable_not_a_hang(setup: Setup) -> None:
    setup.figuring.hang = True
    answer = await setup.get("/services/gpus/gpus", Authorization="token ada-token")
    assert answer.code == 503
    assert json.loads(answer.body)["message"] == "GPU figures are unavailable right now."
    assert setup.figuring.asked == ["ada"]  # asked, then given up on


async def test_before_the_hub_links_it_the_service_answers_503() -> None:
    service = start_gpu_service(GpuService())
    try:
        assert service.figures_path() == ""  # the form offers no refresh yet
        client = AsyncHTTPClient()
        with pytest.raises(HTTPClientError) as raised:
            await client.fetch(f"http://127.0.0.1:{service.port}/services/gpus/gpus")
        assert raised.value.code == 503
        root = await client.fetch(f"http://127.0.0.1:{service.port}/services/gpus/")
        assert root.code == 200  # JupyterHub's health check needs no identity
    finally:
        await service.close()


async def test_the_oauth_exchange_leaves_a_cookie_that_the_forms_script_can_use(setup: Setup) -> None:
    start = await setup.get("/services/gpus/gpus")
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    cookies = SimpleCookie()
    for header in start.headers.get_list("Set-Cookie"):
        cookies.load(header)
    jar = "; ".join(f"{k}={v.value}" for k, v in cookies.items())
    # The hub approved and sent the browser back with a code.
    back = await setup.get(f"/services/gpus/oauth_callback?code=c0de&state={state}", Cookie=jar)
    assert back.code == 302 and back.headers["Location"] == "/services/gpus/gpus"
    assert setup.codes == ["c0de"]
    for header in back.headers.get_list("Set-Cookie"):
        cookies.load(header)
    assert "service-gpus" in cookies
    jar = f"service-gpus={cookies['service-gpus'].value}"
    # As the form's fetch() sends it: cookie-authenticated, no XSRF token of this service.
    answer = await setup.get("/services/gpus/gpus", Cookie=jar, **{"Sec-Fetch-Mode": "cors"})
    assert answer.code == 200 and json.loads(answer.body) == {"gpus": A40}
    assert setup.figuring.asked == ["ada"]


async def test_a_closed_service_no_longer_listens() -> None:
    service = start_gpu_service(GpuService())
    port = service.port
    await service.close()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


# --- registration by configure() ------------------------------------------------------------------


def test_configure_uses_no_deprecated_hook_and_registers_a_known_address() -> None:
    c = Config()
    c.JupyterHub.services = [{"name": "culler", "api_token": "x"}]
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "read:groups"]}]
    settings = GpuService(ip="0.0.0.0", port=8082, url="http://hub:8082", api_token="t")
    configure(c, PROFILES / "hub", gpu_service=settings)
    configure(c, PROFILES / "hub", gpu_service=settings)  # twice: still one entry, one scope
    assert "extra_handlers" not in c.JupyterHub
    ours = settings.spec("http://hub:8082", "t")
    assert c.JupyterHub.services == [{"name": "culler", "api_token": "x"}, ours]
    assert c.JupyterHub.load_roles == [{"name": "user", "scopes": ["self", "read:groups", SCOPE]}]


def test_a_tool_without_an_address_registers_nothing() -> None:
    c = Config()
    configure(c, PROFILES / "hub")  # no running loop, port 0: nothing is bound, nothing to route to
    assert "services" not in c.JupyterHub and "load_roles" not in c.JupyterHub


def test_the_user_role_gets_the_scope_and_loses_it_with_the_service() -> None:
    spec = GpuService().spec("http://127.0.0.1:1", "t")
    role = {"name": "user", "scopes": ["self"]}
    services, roles = hub_module._registered([], [role], spec)
    assert services == [spec] and roles == [{"name": "user", "scopes": ["self", SCOPE]}]
    assert role == {"name": "user", "scopes": ["self"]}  # copied, not changed
    assert hub_module._registered([], [], spec)[1] == [{"name": "user", "scopes": ["self", SCOPE]}]
    # Configured again without the service: ours goes, with its scope; the rest stays.
    other = {"name": "culler", "api_token": "x"}
    assert hub_module._registered([other, spec], roles, None) == ([other], [role])
    # Renamed: one entry, the new scope only.
    renamed = GpuService(name="figures").spec("http://127.0.0.1:1", "t")
    services, roles = hub_module._registered([spec], roles, renamed)
    assert services == [renamed]
    assert roles == [{"name": "user", "scopes": ["self", "access:services!service=figures"]}]


class FakeHub(Application):
    services: List[Any] = List()
    load_roles: List[Any] = List()


async def test_a_starting_hub_gets_the_service_even_if_its_file_assigns_services_later(
    runtime: HubRuntime,
) -> None:
    app = FakeHub.instance()
    try:
        c = Config()
        configure(c, PROFILES / "hub")
        service = runtime.gpu_service
        assert service is not None and service.port > 0
        spec = GpuService().spec(service.url, service.api_token)
        assert service.url == f"http://127.0.0.1:{service.port}"
        assert app.services == [spec]
        assert app.load_roles == [{"name": "user", "scopes": ["self", SCOPE]}]
        # Later in the file: c.JupyterHub.services = [...] / load_roles = [...], as JupyterHub
        # applies them once the file has run.
        app.services = [{"name": "e2e-tests", "api_token": "x"}]
        app.load_roles = [{"name": "e2e-tests", "scopes": ["admin:users"], "services": ["e2e-tests"]}]
        assert app.services == [{"name": "e2e-tests", "api_token": "x"}, spec]
        assert app.load_roles[-1] == {"name": "user", "scopes": ["self", SCOPE]}
        # Configured again without the service: it stops, and the hub routes nothing to it.
        configure(c, PROFILES / "hub", gpu_service=None)
        assert runtime.gpu_service is None
        assert app.services == [{"name": "e2e-tests", "api_token": "x"}]
        # The user role keeps JupyterHub's default scope only.
        assert app.load_roles[-1] == {"name": "user", "scopes": ["self"]}
        await asyncio.sleep(0.1)  # the close of the first one, and the hub-start callbacks (no hub: no link)
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", service.port), 5):
            pass
    finally:
        FakeHub.clear_instance()
        await runtime.close()
    assert runtime.gpu_service is None


async def test_an_address_in_use_leaves_the_hub_running_without_the_service(
    runtime: HubRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        c = Config()
        profiles = configure(c, PROFILES / "hub", gpu_service=GpuService(port=port))
        await asyncio.sleep(0)
    assert profiles.instance.name  # the hub goes on
    assert runtime.gpu_service is None
    assert "services" not in c.JupyterHub  # no route to a service that is not there
    assert "The GPU figures service cannot listen" in caplog.text
    await runtime.close()


# --- the form's script ----------------------------------------------------------------------------


@pytest.mark.parametrize(("base_url", "same_origin"), [("/", True), ("/jhub/", True), ("/", False)])
async def test_the_form_fetches_from_the_service_of_its_hub(
    runtime: HubRuntime, base_url: str, same_origin: bool
) -> None:
    from einfra_spawner.backend import GpuCapacity

    from .test_spawner import FakeBackend, make_spawner

    backend = FakeBackend()
    backend.capacity = {"a40": GpuCapacity("a40", 1, 2)}
    runtime.set_backend("fake", backend)
    service = start_gpu_service(GpuService())
    runtime.gpu_service = service
    try:
        assert "/services/gpus/gpus" not in await make_spawner("gpu").get_options_form()  # not linked yet
        link = HubLink(
            api_url="http://127.0.0.1:1/hub/api",
            hub_prefix=f"{base_url}hub/",
            base_url=base_url,
            same_origin=same_origin,
            figures_for=Figuring(),
        )
        service.attach(link)
        html = await make_spawner("gpu").get_options_form()
        # With subdomain_host the service has an origin of its own: the hub's page cannot fetch it.
        assert (f'"{base_url}services/gpus/gpus"' in html) is same_origin
        assert "1 of 2 free" in html  # the figures of the moment the form was built
    finally:
        await runtime.close()


@pytest.mark.parametrize(
    ("ip", "api_url", "expected"),
    [
        # Zero to JupyterHub: listens everywhere, connect URL through the hub's Service.
        ("0.0.0.0", "http://hub:8081/hub/api", "http://127.0.0.1:8081/hub/api"),
        ("::", "http://hub:8081/hub/api", "http://[::1]:8081/hub/api"),
        ("127.0.0.1", "http://127.0.0.1:8081/hub/api", "http://127.0.0.1:8081/hub/api"),
    ],
)
def test_the_service_asks_the_hubs_api_without_leaving_the_hubs_machine(
    ip: str, api_url: str, expected: str
) -> None:
    from types import SimpleNamespace

    hub = SimpleNamespace(proto="http", ip=ip, port=8081, base_url="/hub/", api_url=api_url)
    assert hub_module._hub_api_url(hub) == expected


async def test_a_service_bound_to_every_interface_is_routed_to_on_the_loopback() -> None:
    service = start_gpu_service(GpuService(ip="0.0.0.0"))
    try:
        assert service.url == f"http://127.0.0.1:{service.port}"
    finally:
        await service.close()


async def test_the_hub_gives_the_figures_of_the_users_own_spawner(runtime: HubRuntime) -> None:
    from types import SimpleNamespace

    from einfra_spawner.backend import GpuCapacity

    from .test_spawner import FakeBackend, make_spawner

    backend = FakeBackend()
    backend.capacity = {"a40": GpuCapacity("a40", 1, 2)}
    runtime.set_backend("fake", backend)
    users = {
        "grace": SimpleNamespace(spawner=make_spawner("gpu", name="grace")),
        "kube": SimpleNamespace(spawner=object()),  # a hub whose spawner is another
    }
    hub = SimpleNamespace(proto="http", ip="127.0.0.1", port=8081, base_url="/jhub/hub/")
    app = SimpleNamespace(users=users, hub=hub, base_url="/jhub/", subdomain_host="")
    hub.api_url = "http://127.0.0.1:8081/jhub/hub/api"
    link = hub_module._hub_link(app)
    assert (link.api_url, link.hub_prefix, link.base_url, link.same_origin) == (
        "http://127.0.0.1:8081/jhub/hub/api",
        "/jhub/hub/",
        "/jhub/",
        True,
    )
    assert await link.figures_for("grace") == {"a40": {"free": 1, "total": 2, "note": "1 of 2 free"}}
    assert backend.capacity_asked  # computed by the backend, for grace's GPU types
    assert await link.figures_for("kube") is None
    assert await link.figures_for("nobody") is None
