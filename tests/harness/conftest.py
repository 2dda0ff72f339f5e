"""Fixtures for the harness's own tests (the harness's fixtures come from its pytest plugin,
which this repository's pytest configuration loads with ``-p``)."""

from __future__ import annotations

from typing import Any

import pytest_asyncio

from .core_v1 import CoreV1


@pytest_asyncio.fixture
async def v1(k8s_api_client: Any) -> CoreV1:
    """CoreV1Api of the real kubernetes_asyncio client, pointed at ``fake_k8s``."""
    return CoreV1(k8s_api_client)
