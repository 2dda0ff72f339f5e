"""A real JupyterHub and a real proxy for the end-to-end tests, run as they are shipped.

One hub per test session: ``jupyterhub -f <config>`` in a subprocess, on free loopback ports,
with its database, homes and logs in a temporary folder. The config loads the demo's own
``einfra_spawner/demo/jupyterhub_config.py`` (the local backend, ``profiles/hub``, the demo
users and groups) and adds only ports, paths and a service token for the REST API.

The helpers speak the REST dialect of the hub they talk to (JupyterHub 5.3, the lowest version
this package supports, and 6.x; FACTS.md): 6 takes ``{"user_options": {...}}`` on ``POST
/users/{name}/servers/{server}`` (and the flat body for compatibility), creates a named server
without starting it with ``PUT``, returns one server's model with ``GET`` and changes a stopped
server's stored options with ``PATCH``; 5 takes only the flat body and has none of the other
three. ``GET /users/{name}?include_stopped_servers=1`` gives the server models on both.

Everything started here is stopped at the end, even when a test fails: the hub is asked to shut
down (it stops its servers and its proxy), then its process group is killed, then any proxy or
single-user server still alive (found by its pid file, or by a HOME inside this session's home
folder) is killed.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPOSITORY / "einfra_spawner" / "demo" / "jupyterhub_config.py"
ARTIFACTS = REPOSITORY / "test-artifacts"
VENV_BIN = Path(sys.executable).parent
SERVICE = "e2e-tests"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Response:
    status: int
    body: Any
    text: str


@dataclass
class Hub:
    """A JupyterHub subprocess and what the tests need to talk to it."""

    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = field(default_factory=free_port)
    # Kept across restarts: running servers know the hub's API address.
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    proxy_token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    backend: str = "local"
    # Another instance folder than the demo's profiles/hub, and lines appended to the config.
    profiles: Path | None = None
    extra_config: str = ""
    #: JupyterHub's version, as its API reports it (read at every start).
    version: tuple[int, ...] = ()

    @property
    def rest6(self) -> bool:
        """Whether the hub speaks JupyterHub 6's REST dialect (see the module's docstring)."""
        assert self.version, "the hub has not been started"
        return self.version >= (6,)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home_root(self) -> Path:
        return self.root / "state" / "homes"

    @property
    def log_path(self) -> Path:
        return self.root / "hub.log"

    def write_config(self) -> Path:
        config = self.root / "jupyterhub_config.py"
        roles = [
            {
                "name": SERVICE,
                "scopes": [
                    "admin:users",
                    "admin:servers",
                    "admin:server_state",
                    "access:servers",
                    "groups",  # to put a test's own user in a group (join_group)
                ],
                "services": [SERVICE],
            }
        ]
        config.write_text(
            f"""
