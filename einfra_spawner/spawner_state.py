"""What a spawner keeps in JupyterHub's database between hub processes: one frozen record.

Where it sits: JupyterHub saves what the spawner's ``get_state`` returns with the server and
hands it back to ``load_state`` when a restarted hub rebuilds the spawner. Beside JupyterHub's
own keys, this spawner keeps what a restarted hub needs to find the server again and to go on
as before; :class:`SavedState` is that part, read and written here so that the spawner never
handles the raw keys. Pure: no I/O, and a value of the wrong shape (an older hub's, or edited by
hand) reads as "not known", never as an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SavedState"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedState:
    """The spawner's part of JupyterHub's saved state for one server."""

    #: The backend's state for the server (``{}``: no server was started).
    server: Mapping[str, Any] = field(default_factory=dict)
    #: The name of the backend that started it (compared with the hub's at load).
    backend: object = None
    #: The server's open run in the usage ledger, if any.
    usage_interval: int | None = None
    #: The request last granted, as stored (no home reset): what a refused request leaves stored
    #: instead of itself. ``None``: not known.
    granted_options: Mapping[str, Any] | None = None
    #: The generation of the server's current home (see :mod:`einfra_spawner.storage`), kept
    #: across stops and hub restarts. ``None``: not known.
    home_generation: int | None = None

    def as_state(self) -> dict[str, Any]:
        """The keys this spawner adds to JupyterHub's state; only those with something to say."""
        state: dict[str, Any] = {}
        if self.server:
            state["backend"] = self.backend
            state["server"] = dict(self.server)
        if self.usage_interval is not None:
            state["usage_interval"] = self.usage_interval
        if self.granted_options:
            state["granted_options"] = dict(self.granted_options)
        if self.home_generation is not None:
            state["home_generation"] = self.home_generation
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SavedState:
        """Read back what :meth:`as_state` wrote (other keys are JupyterHub's, and ignored)."""
        server = state.get("server")
        interval = state.get("usage_interval")
        granted = state.get("granted_options")
        generation = state.get("home_generation")
        return cls(
            server=dict(server) if isinstance(server, Mapping) else {},
            backend=state.get("backend"),
            usage_interval=interval if isinstance(interval, int) else None,
            granted_options=dict(granted) if isinstance(granted, Mapping) else None,
            home_generation=(
                generation
                if isinstance(generation, int) and not isinstance(generation, bool) and generation >= 0
                else None
            ),
        )
