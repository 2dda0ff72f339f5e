"""Fixtures for the local backend: a harness per test that ends every process it started."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from .harness import FAKE_SERVER, Harness

if not sys.platform.startswith("linux"):  # pragma: no cover
    pytest.skip("the local backend reads /proc: Linux only", allow_module_level=True)


@pytest_asyncio.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    script = tmp_path / "fake_singleuser.py"
    script.write_text(FAKE_SERVER)
    harness = Harness(root=tmp_path, fake_server=script)
    try:
        yield harness
    finally:
        await harness.cleanup()