load_subconfig({str(DEMO_CONFIG)!r})
c = get_config()
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{self.hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = {self.proxy_token!r}
c.JupyterHub.services = [{{"name": {SERVICE!r}, "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = {roles!r}
c.LocalBackend.http_timeout = 30
c.JupyterHub.log_level = "DEBUG"
{self.extra_config}
"""
        )
        return config

    @property
    def usage_db_url(self) -> str:
        """The usage ledger the demo configuration gives this hub."""
        return f"sqlite:///{self.root / 'state' / 'einfra-usage.sqlite'}"

    def start(self) -> None:
        """Start the hub (again, on the same database) and wait until its API answers."""
        config = self.write_config()
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "EINFRA_DEMO_STATE": str(self.root / "state"),
            "EINFRA_DEMO_PORT": str(self.port),
            "EINFRA_DEMO_BACKEND": self.backend,
        }
        if self.profiles is not None:
            env["EINFRA_DEMO_PROFILES"] = str(self.profiles)
        env.pop("JUPYTERHUB_API_TOKEN", None)
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== hub start {self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [str(VENV_BIN / "jupyterhub"), "-f", str(config)],
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub exited at start:\n{self.log_tail()}")
            try:
                answer = self.api("GET", "/")
                if answer.status == 200:
                    self.version = _release(answer.body["version"])
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the hub did not answer within 40 s:\n{self.log_tail()}")

    def kill(self) -> None:
        """Kill the hub process alone, as a crash would (its servers and proxy stay)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        """Shut the hub down and make sure nothing it started is left running."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        kill_leftovers(self.root)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- HTTP ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: object = None, *, token: str | None = None) -> Response:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"token {token or self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        text = raw.decode(errors="replace")
        try:
            parsed = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            parsed = None
        return Response(status, parsed, text)

    def api(self, method: str, path: str, body: object = None) -> Response:
        return self.request(method, "/hub/api" + path, body)

    def server(self, user: str, name: str = "") -> dict[str, Any] | None:
        """The server model, running or not (``None``: no such server), with the state; for the
        default server, only while it is active.

        From the user's model, on both dialects (JupyterHub 5 has no ``GET`` of one server)."""
        query = "?include_stopped_servers=1" if name else ""
        response = self.api("GET", f"/users/{user}{query}")
        if response.status == 404 and name:
            return None
        assert response.status == 200, response.text
        model: dict[str, Any] | None = response.body["servers"].get(name)
        return model

    def join_group(self, user: str, group: str) -> None:
        """Create ``user`` if needed and add it to ``group`` (kept across hub restarts), so that a
        test has a user of its own with, say, GPU choices, whose quota no other test touches."""
        self.ensure_user(user)
        response = self.api("POST", f"/groups/{group}/users", {"users": [user]})
        assert response.status == 200, response.text

    def stored_user_options(self, user: str, name: str = "") -> str | None:
        """The ``user_options`` column of the server's row in the hub's database, as stored
        (JSON text; ``None``: no such row or nothing stored)."""
        database = self.root / "state" / "jupyterhub.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
            row = connection.execute(
                "SELECT spawners.user_options FROM spawners JOIN users ON spawners.user_id = users.id"
                " WHERE users.name = ? AND spawners.name = ?",
                (user, name),
            ).fetchone()
        return None if row is None else row[0]

    def log_in(self, user: str) -> Session:
        """``user`` logged in through the hub's login form, with cookies only (no browser)."""
        from einfra_spawner.demo.auth import DEMO_PASSWORD

        session = Session(self)
        page = session.request("GET", "/hub/login")
        assert page.status == 200, page.text
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf is not None, page.text
        fields = {"username": user, "password": DEMO_PASSWORD, "_xsrf": xsrf.group(1)}
        # next=/hub/home: never on to the user's server (a login may otherwise start one).
        session.request("POST", "/hub/login?next=%2Fhub%2Fhome", urllib.parse.urlencode(fields).encode())
        names = [cookie.name for cookie in session.cookies]
        assert "jupyterhub-hub-login" in names, f"{user} was not logged in; cookies: {names}"
        return session

    def ensure_user(self, user: str) -> None:
        if self.api("GET", f"/users/{user}").status == 404:
            response = self.api("POST", f"/users/{user}")
            assert response.status == 201, response.text

    def start_body(self, options: object) -> object:
        """The body of a ``POST`` that asks for ``options`` (the request's flat keys) in this
        hub's dialect: ``{"user_options": options}`` on JupyterHub 6, the options themselves on 5."""
        return {"user_options": options} if self.rest6 else options

    def ask_start(self, user: str, name: str = "", options: object = None) -> Response:
        """``POST`` a start that asks for ``options`` (``None``: no body, the stored options are
        used) and return the answer at once: 201 (started), 202 (pending) or the refusal."""
        body = None if options is None else self.start_body(options)
        return self.api("POST", server_path(user, name), body)

    def spawn(self, user: str, name: str = "", options: object = None) -> Response:
        """Ask for a server and wait until it is ready (or the request failed)."""
        response = self.ask_start(user, name, options)
        # 202: still starting; a 201 may come while still pending too (under load).
        if response.status in (201, 202):
            self.wait_for(lambda: (self.server(user, name) or {}).get("ready"), f"{user}/{name}")
        return response

    def create_server(self, user: str, name: str) -> None:
        """Create the named server ``name`` and leave it stopped. JupyterHub 6 does so with
        ``PUT``; 5 creates a named server only by starting it, so it is started and stopped."""
        if self.rest6:
            response = self.api("PUT", f"/users/{user}/servers/{name}")
            assert response.status == 201, response.text
            return
        response = self.spawn(user, name, {"cpu": "1"})
        assert response.status in (201, 202), response.text
        self.stop_server(user, name)

    def stop_server(self, user: str, name: str = "") -> None:
        response = self.api("DELETE", server_path(user, name))
        assert response.status in (202, 204), response.text
        self.wait_for(
            lambda: (
                not (self.server(user, name) or {}).get("pending")
                and not (self.server(user, name) or {}).get("ready")
            ),
            f"{user}/{name} to stop",
        )

    def wait_for(self, check: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_tail()}")


class Session:
    """HTTP requests to a hub with a cookie jar, as a logged-in browser would make them."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def request(self, method: str, path: str, data: bytes | None = None) -> Response:
        request = urllib.request.Request(self.hub.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self.opener.open(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return Response(status, None, raw.decode(errors="replace"))


def server_path(user: str, name: str) -> str:
    return f"/users/{user}/servers/{name}" if name else f"/users/{user}/server"


def _release(version: str) -> tuple[int, ...]:
    """``(5, 3, 0)`` for ``"5.3.0"`` (pre-release and local parts are dropped)."""
    numbers = re.match(r"\d+(?:\.\d+)*", version)
    assert numbers is not None, version
    return tuple(int(part) for part in numbers.group().split("."))


def _environ(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def kill_leftovers(root: Path) -> list[int]:
    """Kill the proxy and any single-user server of this session that is still alive."""
    killed = []
    pid_file = root / "state" / "jupyterhub-proxy.pid"
    candidates: set[int] = set()
    with contextlib.suppress(OSError, ValueError):
        candidates.add(int(pid_file.read_text().strip()))
    marker = f"HOME={root}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and any(item.startswith(marker) for item in _environ(entry).split(b"\0")):
            candidates.add(int(entry))
    for pid in candidates:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The session's hub, started once; tests use their own users or servers."""
    running = Hub(root=tmp_path_factory.mktemp("hub"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def k8s_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub on the Kubernetes backend, against the fake API server in process mode (started and
    stopped by the hub itself, see einfra_spawner/demo/harness.py)."""
    running = Hub(root=tmp_path_factory.mktemp("k8s-hub"), backend="kubernetes")
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
