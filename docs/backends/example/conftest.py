"""Lets the example test import ``simple_pods`` as if it were an installed package."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
