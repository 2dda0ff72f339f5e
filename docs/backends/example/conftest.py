"""Lets the example test import ``simple_pods`` as if it were an installed package. The harness's
fixtures come from its pytest plugin, which this repository loads with ``-p`` (pyproject's
addopts); a backend of your own loads it the same way, or with ``pytest_plugins`` in its
top-level ``conftest.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
