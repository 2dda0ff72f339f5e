"""``scripts/demo``: one demo per checkout, and a second one never breaks the first (issue 12).

The real script starts a real JupyterHub and proxy here, in a state folder of its own
(``EINFRA_DEMO_DIR``) and on free loopback ports, so that a demo the developer runs from this
checkout at the same time is left alone. Nothing is installed: the script is pointed at this
test's virtual environment (the project's ``.venv`` is found by the script itself when that is
the one running the tests), and at the PyPI proxy of that environment instead of an npm install.

Marked ``e2e``: it runs a hub, like the end-to-end tests. Linux only (processes are found
through ``/proc``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(sys.platform != "linux", reason="processes are found through /proc"),
]

REPOSITORY = Path(__file__).resolve().parents[2]
DEMO = REPOSITORY / "scripts" / "demo"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def login_status(port: int) -> int | None:
    """The status of GET /hub/login, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hub/login", timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, waiting only to be reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def processes_of(root: Path, ports: list[int]) -> list[str]:
    """Processes that belong to a demo under ``root``: working folder there, or a port of ours
    (or ``root``) in the command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or not alive(int(entry.name)):
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        mentions = str(root) in command or any(f"--port {port}" in command for port in ports)
        if mentions or Path(cwd).is_relative_to(root):
            found.append(f"{entry.name}: {command.strip()}")
    return found


@dataclass
class Demos:
    """Demos started by one test in one state folder; every one is stopped at the end."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    started: list[tuple[subprocess.Popen[bytes], int]] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.root / "demo-state"

    def proxy_pid(self) -> int:
        return int((self.state / "hub" / "jupyterhub-proxy.pid").read_text())

    def start(self, port: int) -> subprocess.Popen[bytes]:
        log = self.root / f"demo-{port}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                [str(DEMO), "--port", str(port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so that a failed test can kill its whole group
            )
        self.started.append((process, port))
        deadline = time.monotonic() + START_TIMEOUT
        while login_status(port) != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo on port {port} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        return process

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A demo expected to end by itself (it is refused)."""
        return subprocess.run(
            [str(DEMO), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        """Ctrl-C, as a user stops the demo; its exit status."""
        proxy = self.proxy_pid()
        process.send_signal(signal.SIGINT)
        status = process.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + 10
        while alive(proxy) and time.monotonic() < deadline:
            time.sleep(0.1)
        return status

    def kill_everything(self) -> None:
        """After a failure: nothing of ours may outlive the test (a refused demo that was not
        refused, as before issue 12, starts a proxy of its own in its own session)."""
        for process, _ in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for line in processes_of(self.root, []):  # only what is surely ours: under this folder
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.partition(":")[0]), signal.SIGKILL)


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[Demos]:
    demos = Demos(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EINFRA_") and k != "VIRTUAL_ENV"}
    if Path(sys.prefix).resolve() != (REPOSITORY / ".venv").resolve():
        env["VIRTUAL_ENV"] = sys.prefix  # else the script must find the project's .venv itself
    env["EINFRA_DEMO_DIR"] = str(demos.state)
    env["EINFRA_DEMO_HUB_PORT"] = str(free_port())
    env["EINFRA_DEMO_PROXY_API_PORT"] = str(free_port())
    demos.env = env
    # Where the script looks for the Node.js proxy it would install with npm: the PyPI proxy of
    # this environment instead (no network, no npm).
    proxy = VENV_BIN / "configurable-http-proxy"
    if not proxy.exists():
        pytest.skip(f"no configurable-http-proxy in {VENV_BIN}")
    node_bin = demos.state / "node" / "node_modules" / ".bin"
    node_bin.mkdir(parents=True)
    (node_bin / "configurable-http-proxy").symlink_to(proxy)
    try:
        yield demos
    finally:
        demos.kill_everything()


def test_a_second_demo_is_refused_and_the_first_keeps_running(demos: Demos) -> None:
    port = free_port()
    first = demos.start(port)
    log = (demos.root / f"demo-{port}.log").read_text()
    if "VIRTUAL_ENV" not in demos.env:
        assert f"Using the project's virtual environment {REPOSITORY / '.venv'}" in log
    assert "Creating a virtual environment" not in log and "Installing" not in log
    proxy = demos.proxy_pid()
    assert alive(proxy)

    # The same port, then another port with the other backend and --fresh (which must not
    # forget the running demo's state).
    for args in (
        ("--port", str(port)),
        ("--port", str(free_port()), "--backend", "kubernetes", "--fresh"),
    ):
        second = demos.run(*args)
        assert second.returncode == 1, second
        assert second.stderr.startswith(
            f"scripts/demo: a demo already runs from this checkout (pid {first.pid}, port {port})\n"
        ), second.stderr
        assert "Traceback" not in second.stderr and "einfra-spawner demo: open" not in second.stderr
        assert second.stdout == ""
        assert login_status(port) == 200
        assert alive(proxy) and demos.proxy_pid() == proxy
        assert (demos.state / "hub" / "jupyterhub.sqlite").is_file()
    assert first.poll() is None

    assert demos.stop(first) == 0
    assert not alive(proxy)
    assert processes_of(demos.root, [port]) == []


def test_a_dead_demo_does_not_block_the_next(demos: Demos) -> None:
    # A lock file left behind, naming a process that has ended: only a live hub holds the lock.
    demos.state.mkdir(exist_ok=True)
    (demos.state / "demo.lock").write_text("999999 8000 local\n")
    port = free_port()
    demo = demos.start(port)
    assert (demos.state / "demo.lock").read_text() == f"{demo.pid} {port} local\n"
    assert demos.stop(demo) == 0
    assert processes_of(demos.root, [port]) == []
