"""The GPU figures as a JupyterHub service: ``GET {base_url}services/gpus/gpus``.

Where it sits: :func:`einfra_spawner.configure` starts this small HTTP server inside the hub's
own process and registers it in ``JupyterHub.services`` as an *external* service (a ``url``, no
``command``), so the hub's proxy routes ``/services/gpus/`` to it and the hub is its OAuth
provider. The options form's script fetches the figures from it to refresh its "N of M free"
figures without reloading (the form works without it). The figures are those of the form: the
hub gives the service a function that asks the user's own spawner, with the shared backend and
its time-out, for the GPU types that user may see (``{"gpus": {"a40": {"free": 1, "total": 2,
"note": "1 of 2 free"}}}``).

Why a service in the hub's process rather than a hub-managed one (``command``) or the deprecated
``JupyterHub.extra_handlers``: JupyterHub asks for services to add HTTP endpoints; in its own
process the service shares the hub's backend (one Kubernetes watch of nodes and pods, not a
second one), its configuration and its profile folder, and cannot fail on its own: a managed
service that does not answer at start makes JupyterHub exit, and one that dies is restarted
with a fresh token. See ``docs/usage.md`` ("GPU figures").

Access: JupyterHub's rule for services. A caller is identified with the hub
(:class:`~jupyterhub.services.auth.HubOAuth`): an ``Authorization: token ...`` header, or the
service's own cookie set at the end of an OAuth exchange with the hub (a browser without it is
redirected to the hub's authorisation URL, which logs in if needed and comes back). A user whose
token grants ``access:services!service=gpus`` (:func:`einfra_spawner.configure` adds the scope to
the ``user`` role) gets their figures; services get 403.

The user is looked up asynchronously (``HubOAuth.get_user(sync=False)``) in ``prepare``: the
mixin's synchronous lookup blocks its thread while it asks the hub's API, which in the hub's
own process is the very event loop that must answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated, check_scopes
from tornado import web
from tornado.httpserver import HTTPServer

__all__ = [
    "Figures",
    "FiguresFor",
    "GpuService",
    "GpuServiceServer",
    "HubLink",
    "is_ours",
    "start_gpu_service",
]

#: ``{"a40": {"free": 1, "total": 2, "note": "1 of 2 free"}, ...}``.
Figures = Mapping[str, Mapping[str, "int | str"]]
#: The figures of the user of this name; ``None`` when the hub runs no EInfraSpawner for them.
FiguresFor = Callable[[str], Awaitable["Figures | None"]]

# A JupyterHub service name is used in URLs, OAuth client ids and scopes: keep it DNS-label-like.
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(?::[0-9]{1,5})?/?")


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuService:
    """Where the GPU figures service listens and how the hub's proxy reaches it.

    ``ip``/``port``: the address the server binds in the hub's process (port 0: a free port,
    chosen as the hub starts; fine when the proxy runs on the same machine). ``url``: how the
    proxy (and the hub, for its health checks) reach it, e.g. ``http://hub:8082`` on Zero to
    JupyterHub; by default ``http://{ip}:{port}``. ``api_token``: the service's token with the hub
    (a fresh random one per hub start when empty; set one to keep the hub's database from
    holding one per start). ``timeout``: seconds a request may take to compute the figures
    before it answers 503 (the spawner's own ``gpu_capacity_timeout`` bounds the backend first).
    """

    name: str = "gpus"
    ip: str = "127.0.0.1"
    port: int = 0
    url: str = ""
    api_token: str = ""
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"GpuService.name {self.name!r}: lowercase letters, digits and '-' (at most 63)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"GpuService.port {self.port}: 0 (any free port) to 65535")
        if self.url and not _URL.fullmatch(self.url):
            raise ValueError(f"GpuService.url {self.url!r}: http(s)://host[:port], without a path")
        if not self.timeout > 0:
            raise ValueError(f"GpuService.timeout {self.timeout}: more than 0 seconds")

    @property
    def scope(self) -> str:
        """The scope a user needs to use the service (JupyterHub's access scope of services)."""
        return f"access:services!service={self.name}"

    @property
    def client_id(self) -> str:
        """The service's OAuth client id (JupyterHub's default for a service)."""
        return f"service-{self.name}"

    def spec(self, url: str, api_token: str) -> dict[str, Any]:
        """The service's entry in ``JupyterHub.services``: an external service at ``url``, part of
        the hub (no OAuth confirmation page, not listed in the hub's Services menu), marked as
        ours (:func:`is_ours`)."""
        return {
            "name": self.name,
            "url": url,
            "api_token": api_token,
            "oauth_no_confirm": True,
            "display": False,
            "info": dict(_MARK),
        }


_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}  # noqa: S104 - what an address bound to all means here

#: In the ``info`` of the service's entry: which entry of ``JupyterHub.services`` is ours.
_MARK = {"einfra-spawner": "GPU figures for the options form"}


def is_ours(entry: object) -> bool:
    """Whether an entry of ``JupyterHub.services`` is a GPU figures service of this package."""
    return isinstance(entry, dict) and isinstance(entry.get("info"), dict) and entry["info"] == _MARK


@dataclass(frozen=True, slots=True, kw_only=True)
class HubLink:
    """What the service needs from the hub, known once the hub has read its configuration."""

    #: The hub's REST API as this process reaches it (``app.hub.api_url``).
    api_url: str
    #: The hub's own prefix (``/hub/`` under JupyterHub's ``base_url``).
    hub_prefix: str
    #: JupyterHub's ``base_url``: the service's prefix is ``{base_url}services/{name}/``.
    base_url: str
    #: Whether the service shares the hub's origin (not with ``subdomain_host``, where the form's
    #: script, on the hub's origin, could not send its cookies to the service's).
    same_origin: bool = True
    figures_for: FiguresFor


class GpuServiceServer:
    """The service's HTTP server, bound and serving; figures are given once :meth:`attach` has
    linked it to the hub (before that, requests get 503)."""

    def __init__(self, settings: GpuService, sockets: list[socket.socket], api_token: str) -> None:
        self.settings = settings
        self.api_token = api_token
        host, port = sockets[0].getsockname()[:2]
        self.port: int = port
        # Bound to every interface: the proxy on this machine reaches it on the loopback.
        shown = _LOOPBACK.get(host) or (f"[{host}]" if ":" in host else host)
        #: The URL registered with JupyterHub (the proxy's route target).
        self.url = settings.url.rstrip("/") or f"http://{shown}:{port}"
        self._state = _State(settings=settings, api_token=api_token)
        name = re.escape(settings.name)
        # Any base_url: it is known only once the configuration has been read in full.
        prefix = rf"/(?:.*/)?services/{name}"
        application = web.Application(
            [
                (rf"{prefix}/gpus", FiguresHandler, {"state": self._state}),
                (rf"{prefix}/oauth_callback", CallbackHandler, {"state": self._state}),
                (rf"{prefix}/?", RootHandler, {"state": self._state}),
            ],
            cookie_secret=secrets.token_bytes(32),  # cookies from before a restart need a new OAuth exchange
            log_function=_log_request,
        )
        self._server = HTTPServer(application, xheaders=True)
        self._server.add_sockets(sockets)

    @property
    def attached(self) -> bool:
        return self._state.link is not None

    def figures_path(self) -> str:
        """The figures' path on the hub's public address, for the form's script; ``""`` until
        the service is linked to the hub, or when it is not on the hub's origin."""
        link = self._state.link
        if link is None or not link.same_origin:
            return ""
        return f"{link.base_url.rstrip('/')}/services/{self.settings.name}/gpus"

    def attach(self, link: HubLink) -> None:
        """Link the service to the hub: where its API is and how to compute a user's figures."""
        self._state.link = link
        self._state.auth = None  # built again, for this hub, at the next request

    async def close(self) -> None:
        """Stop listening and finish the requests in progress (bounded)."""
        self._server.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.close_all_connections(), timeout=5)


