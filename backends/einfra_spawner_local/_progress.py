"""The steps of a start in progress, for JupyterHub's progress bar.

``start`` writes events into a :class:`StartProgress`; any number of readers (each browser tab
showing the progress page) follow it from the first event, waking when a new one is written, and
stop when the start ends. Waiters are woken by the writes themselves, not by a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from einfra_spawner.backend import ProgressEvent

__all__ = ["StartProgress"]


class StartProgress:
    """The events of one start, in order, and whether the start has ended."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self.ended = False
        self._changed = asyncio.Event()

    def _wake(self) -> None:
        # Readers hold the event that was current when they began to wait: set it, and give
        # later readers a fresh one.
        self._changed.set()
        self._changed = asyncio.Event()

    def emit(self, message: str, progress: int | None = None, *, failed: bool = False) -> None:
        """Record one step."""
        self.events.append(ProgressEvent(message, progress, failed))
        self._wake()

    def end(self) -> None:
        """The start is over (ready or failed): readers finish after the last event."""
        self.ended = True
        self._wake()

    async def follow(self) -> AsyncIterator[ProgressEvent]:
        """Every event from the first, then each new one, until the start ends."""
        seen = 0
        while True:
            while seen < len(self.events):
                yield self.events[seen]
                seen += 1
            if self.ended:
                return
            await self._changed.wait()
