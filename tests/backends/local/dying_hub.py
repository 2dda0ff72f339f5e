"""A hub that dies in the middle of a start, for ``test_records.py``.

Run as a process of its own (``python -m tests.backends.local.dying_hub SPEC``, from the
repository's root), it starts one server through a real :class:`LocalBackend` with a command that
never answers HTTP, so the start waits until the test kills this process with SIGKILL: exactly
what a hub killed while a start is in progress leaves behind. ``SPEC`` is a JSON object:
``root`` (the harness's folder), ``fake_server``, ``user``, ``server``, and optionally
``request`` (user_options), ``groups`` and ``gpu_inventory``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tests.backends.local.harness import Harness, options

NEVER_ANSWERS = (sys.executable, "-c", "import time; time.sleep(600)")


async def start_and_wait(spec: dict[str, Any]) -> None:
    harness = Harness(root=Path(spec["root"]), fake_server=Path(spec["fake_server"]))
    backend = harness.backend(
        gpu_inventory=spec.get("gpu_inventory", {}), http_timeout=600.0, start_timeout=600.0
    )
    resolved = options(spec.get("request"), user=spec["user"], groups=frozenset(spec.get("groups", ())))
    request = harness.request(spec["user"], spec["server"], resolved=resolved, cmd=NEVER_ANSWERS)
    await backend.start(request)
    # Not reached while the test does its part: the start waits for an answer until killed.
    print("the start returned", flush=True)


if __name__ == "__main__":
    asyncio.run(start_and_wait(json.loads(sys.argv[1])))