def start_gpu_service(settings: GpuService) -> GpuServiceServer:
    """Bind ``settings.ip``/``settings.port`` now (so that the URL is known while the hub reads
    its configuration) and serve on the running event loop. Raises :class:`OSError` when the
    address cannot be bound."""
    family, *_, address = socket.getaddrinfo(
        settings.ip, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    # socket.create_server closes the socket when binding fails (tornado's bind_sockets does not).
    listening = socket.create_server(address[:2], family=family, backlog=128)
    listening.setblocking(False)
    token = settings.api_token or secrets.token_hex(32)
    return GpuServiceServer(settings, [listening], token)


# --- the handlers ----------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _State:
    settings: GpuService
    api_token: str
    link: HubLink | None = None
    auth: HubOAuth | None = None

    def hub_auth(self) -> HubOAuth | None:
        link = self.link
        if link is None:
            return None
        if self.auth is None:
            prefix = f"{link.base_url.rstrip('/')}/services/{self.settings.name}/"
            self.auth = HubOAuth(
                api_token=self.api_token,
                api_url=link.api_url,
                hub_prefix=link.hub_prefix,
                base_url=prefix,
                oauth_client_id=self.settings.client_id,
                oauth_redirect_uri=f"{prefix}oauth_callback",
                access_scopes={self.settings.scope},
            )
        return self.auth


class _Handler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]  # jupyterhub is untyped
    state: _State

    def initialize(self, state: _State) -> None:
        self.state = state

    async def prepare(self) -> None:
        auth = self.state.hub_auth()
        if auth is None:
            raise web.HTTPError(503, "The GPU figures service is starting; try again in a moment.")
        self.hub_auth = auth
        # See the module's docstring: never the mixin's synchronous lookup in the hub's process.
        model: dict[str, Any] | None = await auth.get_user(self, sync=False)
        self.current_user = model or None

    def check_xsrf_cookie(self) -> None:
        """No XSRF token for this read-only GET: the form's script runs on the hub's page and
        cannot know this service's token (JupyterHub asks for one on cookie-authenticated fetch
        requests). Nothing changes on a request; other origins cannot read the answer (no CORS
        headers); pages of the same origin can already read the same figures on the hub's form."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # JSON, as JupyterHub's API answers: the form's script and API clients read it.
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = error.log_message if isinstance(error, web.HTTPError) and error.log_message else None
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": status_code, "message": message or self._reason}))


class FiguresHandler(_Handler):
    """``GET``: the logged-in user's figures, ``{"gpus": {...}}``."""

    @web.authenticated  # anonymous: redirected to the hub's OAuth (GET)
    async def get(self) -> None:
        model: dict[str, Any] = self.current_user
        if model.get("kind", "user") != "user":
            raise web.HTTPError(403, "Only users have GPU figures: log in as a user.")
        if not check_scopes({self.state.settings.scope}, set(model.get("scopes", ()))):
            raise web.HTTPError(
                403, f"This token may not use the service (scope {self.state.settings.scope})."
            )
        link = self.state.link
        assert link is not None  # prepare() answered 503 otherwise
        try:
            figures = await asyncio.wait_for(link.figures_for(model["name"]), self.state.settings.timeout)
        except asyncio.TimeoutError:
            raise web.HTTPError(503, "GPU figures are unavailable right now.") from None
        if figures is None:
            raise web.HTTPError(404, "This hub does not run EInfraSpawner for this user.")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"gpus": figures}))


class CallbackHandler(_Handler, HubOAuthCallbackHandler):  # type: ignore[misc]
    """The end of the OAuth exchange: JupyterHub's handler, with the user looked up in
    ``prepare`` (its "already logged in" branch reads ``current_user``)."""


class RootHandler(_Handler):
    """``GET`` of the service's prefix (JupyterHub's health checks): where the figures are."""

    async def prepare(self) -> None:  # no identity needed
        return None

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"figures": "gpus"}))


_access_log = logging.getLogger("einfra_spawner.gpu_service")


def _log_request(handler: web.RequestHandler) -> None:
    # The hub's health check and the form's refreshes every 15 s would flood an INFO log.
    status = handler.get_status()
    level = logging.WARNING if status >= 500 else logging.DEBUG
    _access_log.log(
        level,
        "%d %s %s %.1fms",
        status,
        handler.request.method,
        urlparse(handler.request.uri or "").path,
        1000 * handler.request.request_time(),
    )
