"""The fake API server in its own process, and a client for its debug routes.

End-to-end tests with a real JupyterHub and the spawn-storm benchmark run the harness in a
child process (``python -m einfra_spawner.testing serve``), so that its CPU time does not
count as the hub's. :class:`FakeKubernetesProcess` starts that child, reads its URL from the
first line of its stdout, talks to its ``/_harness/`` routes, and stops it. The child also
exits when its stdin closes, so it cannot outlive a parent that was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

JsonDict = dict[str, Any]


class FakeKubernetesProcess:
    """``async with FakeKubernetesProcess(...) as server:`` gives ``server.url``.

    ``nodes_file`` is a YAML file of nodes (see ``python -m einfra_spawner.testing
    default-nodes``); ``kubeconfig`` a path to write a kubeconfig to; ``extra_args`` are
    passed on to ``serve`` (e.g. ``["--running-delay-ms", "50"]``).
    """

    def __init__(
        self,
        *,
        nodes_file: str | Path | None = None,
        process_mode: bool = False,
        validate: bool = True,
        latency_ms: float = 0.0,
        kubeconfig: str | Path | None = None,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        args = ["-m", "einfra_spawner.testing", "serve", "--port", "0", "--stop-on-stdin-eof"]
        if nodes_file is not None:
            args += ["--nodes", str(nodes_file)]
        if process_mode:
            args.append("--process-mode")
        if not validate:
            args.append("--no-validate")
        if latency_ms:
            args += ["--latency-ms", str(latency_ms)]
        if kubeconfig is not None:
            args += ["--kubeconfig", str(kubeconfig)]
        self.args = [*args, *extra_args]
        self.kubeconfig_path = Path(kubeconfig) if kubeconfig is not None else None
        self._python = python
        self._env = dict(os.environ if env is None else env)
        self._startup_timeout = startup_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the fake API server process is not started")
        return self._url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> str:
        """Start the child and return its URL once it listens."""
        self._process = await asyncio.create_subprocess_exec(
            self._python,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
        )
        assert self._process.stdout is not None  # requested above
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), self._startup_timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise RuntimeError("the fake API server process did not print its URL") from None
        url = line.decode().strip()
        if not url.startswith("http"):
            code = await self._stop_process()
            raise RuntimeError(f"the fake API server process failed to start (exit code {code})")
        self._url = url
        self._session = aiohttp.ClientSession()
        return url

    async def _stop_process(self) -> int | None:
        process = self._process
        if process is None:
            return None
        if process.stdin is not None:
            process.stdin.close()  # the child exits on stdin EOF
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        if process.stdout is not None:
            await process.stdout.read()
        return process.returncode

    async def close(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 10 s); it kills its pod processes."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._stop_process()
        self._process = None

    async def __aenter__(self) -> FakeKubernetesProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- the /_harness/ routes -------------------------------------------------------------

    async def _call(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        if self._session is None:
            raise RuntimeError("the fake API server process is not started")
        async with self._session.request(method, self.url + path, json=body) as response:
            response.raise_for_status()
            result: JsonDict = await response.json()
            return result

    async def stats(self) -> JsonDict:
        """Request counters and object counts (see ``GET /_harness/stats``)."""
        return await self._call("GET", "/_harness/stats")

    async def reset_stats(self) -> JsonDict:
        return await self._call("POST", "/_harness/stats/reset")

    async def set_faults(self, **settings: float | int | None) -> JsonDict:
        """Any of ``latency_ms``, ``error_rate``, ``throttle_rate``, ``error_status``, ``seed``."""
        return await self._call("POST", "/_harness/faults", dict(settings))

    async def inject_fault(
        self, status: int, *, verb: str | None = None, resource: str | None = None, count: int = 1
    ) -> JsonDict:
        return await self._call(
            "POST",
            "/_harness/faults/inject",
            {"status": status, "verb": verb, "resource": resource, "count": count},
        )

    async def clear_faults(self) -> JsonDict:
        return await self._call("POST", "/_harness/faults/clear")

    async def drop_watches(self, resource: str | None = None) -> int:
        result = await self._call("POST", "/_harness/watches/drop", {"resource": resource})
        return int(result["dropped"])

    async def compact(self) -> None:
        await self._call("POST", "/_harness/compact")
