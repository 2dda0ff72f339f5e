"""The hub runtime: one owner for what the spawners of a hub process share, closed when
JupyterHub shuts down (it cancels every task of its loop and waits for them)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from einfra_spawner.reconcile import HubServer
from einfra_spawner.runtime import HubRuntime
from einfra_spawner.usage import Ledger

from .test_spawner import FakeBackend


class ClosingBackend(FakeBackend):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.closed = 0
        self.inventories: list[str] = []

    async def close(self) -> None:
        self.closed += 1

    async def inventory(self, instance: str) -> list[Any]:
        self.inventories.append(instance)
        return []


async def no_servers() -> list[HubServer]:
    return []


async def test_jupyterhubs_shutdown_closes_the_backend_and_the_ledger(tmp_path: Path) -> None:
    runtime = HubRuntime()
    backend = ClosingBackend()
    runtime.set_backend("closing", backend)
    started = asyncio.Event()

    async def hub_started() -> None:
        await started.wait()

    url = f"sqlite:///{tmp_path / 'usage.sqlite'}"
    runtime.begin(
        backend_name="closing",
        config=None,
        log=logging.getLogger("test"),
        usage_db_url=url,
        instance="hub",
        reconcile_interval=0.05,
        reconcile_grace=10.0,
        hub_view=no_servers,
        hub_started=hub_started,
    )
    ledger = runtime.ledgers[url]
    await asyncio.sleep(0.2)
    assert backend.inventories == []  # the reconciler waits for the hub to have started
    started.set()
    for _ in range(500):  # passes repeat
        if len(backend.inventories) >= 2:
            break
        await asyncio.sleep(0.01)
    assert len(backend.inventories) >= 2
    # What JupyterHub's shutdown does: cancel every other task of the loop, and wait for them.
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    assert backend.closed == 1
    assert runtime.ledgers == {} and runtime.backends == {}
    assert ledger._executor._shutdown  # the worker thread is stopped
    assert Ledger(url).open_intervals("hub") == []  # and the database was opened and migrated


def test_runtimes_share_nothing() -> None:
    first, second = HubRuntime(), HubRuntime()
    first.set_backend("fake", FakeBackend())
    assert second.backends == {}
    assert isinstance(first.backends, Mapping)
