"""Spawn storms: how many starts and stops may be sending their requests at once.

When hundreds of spawns arrive together (a class starting its notebooks), letting every one of
them build and send its requests at once would run all that CPU work back to back in a few
iterations of the event loop: the hub's timers, its HTTP requests and the watch events that
complete earlier spawns would wait behind the whole burst, and every spawn would finish late
together. A :class:`Gate` lets a bounded number of them submit at a time, first come first
served: the loop polls its sockets between them, and spawns complete in the order they came, so
the median one waits for half the burst's CPU work instead of all of it. Waiting for a pod to
run happens outside the gate.

The spawner may take a turn earlier, before its own CPU work for a start (resolving and
rendering): :meth:`Gate.admission` holds a turn that the first start within the block takes over
(:meth:`Gate.take_turn`), so that this work too happens in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator

__all__ = ["Gate"]


class _Turn:
    """A turn at a gate taken by ``admission``, until a start takes it over."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.held = True


#: The turn of the admission block the current task runs in (tasks it creates inherit it).
_ADMITTED: contextvars.ContextVar[_Turn | None] = contextvars.ContextVar("einfra_admitted", default=None)


class Gate:
    """At most ``width`` holders at a time, in arrival order (``asyncio.Semaphore`` is FIFO)."""

    def __init__(self, width: int) -> None:
        self._slots = asyncio.Semaphore(width)

    async def enter(self) -> None:
        await self._slots.acquire()

    def leave(self) -> None:
        self._slots.release()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        await self.enter()
        try:
            yield
        finally:
            self.leave()

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """Wait for a turn to start a server before the spawner's own CPU work for it.

        ``async with backend.admission(): ... await backend.start(request)``: in a burst of
        spawns, resolving and rendering then happen in turn too, so the spawns complete in the
        order they came instead of all rendering first. The first start within the block (in
        this task or one it creates) takes the turn over (:meth:`take_turn`); if none does (the
        spawner failed first), leaving the block gives the turn back.
        """
        await self.enter()
        turn = _Turn(self)
        token = _ADMITTED.set(turn)
        try:
            yield
        finally:
            _ADMITTED.reset(token)
            if turn.held:
                turn.held = False
                self.leave()

    async def take_turn(self) -> None:
        """Enter for a start: take over the turn of the admission block this task runs in, if
        it still holds one, else wait for a turn. Leave with :meth:`leave`."""
        turn = _ADMITTED.get()
        if turn is not None and turn.held and turn.gate is self:
            turn.held = False  # admitted already: this start owns that turn now
        else:
            await self.enter()
