"""The real ``jupyterhub-singleuser`` (with JupyterLab) started by the local backend.

``jupyterhub-singleuser`` asks the hub's API for its version before it listens, and gives up
after about 30 s when no hub answers; a few lines of aiohttp stand in for that one endpoint here.
The end-to-end tests with a real hub live in ``tests/e2e``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import jupyterhub
import pytest
import pytest_asyncio
from aiohttp import web

from .harness import Harness, alive, http_get

SINGLEUSER = Path(sys.executable).parent / "jupyterhub-singleuser"


@pytest_asyncio.fixture
async def hub_api() -> AsyncIterator[str]:
    async def version(request: web.Request) -> web.Response:
        return web.json_response(
            {"version": jupyterhub.__version__},
            headers={"X-JupyterHub-Version": jupyterhub.__version__},
        )

    app = web.Application()
    app.router.add_get("/hub/api", version)
    app.router.add_get("/hub/api/", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hub/api"
    finally:
        await runner.cleanup()


@pytest.mark.skipif(not os.access(SINGLEUSER, os.X_OK), reason="jupyterhub-singleuser not installed")
async def test_jupyterhub_singleuser_starts_and_stops(harness: Harness, hub_api: str) -> None:
    backend = harness.backend(http_timeout=45.0, start_timeout=60.0)
    request = harness.request(cmd=(str(SINGLEUSER),), api_url=hub_api)
    started = await harness.start(backend, request)
    status, body = await http_get(started.endpoint.port, "/user/ana/api")
    assert status == 200 and "version" in body
    # JupyterLab is there (a redirect to the hub's login, as no one is logged in).
    status, _ = await http_get(started.endpoint.port, "/user/ana/lab")
    assert status in (200, 302)
    assert await backend.poll(request.identity, started.state) is None
    await backend.stop(request.identity, started.state)
    assert not alive(started.state["pid"])
    assert await backend.poll(request.identity, started.state) is not None
