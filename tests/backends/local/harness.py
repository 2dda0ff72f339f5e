"""Helpers for the local backend's tests: requests built by the real core, a small stand-in for
``jupyterhub-singleuser``, and checks on processes that read ``/proc`` directly.

The stand-in (:data:`FAKE_SERVER`) honours the contract the backend relies on, no more: it listens
where ``JUPYTERHUB_SERVICE_URL`` says, and it reports what it was given (environment, working
folder, CPU affinity, memory limit), so the tests check what a real server would see.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from traitlets.config import Config

from einfra_spawner import (
    ProfileSet,
    ResolvedOptions,
    ServerIdentity,
    SingleUser,
    UserContext,
    load_profiles,
    render_manifests,
    resolve_options,
)
from einfra_spawner.backend import Started, StartRequest
from einfra_spawner_local import LocalBackend

REPO = Path(__file__).resolve().parents[3]
TOKEN = "secret-api-token"
# Nothing listens on port 9 of the loopback (discard): a hub API that is not there.
NO_HUB_API = "http://127.0.0.1:9/hub/api"

FAKE_SERVER = r"""
import json, os, resource, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = urlsplit(self.path)
        what = parts.path.rstrip("/").rsplit("/", 1)[-1]
        if what == "env":
            self.reply(200, {
                "env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv,
                "uid": os.getuid(), "affinity": sorted(os.sched_getaffinity(0)),
                "rlimit_data": resource.getrlimit(resource.RLIMIT_DATA)[0],
            })
        elif what == "alloc":
            try:
                block = bytearray(int(parse_qs(parts.query)["mb"][0]) * 1024 * 1024)
                del block
                self.reply(200, {"allocated": True})
            except MemoryError:
                self.reply(507, {"allocated": False})
        elif what == "spawn":
            # One child in the server's process group, one in a session of its own (as
            # jupyter_client starts kernels).
            same_group = subprocess.Popen(SLEEPER)
            own_session = subprocess.Popen(SLEEPER, start_new_session=True)
            self.reply(200, {"pids": [same_group.pid, own_session.pid]})
        else:
            self.reply(200, {"path": self.path})


print("fake single-user server on port", url.port, flush=True)
ThreadingHTTPServer((url.hostname, url.port), Handler).serve_forever()
"""


def hub_env(identity: ServerIdentity, *, api_url: str = NO_HUB_API) -> tuple[tuple[str, str], ...]:
    """The variables JupyterHub's ``Spawner.get_env`` passes for ``identity``'s server."""
    prefix = f"/user/{quote(identity.user)}/" + (f"{quote(identity.server)}/" if identity.server else "")
    return (
        ("JUPYTERHUB_API_TOKEN", TOKEN),
        ("JPY_API_TOKEN", TOKEN),
        ("JUPYTERHUB_API_URL", api_url),
        ("JUPYTERHUB_BASE_URL", "/"),
        ("JUPYTERHUB_CLIENT_ID", f"jupyterhub-user-{quote(identity.user)}"),
        ("JUPYTERHUB_USER", identity.user),
        ("JUPYTERHUB_SERVER_NAME", identity.server),
        ("JUPYTERHUB_ADMIN_ACCESS", "0"),
        ("JUPYTERHUB_HOST", ""),
        ("JUPYTERHUB_OAUTH_CALLBACK_URL", f"{prefix}oauth_callback"),
        ("JUPYTERHUB_OAUTH_SCOPES", json.dumps([f"access:servers!user={identity.user}"])),
        ("JUPYTERHUB_OAUTH_ACCESS_SCOPES", json.dumps([f"access:servers!user={identity.user}"])),
        ("JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", "[]"),
        ("JUPYTERHUB_SERVICE_PREFIX", prefix),
        # The hub's idea of the URL; the local backend replaces host and port with its own.
        ("JUPYTERHUB_SERVICE_URL", f"http://127.0.0.1:8888{prefix}"),
        ("PATH", os.environ.get("PATH", os.defpath)),
        ("LANG", "C.UTF-8"),
    )


def profiles(instance: str = "hub") -> ProfileSet:
    return load_profiles(REPO / "profiles" / instance)


def options(
    request: Mapping[str, object] | None = None,
    *,
    instance: str = "hub",
    user: str = "ana",
    groups: frozenset[str] = frozenset(),
) -> ResolvedOptions:
    """Options resolved by the real core for ``user`` asking for ``request``."""
    context = UserContext(name=user, groups=groups)
    return resolve_options(profiles(instance), context, dict(request or {}))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rpartition(b")")[2].split()[0] not in (b"Z", b"X")


def start_time_of(pid: int) -> int:
    """Field 22 of ``/proc/PID/stat``: when the process started, in clock ticks since boot."""
    return int(Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[19])


def listing(folder: Path) -> list[str] | None:
    """The names in a folder, sorted (``None``: no such folder)."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None


