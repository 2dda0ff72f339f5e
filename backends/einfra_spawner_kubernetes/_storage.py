"""What a pod needs before it is created: the user's namespace and the server's home volume.

A start creates the namespace (with per-user namespaces) and the home PVC once and remembers it
in the server's state; a ``409 Conflict`` means an earlier start (or hub process) made it, which
is fine. A home is reset (its PVC deleted) only when the user asked in this very request, only
after the server's pod is gone, and only when the PVC's labels name this user and server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from einfra_spawner import BackendError, ServerNames
from einfra_spawner.render import LABEL_SERVER, LABEL_USER

from ._api import Conflict, KubeApi, NotFound
from ._inventory import MANAGED_BY

__all__ = ["ensure_home", "ensure_namespace", "reset_home"]


async def ensure_namespace(api: KubeApi, namespace: str, deadline: float) -> None:
    """Create a user's namespace, labelled as ours; fine if an earlier hub process made it."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}},
    }
    with contextlib.suppress(Conflict):
        await api.create_namespace(body, deadline=deadline)


async def ensure_home(api: KubeApi, namespace: str, home: dict[str, Any], deadline: float) -> None:
    """Create the server's home PVC; the home of an earlier start is kept as it is."""
    with contextlib.suppress(Conflict):
        await api.create("persistentvolumeclaims", namespace, home, deadline=deadline)


async def reset_home(
    api: KubeApi,
    namespace: str,
    home: dict[str, Any],
    names: ServerNames,
    deadline: float,
    release_timeout: float,
) -> None:
    """Delete this server's home PVC (only one whose labels name this user and server) and
    wait up to ``release_timeout`` seconds until it is gone."""
    claim = home["metadata"]["name"]
    try:
        existing = await api.get("persistentvolumeclaims", namespace, claim, deadline=deadline)
    except NotFound:
        return
    labels = (existing.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_USER) != names.user_label or labels.get(LABEL_SERVER) != names.server_label:
        raise BackendError(
            f"Your home cannot be reset: the volume {claim!r} is not labelled as this server's home. "
            "Nothing was deleted; please contact the operators."
        )
    with contextlib.suppress(NotFound):
        await api.delete("persistentvolumeclaims", namespace, claim, deadline=deadline)
    # The claim lingers until its volume is released; a rare path, so a bounded re-read is fine.
    released = time.monotonic() + release_timeout
    delay = 0.05
    while time.monotonic() < released:
        try:
            await api.get("persistentvolumeclaims", namespace, claim, deadline=deadline)
        except NotFound:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise BackendError("Your old home is still being released; please try again in a minute.")
