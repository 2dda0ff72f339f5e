"""``python -m einfra_spawner``: the same command line as ``einfra-spawner``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
