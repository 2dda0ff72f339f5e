"""The spawner's usage accounting: its side of the ledger, as a mixin of EInfraSpawner.

Where it sits in the data flow: :class:`~einfra_spawner.spawner.EInfraSpawner` calls these at
each step of a server's life (admitted -> running -> seen running at each poll -> stopped or found
gone); they turn the step into a write queued for the ledger's worker thread (admission and
closing are awaited; "running" and "last seen running" are not: they cannot fail a start or a
poll, and the ledger keeps their order), feed the cost metric, and build the form's usage
sentences with the pure :mod:`.cost` and :mod:`.quota`. Refusals are raised as
:class:`~.ledger.QuotaExceeded` (or any database error); the spawner turns them into the HTTP
answers JupyterHub gives the user.

Per process: one :class:`~.ledger.AsyncLedger` per database URL, owned by the hub's runtime
(:mod:`einfra_spawner.runtime`) and shared by every spawner.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from ..resolve import ResolvedOptions, UserContext
from . import metrics
from .cost import Cost, Interval, describe_cost, interval_cost, rates_for, usage_cost, window
from .ledger import AsyncLedger, Ledger, end_interval, mark_running, open_interval, seen_running
from .quota import describe_quotas, quota_refusal

if TYPE_CHECKING:
    from ..profiles import ProfileSet

__all__ = ["UsageAccounting"]


class UsageAccounting:
    """What EInfraSpawner does with the usage ledger (a mixin: it needs the attributes below)."""

    usage_db_url: str
    usage_timeout: float
    name: str
    user: Any
    log: Any
    _interval_id: int | None
    _log_name: str
    #: The cost metric of this run since this process last saw it running; after a hub restart,
    #: rebuilt from the ledger at the first poll.
    _meter: metrics.CostMeter | None = None

    if TYPE_CHECKING:

        def profile_set(self) -> ProfileSet: ...

        def user_context(self) -> UserContext: ...

    async def ledger(self) -> AsyncLedger:
        """The ledger at :attr:`usage_db_url`, shared by the hub process (its runtime owns it).
        Reservations of starts a crash cut short are dropped by the reconciler."""
        from ..runtime import current_runtime  # the runtime imports the usage package

        return current_runtime().ledger(self.usage_db_url)

    async def _spent(self, ledger: AsyncLedger, now: float) -> dict[str, Cost]:
        """The user's cost over the usage window ending ``now``, by currency."""
        instance = self.profile_set().instance
        since, until = window(now, instance.usage_window_days)
        intervals = await ledger.call(Ledger.intervals, since, until, instance.name, [self.user.name])
        return usage_cost(intervals, since, until)

    async def usage_lines(self) -> tuple[str, ...]:
        """The form's sentences about the user's cost and quotas."""
        instance = self.profile_set().instance
        currency = instance.prices.currency if instance.prices is not None else "CZK"
        ledger = await self.ledger()
        now = time.time()
        spent = await self._spent(ledger, now)
        running = await ledger.call(Ledger.open_intervals, instance.name)
        # Without prices nothing is priced: no cost line rather than a misleading "0.00".
        lines = [describe_cost(spent, instance.usage_window_days, currency)] if instance.prices else []
        lines.extend(describe_quotas(instance.quotas, self.user_context(), running, spent, currency))
        return tuple(lines)

    async def _open_interval(self, options: ResolvedOptions) -> Interval:
        instance = self.profile_set().instance
        ledger = await self.ledger()
        now = time.time()
        currency = instance.prices.currency if instance.prices is not None else "CZK"
        spent = await self._spent(ledger, now) if instance.quotas.budget is not None else None
        user = self.user_context()
        gpu = options.gpu.id if options.gpu is not None else None
        interval = Interval(
            instance=instance.name,
            user=user.name,
            server=self.name,
            profile=options.profile,
            groups=tuple(sorted(user.groups)),
            cpu_millicores=options.cpu_limit,
            memory_bytes=options.memory_limit,
            gpu=gpu,
            gpu_count=options.gpu.count if options.gpu is not None else 0,
            rates=rates_for(instance.prices, gpu),
            started=now,
        )

        def admit(running: list[Interval]) -> str | None:
            return quota_refusal(instance.quotas, user, options, running, spent, currency)

        # Reading every open interval of the instance made each admission cost O(running
        # servers); only a group quota the user falls under needs other users' intervals.
        whole_instance = any(group in user.groups for group in instance.quotas.group_max_gpus)
        return await ledger.write(
            partial(open_interval, interval=interval, admit=admit, whole_instance=whole_instance)
        )

    async def _end_interval(self, at: float | None) -> None:
        """Close this run's interval at ``at`` (``None``: where it was last seen running)."""
        interval_id, self._interval_id = self._interval_id, None
        self._meter = None
        if interval_id is None:
            return
        try:
            ledger = await self.ledger()
            closed = await ledger.write(partial(end_interval, interval_id=interval_id, at=at))
        except Exception:  # the ledger must never keep a server from stopping
            self.log.exception("Usage ledger: could not close interval %s", interval_id)
            return
        if closed is not None and closed.last_seen is not None and closed.stopped is not None:
            metrics.record_cost(closed.profile, interval_cost(closed, closed.last_seen, closed.stopped))

    async def _mark_running(self, opened: Interval) -> None:
        """The backend started the server: its run, and its cost, begin now.

        The write is queued, not awaited: nothing the start returns depends on it, and the
        ledger keeps the order of one server's writes (a stop's close comes after it)."""
        if self._interval_id is None:
            return
        now = time.time()
        try:
            ledger = await self.ledger()
        except Exception:  # accounting must not fail a started server
            self.log.exception("Usage ledger: could not mark %s as running", self._log_name)
            return
        self._meter = metrics.CostMeter(replace(opened, started=now, last_seen=now))
        queued = ledger.write(partial(mark_running, interval_id=self._interval_id, now=now))
        queued.add_done_callback(partial(self._log_ledger_failure, "mark as running"))

    async def _seen_running(self) -> None:
        """Poll saw the server running: queue "last seen running" (not awaited, so a poll costs
        the hub almost nothing) and count the cost since the last sighting in the metric."""
        if self._interval_id is None:
            return
        now = time.time()
        try:
            ledger = await self.ledger()
        except Exception:
            self.log.exception("Usage ledger: could not record %s as running", self._log_name)
            return
        if self._meter is None:
            # A hub restart lost the meter: rebuild it from the row as it is before this poll's
            # write (queued first), so the metric also counts the stretch since the last poll.
            row = ledger.call(Ledger.get, self._interval_id)
            row.add_done_callback(partial(self._resume_meter, now))
        queued = ledger.write(partial(seen_running, interval_id=self._interval_id, now=now))
        queued.add_done_callback(partial(self._log_ledger_failure, "record as running"))
        if self._meter is not None:
            self._meter.advance(now)

    def _resume_meter(self, now: float, row: asyncio.Future[Interval | None]) -> None:
        if row.cancelled() or row.exception() is not None or self._meter is not None:
            return
        interval = row.result()
        if interval is None or interval.id != self._interval_id or interval.stopped is not None:
            return
        if interval.last_seen is None:
            return
        self._meter = metrics.CostMeter(replace(interval, started=interval.last_seen))
        self._meter.advance(now)

    def _log_ledger_failure(self, what: str, done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is not None:
            self.log.error("Usage ledger: could not %s %s", what, self._log_name, exc_info=done.exception())

    async def _form_usage(self) -> tuple[str, ...]:
        try:
            return await asyncio.wait_for(self.usage_lines(), timeout=self.usage_timeout)
        except asyncio.TimeoutError:
            self.log.warning("Usage figures took longer than %.1f s; form without them", self.usage_timeout)
        except Exception:  # a form without figures beats no form at all
            self.log.exception("Usage figures failed; showing the form without them")
        return ()