def marked_processes(prefix: str) -> list[int]:
    """Pids of live processes whose environment carries a local server marker starting with
    ``prefix`` (``EINFRA_LOCAL_SERVER=<server name>:``)."""
    wanted = f"EINFRA_LOCAL_SERVER={prefix}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(item.startswith(wanted) for item in environ) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def http_get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET on the loopback: (status, JSON body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body) if body.strip().startswith(b"{") else {}


async def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    """Poll a condition (a test only; the backend itself waits on events)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@dataclass
class Harness:
    """Builds backends and requests, and ends every process a test started, even a failed one."""

    root: Path
    fake_server: Path
    backends: list[LocalBackend] = field(default_factory=list)
    started: list[tuple[ServerIdentity, dict[str, Any]]] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)

    def backend(self, **traits: Any) -> LocalBackend:
        settings: dict[str, Any] = {
            "home_root": str(self.root / "homes"),
            "http_timeout": 15.0,
            "start_timeout": 30.0,
            "stop_timeout": 5.0,
        }
        settings.update(traits)
        backend = LocalBackend(config=Config({"LocalBackend": settings}), log=logging.getLogger("test.local"))
        self.backends.append(backend)
        return backend

    def request(
        self,
        user: str = "ana",
        server: str = "",
        *,
        resolved: ResolvedOptions | None = None,
        cmd: tuple[str, ...] | None = None,
        args: tuple[str, ...] = (),
        state: Mapping[str, Any] | None = None,
        api_url: str = NO_HUB_API,
    ) -> StartRequest:
        identity = ServerIdentity(user=user, server=server)
        resolved = resolved if resolved is not None else options(user=user)
        single_user = SingleUser(
            cmd=cmd if cmd is not None else (sys.executable, str(self.fake_server)),
            args=args,
            env=hub_env(identity, api_url=api_url),
        )
        self.markers.append(f"{render_manifests(resolved, identity).names.pod}:")
        return StartRequest(
            identity=identity,
            options=resolved,
            manifests=render_manifests(resolved, identity, single_user),
            single_user=single_user,
            state=dict(state or {}),
        )

    async def start(self, backend: LocalBackend, request: StartRequest) -> Started:
        started = await backend.start(request)
        self.started.append((request.identity, started.state))
        return started

    async def cleanup(self) -> None:
        stopper = LocalBackend(config=Config(), log=logging.getLogger("test.local.cleanup"))
        for identity, state in self.started:
            await stopper.stop(identity, state)
        for backend in self.backends:
            await backend.close()
        await stopper.close()
        # The last resort: anything still carrying a marker of a server of this test.
        for prefix in self.markers:
            for pid in marked_processes(prefix):
                os.kill(pid, signal.SIGKILL)
        # A child ended by another backend object (a simulated hub restart) is reaped by the
        # event loop a moment later; let that happen before the loop closes.
        await asyncio.sleep(0.1)
