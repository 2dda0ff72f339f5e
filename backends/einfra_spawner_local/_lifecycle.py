"""Watching and ending server processes: is it up, did it die, and stopping it for good.

A start waits for the server to answer HTTP on its port (and checks that the answer came from
one of the server's own sockets); a stop asks the server to end, then whatever is left of it
(kernels live in sessions of their own), then kills. Every signal goes to a process verified by
pid and start time (:mod:`._procfs`), so a reused pid is never signalled.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress
from pathlib import Path
from typing import Any, Union

from ._home import read_tail
from ._launch import LOOPBACK
from ._procfs import (
    ProcStat,
    find_members,
    is_running,
    listens,
    send_signal,
    signal_group,
)
from ._records import ServerRef

__all__ = [
    "answers_http",
    "exit_words",
    "failure_message",
    "kill_now",
    "listener_is_ours",
    "terminate",
]

Log = Union[logging.Logger, "logging.LoggerAdapter[Any]"]

# Once the server itself has gone: how long its kernels get to end on SIGTERM, and how long to
# wait for SIGKILL to take effect.
_LEFTOVER_GRACE = 3.0
_KILL_WAIT = 5.0
# A server that never became ready has no work to save: a short grace is enough.
_QUICK_GRACE = 2.0


async def answers_http(port: int, path: str) -> bool:
    """Whether something on the loopback ``port`` answers an HTTP request (any status: a redirect
    to the login page is an answer)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        request = f"GET {path} HTTP/1.0\r\nHost: {LOOPBACK}:{port}\r\n\r\n"
        writer.write(request.encode("ascii"))
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 2.0)
        return status_line.startswith(b"HTTP/")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


def listener_is_ours(ref: ServerRef) -> bool | None:
    """Whether the server's own processes listen on its port (``None``: cannot tell). Another
    program could take the port between our pick and the server's bind; its answer must not
    count. Blocking: run in a worker thread."""
    if listens([ref.pid], ref.port):
        return True
    # The listener may be a child of the command (a wrapper script that does not exec).
    members = [m.pid for m in find_members(ref.pid, ref.start_time, ref.marker)]
    return listens(members, ref.port)


def exit_words(code: int) -> str:
    """An exit status in words: ``exit status 3``, ``killed by signal SIGKILL``."""
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def failure_message(headline: str, log_path: Path) -> str:
    """``headline`` and the last lines the server printed. Blocking: run in a worker thread."""
    tail = read_tail(log_path)
    if not tail:
        return f"{headline} It printed nothing."
    return f"{headline} Its last messages were:\n" + "\n".join(f"    {line}" for line in tail)


async def _wait_gone(members: list[ProcStat], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.02
    while True:
        # One stat read per process: microseconds, cheaper than a trip to a worker thread.
        if not any(is_running(m.pid, m.start_time) for m in members):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


async def _scan(ref: ServerRef) -> list[ProcStat]:
    return await asyncio.to_thread(find_members, ref.pid, ref.start_time, ref.marker)


async def terminate(ref: ServerRef, *, stop_timeout: float, quick: bool, log: Log) -> bool:
    """End every process of a server and wait until they are gone; returns whether anything of
    it was running.

    SIGTERM to the server and its process group first (jupyter-server then shuts its kernels
    down itself), up to ``stop_timeout``; then SIGTERM to whatever is left of it (kernels and
    terminals run in sessions of their own); then SIGKILL. ``quick``: a server that never became
    ready gets a short grace.
    """
    members = await _scan(ref)
    if not members:
        return False
    leader = [m for m in members if m.pid == ref.pid]
    first = leader or members
    signal_group(first, signal.SIGTERM)
    for member in first:
        send_signal(member, signal.SIGTERM)
    grace = min(stop_timeout, _QUICK_GRACE) if quick else stop_timeout
    await _wait_gone(first, grace)
    if leader:
        leftover = await _scan(ref)
        for member in leftover:
            send_signal(member, signal.SIGTERM)
        if leftover:
            await _wait_gone(leftover, min(grace, _LEFTOVER_GRACE))
    remaining = await _scan(ref)
    if remaining:
        pids = [m.pid for m in remaining]
        log.warning("Killing processes %s of a local server: they did not end on SIGTERM", pids)
        signal_group(remaining, signal.SIGKILL)
        for member in remaining:
            send_signal(member, signal.SIGKILL)
        if not await _wait_gone(remaining, _KILL_WAIT):
            log.error("Processes %s of a local server did not end even on SIGKILL", pids)
    return True


def kill_now(ref: ServerRef) -> None:
    """SIGKILL every process of a server at once. A blocking scan: only for a path that has no
    loop time left (a start cancelled again while it cleaned up)."""
    members = find_members(ref.pid, ref.start_time, ref.marker)
    signal_group(members, signal.SIGKILL)
    for member in members:
        send_signal(member, signal.SIGKILL)
