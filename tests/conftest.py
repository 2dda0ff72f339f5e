"""Shared test configuration: the harness's fixtures; no async test leaves a task running, and no
test leaves the process's heap frozen for the garbage collector."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

# The harness's fixtures (fake_k8s, k8s_api_client, ...) are opt-in: the package registers no
# pytest11 entry point, so other test suites in the same environment do not load them. This
# repository loads them with `-p einfra_spawner.testing.pytest_plugin` (pyproject's addopts), which
# also covers docs/backends/example, a test root of its own.


@pytest_asyncio.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (a task nobody cancels is a leak in a hub)."""
    before = asyncio.all_tasks()
    yield
    for _ in range(3):  # let tasks that were just cancelled finish their cleanup
        await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"tasks left running: {[t.get_coro() for t in leaked]}"


@pytest.fixture(autouse=True)
def _no_frozen_heap() -> Iterator[None]:
    """Fail a test that leaves objects frozen (``gc.freeze``, which a hub does once started):
    frozen objects are never collected, so the rest of the test run would leak them."""
    assert gc.get_freeze_count() == 0, "an earlier test left the heap frozen"
    yield
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    assert frozen == 0, f"this test left {frozen} objects frozen (gc.freeze without gc.unfreeze)"
