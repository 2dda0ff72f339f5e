"""The packaging tier: builds the distribution and installs it into a fresh virtual environment.

Slow (about a minute: the dependencies come from PyPI) and needs the network, so it has its own
marker: ``pytest -m "not packaging"`` leaves it out, ``pytest -m packaging tests/packaging`` runs
only it.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "packaging: builds the sdist and wheel and installs the wheel in a fresh venv"
    )
