"""Process mode: a Running pod's first container runs as a real local process.

This is what lets a real JupyterHub spawn through the Kubernetes backend end to end on one
machine. Each pod gets:

* its own loopback address 127.0.0.N (N from 2 upward), reported as ``status.podIP``. A pod is
  like a network namespace, so where the container asks to listen on every interface
  (``--ip=0.0.0.0``, ``--ip 0.0.0.0``, the same with ``--bind``/``--host``, or
  ``JUPYTERHUB_SERVICE_URL`` with host 0.0.0.0 or empty) the pod IP is put in its place, and
  two pods can use the same port;
* a fresh temporary folder as HOME and working directory, removed with the pod;
* the container's environment (resolved by the kubelet) and ``$(VAR)`` references in
  command and args expanded, as Kubernetes does.

Processes start with ``asyncio.create_subprocess_exec`` in their own session, so deleting the
pod can signal the whole process group: SIGTERM, then SIGKILL after the grace period.
:meth:`ProcessRunner.close` kills everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_ANY_ADDRESS = ("0.0.0.0", "", "::", "*")  # noqa: S104 - these are matched, not bound
_ADDRESS_FLAGS = ("--ip", "--bind", "--host")
_ADDRESS_PREFIXES = (
    "--ip=",
    "--bind=",
    "--host=",
    "--ServerApp.ip=",
    "--NotebookApp.ip=",
    "--SingleUserNotebookApp.ip=",
)
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ProcessStartError(Exception):
    """The container's command could not be started (the kubelet reports StartError)."""


def expand_references(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables replaced, ``$$`` escapes a dollar."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def substitute_pod_ip(argv: Sequence[str], env: dict[str, str], ip: str) -> list[str]:
    """Replace "every interface" addresses in arguments and JUPYTERHUB_SERVICE_URL by ``ip``."""
    result = list(argv)
    for index, arg in enumerate(result):
        if arg in _ADDRESS_FLAGS and index + 1 < len(result) and result[index + 1] in _ANY_ADDRESS:
            result[index + 1] = ip
        for prefix in _ADDRESS_PREFIXES:
            if arg.startswith(prefix) and arg[len(prefix) :] in _ANY_ADDRESS:
                result[index] = prefix + ip
    url = env.get("JUPYTERHUB_SERVICE_URL")
    if url:
        parts = urlsplit(url)
        if parts.hostname in (None, *_ANY_ADDRESS):
            port = f":{parts.port}" if parts.port else ""
            env["JUPYTERHUB_SERVICE_URL"] = urlunsplit(parts._replace(netloc=f"{ip}{port}"))
    return result


def _address(number: int) -> str:
    return f"127.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}"


@dataclass(slots=True)
class PodProcess:
    uid: str
    ip: str
    folder: Path
    home: Path
    log_path: Path
    process: asyncio.subprocess.Process


class ProcessRunner:
    """Starts, stops and cleans up the processes of process mode, one per pod."""

    def __init__(self) -> None:
        self._processes: dict[str, PodProcess] = {}
        self._addresses: dict[str, int] = {}
        self._free: list[int] = []
        self._next = 2
        self._root: Path | None = None
        self._logs: dict[str, Path] = {}

    # --- addresses -------------------------------------------------------------------------

    def allocate_ip(self, uid: str) -> str:
        if uid not in self._addresses:
            if self._free:
                number = heapq.heappop(self._free)
            else:
                number = self._next
                self._next += 1
                while self._next & 255 in (0, 255):
                    self._next += 1
            self._addresses[uid] = number
        return _address(self._addresses[uid])

    def release_ip(self, uid: str) -> None:
        number = self._addresses.pop(uid, None)
        if number is not None:
            heapq.heappush(self._free, number)

    # --- processes -------------------------------------------------------------------------

    def _folder(self, uid: str, pod_name: str) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="einfra-fake-k8s-"))
        folder = self._root / f"{pod_name}-{uid[:8]}"
        (folder / "home").mkdir(parents=True, exist_ok=True)
        return folder

    async def start(
        self, uid: str, pod_name: str, argv: Sequence[str], env: Mapping[str, str], ip: str
    ) -> PodProcess:
        """Start a container's command; raises :class:`ProcessStartError` when it cannot."""
        if not argv:
            raise ProcessStartError(
                "the container has neither command nor args: process mode cannot know the image's entrypoint"
            )
        folder = self._folder(uid, pod_name)
        home = folder / "home"
        full_env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "HOSTNAME": pod_name,
            **env,
            "HOME": str(home),
            "PWD": str(home),
            "EINFRA_FAKE_POD_IP": ip,
        }
        expanded = [expand_references(arg, full_env) for arg in argv]
        expanded = substitute_pod_ip(expanded, full_env, ip)
        log_path = folder / "container.log"
        self._logs[uid] = log_path
        with log_path.open("ab") as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *expanded,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=home,
                    env=full_env,
                    start_new_session=True,  # its own process group, signalled as a whole
                )
            except OSError as error:
                raise ProcessStartError(f'exec: "{expanded[0]}": {error.strerror or error}') from error
        pod_process = PodProcess(uid, ip, folder, home, log_path, process)
        self._processes[uid] = pod_process
        return pod_process

    def get(self, uid: str) -> PodProcess | None:
        return self._processes.get(uid)

    def log(self, uid: str) -> str:
        path = self._logs.get(uid)
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    async def wait_for_port(self, pod_process: PodProcess, port: int, timeout: float) -> bool:
        """Whether ``ip:port`` accepts a connection before the process exits or time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and pod_process.process.returncode is None:
            try:
                _, writer = await asyncio.open_connection(pod_process.ip, port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return False

    @staticmethod
    def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)

    async def stop(self, uid: str, grace: float, *, cleanup: bool = True) -> int | None:
        """SIGTERM the pod's process group, SIGKILL after ``grace`` seconds; its exit code."""
        pod_process = self._processes.get(uid)
        if pod_process is None:
            if cleanup:
                self._forget(uid)
            return None
        process = pod_process.process
        if process.returncode is None:
            self._signal(process, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=max(grace, 0.0))
            except asyncio.TimeoutError:
                self._signal(process, signal.SIGKILL)
                await process.wait()
        # Children that ignored SIGTERM must not outlive their pod.
        self._signal(process, signal.SIGKILL)
        if cleanup:
            self._processes.pop(uid, None)
            self._forget(uid)
            await asyncio.to_thread(shutil.rmtree, pod_process.folder, True)
        return process.returncode

    def _forget(self, uid: str) -> None:
        self._logs.pop(uid, None)
        self.release_ip(uid)

    async def close(self) -> None:
        """Stop every process (short grace), then remove all temporary folders."""
        uids = list(self._processes)
        await asyncio.gather(*(self.stop(uid, 0.5) for uid in uids), return_exceptions=True)
        if self._root is not None:
            await asyncio.to_thread(shutil.rmtree, self._root, True)
            self._root = None
