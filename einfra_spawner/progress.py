"""The steps of one start, for JupyterHub's progress bar: one record, any number of readers.

A backend's ``start`` writes :class:`~einfra_spawner.backend.ProgressEvent` s into a
:class:`StartProgress` as it goes and ends it when the start ends (ready, failed or cancelled);
its ``progress`` method hands :meth:`StartProgress.follow` to JupyterHub. Each reader (each
browser tab showing the progress page) gets every event from the first, then each new one as it
is written, and stops after the last one once the start has ended. Readers are woken by the
writes themselves, never by a timer.

Pure asyncio, no I/O: a backend keeps one per start in progress, keyed by server, and drops it
once the start has ended (a reader that comes later finds none and ends at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from .backend import ProgressEvent

__all__ = ["StartProgress"]


class StartProgress:
    """The events of one start, in order, and whether the start has ended."""

    __slots__ = ("_changed", "_ended", "_events")

    def __init__(self) -> None:
        self._events: list[ProgressEvent] = []
        self._ended = False
        self._changed = asyncio.Event()

    @property
    def events(self) -> Sequence[ProgressEvent]:
        """The events written so far (a copy)."""
        return tuple(self._events)

    @property
    def ended(self) -> bool:
        """Whether the start has ended: no more events will be written."""
        return self._ended

    @property
    def failed(self) -> bool:
        """Whether the last event written reports a failure."""
        return bool(self._events) and self._events[-1].failed

    def add(self, event: ProgressEvent) -> None:
        """Record one step; ignored once the start has ended (its readers may be gone)."""
        if not self._ended:
            self._events.append(event)
            self._wake()

    def end(self) -> None:
        """The start is over: readers finish once they have read every event (idempotent)."""
        if not self._ended:
            self._ended = True
            self._wake()

    async def follow(self) -> AsyncIterator[ProgressEvent]:
        """Every event from the first, then each new one, until the start has ended."""
        seen = 0
        while True:
            while seen < len(self._events):
                seen += 1
                yield self._events[seen - 1]
            if self._ended:
                return
            await self._changed.wait()

    def _wake(self) -> None:
        # Readers wait on the event that was current when they began to wait: set it, and give
        # later waits a fresh one, so that no reader has to clear it for the others.
        self._changed.set()
        self._changed = asyncio.Event()
