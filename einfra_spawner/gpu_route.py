"""The hub's JSON route for GPU availability: ``GET /hub/api/einfra/gpus``.

Where it sits in the data flow: :func:`einfra_spawner.configure` installs :data:`HANDLERS` as
``JupyterHub.extra_handlers``; the options form's small script fetches the route to refresh its
"N of M free" figures without reloading (the form works without it). The figures are computed
exactly as for the form, by the user's own spawner, for the GPU types that user may see.

Access: a logged-in user (browser cookie with JupyterHub's XSRF token, or the user's API token)
whose scopes let them read their own servers; services and anonymous callers get 403.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.user import User
from tornado import web

__all__ = ["HANDLERS", "GpuCapacityHandler"]


class GpuCapacityHandler(APIHandler):  # type: ignore[misc]  # jupyterhub is untyped
    """``{"gpus": {"a40": {"free": 1, "total": 2, "note": "1 of 2 free"}, ...}}``."""

    async def get(self) -> None:
        # Not tornado's @authenticated: it would redirect an API call to the login page.
        user: Any = self.current_user
        if not isinstance(user, User):  # anonymous, or a service
            raise web.HTTPError(403, "Only users have GPU figures: log in as a user.")
        if "read:servers" not in self.parsed_scopes:
            raise web.HTTPError(403, "This token may not read servers (scope read:servers).")
        spawner = user.spawner
        figures = getattr(spawner, "gpu_figures", None)
        if figures is None:
            raise web.HTTPError(404, "This hub does not run EInfraSpawner.")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps({"gpus": await figures()}))


#: For ``JupyterHub.extra_handlers`` (JupyterHub prefixes them with ``/hub``).
HANDLERS: list[tuple[str, type[APIHandler]]] = [(r"/api/einfra/gpus", GpuCapacityHandler)]
