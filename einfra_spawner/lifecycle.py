"""A server's life between the spawner, the usage ledger and the backend, step by step.

Where it sits: the spawner (:mod:`einfra_spawner.spawner`) keeps what JupyterHub hands it and
what it must remember of a server; each step that calls the ledger or the backend is here, with
its failures turned into the refusals JupyterHub shows (:mod:`einfra_spawner.refusals`):

* :func:`admit`: the quotas checked and the run's interval opened, in one ledger transaction;
* :func:`start_on_backend`: the manifests rendered (:func:`start_request`) and the server
  started, under the start's deadline and observed by the metrics (:func:`run_start`);
* :func:`poll_server`, :func:`stop_server`: the backend's answer, and the run's interval kept
  in step with it (seen running, ended, or left to the reconciler);
* :func:`delete_storage`: a deleted server's volumes removed, and its homes as the instance says;
* :func:`hub_progress`: the backend's progress events, as JupyterHub's progress page reads them.

Spawn storms and restarts (see ``docs/benchmarks.md``, the ablation): the backend paces its own
submissions; polls take turns at the hub's poll gate, so that the thousands of polls of a hub
restart do not read every server's state in one iteration of the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from tornado import web

from .backend import Backend, ProgressEvent, Started, StartRequest
from .errors import BackendError
from .models import Instance
from .options import ResolvedOptions
from .refusals import refusal
from .render import ServerIdentity, SingleUser, render_manifests
from .usage import QuotaExceeded
from .usage import metrics as usage_metrics
from .usage.recorder import UsageRecorder

__all__ = [
    "admit",
    "current_home",
    "delete_storage",
    "hub_progress",
    "poll_server",
    "run_start",
    "start_on_backend",
    "start_request",
    "stop_server",
]

T = TypeVar("T")

Turn = Callable[[], contextlib.AbstractAsyncContextManager[None]]


async def admit(
    recorder: UsageRecorder, options: ResolvedOptions, *, log: logging.Logger, server: str, ledger_url: str
) -> float:
    """Check the quotas and open the run's interval, in one ledger transaction; a refusal is a
    403 with the limit and what is in use, and a ledger that does not answer refuses with a 503
    (``server`` names the server in the log, ``ledger_url`` the ledger). Returns when the start
    was admitted, on the monotonic clock: the spawn-duration metric counts from there."""
    try:
        await recorder.admit(options)
    except QuotaExceeded as exc:
        log.info("Quota refused a start of %s: %s", server, exc)
        usage_metrics.SPAWN_FAILURES.labels(reason="quota").inc()
        raise refusal(str(exc), reason="quota", status=403) from exc
    except Exception as exc:
        # Fail closed: without the ledger, quotas cannot be enforced nor the run accounted.
        log.exception("Usage ledger at %s failed; refusing the start", ledger_url)
        usage_metrics.SPAWN_FAILURES.labels(reason="usage").inc()
        raise refusal(
            "The usage database of this hub does not answer; servers cannot start until it does. "
            "The hub's operators can see why in its log.",
            reason="usage",
            status=503,
        ) from exc
    return time.monotonic()


async def run_start(
    start: Awaitable[T],
    *,
    profile: str,
    began: float | None,
    timeout: float,
    abandon: Callable[[], Awaitable[None]],
) -> T:
    """Await ``start`` for at most ``timeout`` seconds; observe its duration since ``began``
    (the admission; ``None``: now) and any failure in the metrics. Every way out other than a
    started server (a refusal, an error, the time-out, a cancellation) awaits ``abandon``."""
    began = time.monotonic() if began is None else began
    outcome, reason = "failure", "error"
    try:
        # JupyterHub 6 cancels a start at start_timeout; JupyterHub 5 only stops waiting.
        # Either way the backend's start is cancelled then, and cleans up what it made.
        result = await asyncio.wait_for(start, timeout=timeout)
        outcome = "success"
    except asyncio.TimeoutError:
        reason = "timeout"
        raise refusal(
            f"Your server did not start within {timeout:g} seconds; it was stopped.",
            reason="timeout",
            status=503,
        ) from None
    except web.HTTPError as exc:
        reason = str(getattr(exc, "reason", "") or "error")
        raise
    finally:
        usage_metrics.SPAWN_DURATION.labels(profile=profile, outcome=outcome).observe(
            time.monotonic() - began
        )
        if outcome != "success":
            usage_metrics.SPAWN_FAILURES.labels(reason=reason).inc()
            await abandon()
    return result


async def current_home(
    backend: Backend, identity: ServerIdentity, options: ResolvedOptions, known: int | None
) -> int | None:
    """The generation of the server's current home (see :mod:`einfra_spawner.storage`): ``known``
    when known; else, for a persistent home, the backend's answer (from its caches: a new server,
    or one re-created after a delete that kept its home), 0 when it has none yet."""
    if known is None and options.home is not None and not options.home.ephemeral:
        return await backend.current_home(identity, options.instance) or 0
    return known


def start_request(
    options: ResolvedOptions,
    identity: ServerIdentity,
    single_user: SingleUser,
    *,
    state: Mapping[str, Any],
    timeout: float,
) -> StartRequest:
    """What the backend is given: the manifests rendered for ``identity`` (whose
    ``home_generation`` names the home to use), the single-user command and environment, the
    backend's state of the server and the start's time budget in seconds."""
    return StartRequest(
        identity=identity,
        options=options,
        manifests=render_manifests(options, identity, single_user),
        single_user=single_user,
        state=dict(state),
        timeout=timeout,
    )


async def start_on_backend(
    backend: Backend,
    options: ResolvedOptions,
    *,
    identity: ServerIdentity,
    home_generation: int | None,
    single_user: Callable[[], SingleUser],
    state: Mapping[str, Any],
    timeout: float,
) -> tuple[Started, StartRequest]:
    """Have ``backend`` start the server in the home of ``home_generation``: build the
    single-user command and environment (``single_user``), render the manifests, then start.
    Returns what the backend answered and what it was given; a
    :class:`~einfra_spawner.BackendError` goes through."""
    identity = dataclasses.replace(identity, home_generation=home_generation or 0)
    request = start_request(options, identity, single_user(), state=state, timeout=timeout)
    started = await backend.start(request)
    return started, request


async def poll_server(
    backend: Callable[[], Backend],
    identity: Callable[[], ServerIdentity],
    state: Mapping[str, Any],
    recorder: Callable[[], UsageRecorder],
    *,
    turn: Turn,
    within: float,
    log: logging.Logger,
    server: str,
) -> int | None:
    """``None`` while the server runs (its run is then seen running, written within ``within``
    seconds), else its exit status (its run then ends where it was last seen running). The
    backend and the identity are looked up within a ``turn`` at the poll gate, the run's
    recorder after it."""
    # JupyterHub polls every server at once when it starts: 5,000 polls in one loop iteration
    # held the loop for a quarter of a second. The cache reads take turns; the ledger's work
    # (not waited on while holding a turn) comes after.
    async with turn():
        try:
            status = await backend().poll(identity(), state)
        except BackendError as exc:
            # Not knowing is not "stopped": forgetting a running server would orphan it.
            log.warning("Could not poll %s, assuming it runs: %s", server, exc)
            return None
    if status is None:
        recorder().seen(within=within)
    else:
        # Gone, at some moment since it was last seen running (perhaps while the hub was down):
        # the interval ends there, not now.
        await recorder().ended(None, ran=True)
    return status


async def stop_server(
    backend: Backend,
    identity: ServerIdentity,
    state: Mapping[str, Any],
    recorder: UsageRecorder,
    *,
    reconciled: bool,
    log: logging.Logger,
    server: str,
) -> None:
    """Stop the server and wait until it is gone, then end its run now.

    When the backend cannot stop it now (an API outage outlasting the retries) and the hub runs
    a reconciler (``reconciled``), the stop is left to the reconciler, which removes every server
    no hub knows: the server keeps carrying our labels, its run stays open (it is billed until
    it is really gone), and the error is logged. Without a reconciler it is a 503 refusal."""
    try:
        await backend.stop(identity, state)
    except BackendError as exc:
        if not reconciled:
            log.error("Could not stop %s: %s", server, exc)
            raise refusal(str(exc), reason="backend", status=503) from exc
        log.error(
            "Could not stop %s now (%s); the reconciler removes it once the backend answers, "
            "and its usage counts until then",
            server,
            exc,
        )
        recorder.leave_open()  # the reconciler closes it when the server is gone
        return
    await recorder.ended(time.time(), ran=True)


async def delete_storage(
    instance: Instance, backend: Backend, identity: ServerIdentity, *, log: logging.Logger, server: str
) -> None:
    """JupyterHub deletes the server (a named server removed, or its user deleted): its
    per-server volumes go, and its homes go or stay as the instance's ``homes.on_delete`` says."""
    homes = instance.homes.on_delete == "delete"
    try:
        await backend.delete_storage(identity, instance.name, homes=homes)
    except BackendError as exc:
        # JupyterHub logs it and deletes the server anyway: say what is left behind.
        log.error("Could not remove the storage of deleted %s: %s", server, exc)
        raise
    log.info(
        "Deleted %s: its storage was removed%s",
        server,
        ", its homes too" if homes else "; its homes are kept (homes.on_delete: keep)",
    )


async def hub_progress(events: AsyncIterator[ProgressEvent]) -> AsyncGenerator[dict[str, Any], None]:
    """The backend's progress ``events`` in the shape of JupyterHub's progress events (the
    ``progress`` kept within 0-100); ``events`` is closed when this ends, however it ends."""
    try:
        async for event in events:
            message: dict[str, Any] = {"message": event.message}
            if event.progress is not None:
                message["progress"] = max(0, min(100, event.progress))
            if event.failed:
                message["failed"] = True
            yield message
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
