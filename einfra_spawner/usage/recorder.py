"""One server's side of the usage ledger: a collaborator of the spawner, not a part of it.

Where it sits in the data flow: :class:`~einfra_spawner.spawner.EInfraSpawner` tells its
:class:`UsageRecorder` each step of a server's life (admitted -> running -> seen running at each
poll -> ended, or left open for the reconciler); the recorder turns the step into a write queued
for the ledger's worker thread (admission and ending are awaited; "running" and "seen" are not:
they cannot fail a start or a poll, and the ledger keeps their order; "seen" is only noted, and
written with every other server's once per flush interval), feeds the cost metric, and
builds the form's usage sentences with the pure :mod:`.cost` and :mod:`.quota`. A quota refusal
is raised as :class:`~.intervals.QuotaExceeded`; the spawner turns it into the 403 the user reads.

An instance with neither prices nor quotas has nothing to charge or enforce: its spawners get
a :class:`NullRecorder`, which needs no database, so a database outage never refuses its starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from ..models import Instance
from ..options import ResolvedOptions, UserContext
from . import metrics
from .async_ledger import AsyncLedger
from .cost import Cost, Interval, describe_cost, interval_cost, rates_for, usage_cost, window
from .intervals import end_interval, mark_running, open_interval
from .ledger import Ledger
from .quota import describe_quotas, quota_refusal

__all__ = ["NullRecorder", "UsageRecorder", "recorder_for", "records_usage"]


def records_usage(instance: Instance) -> bool:
    """Whether ``instance`` has prices or quotas, and so needs a ledger."""
    quotas = instance.quotas
    limits = (quotas.max_servers, quotas.max_gpus, quotas.budget)
    return instance.prices is not None or any(v is not None for v in limits) or bool(quotas.group_max_gpus)


class UsageRecorder:
    """The usage of one server (one spawner) in the ledger ``ledger()`` returns."""

    def __init__(
        self,
        *,
        ledger: Callable[[], AsyncLedger],
        instance: Instance,
        user: UserContext,
        server: str,
        log: logging.Logger,
        describe: str = "",
    ) -> None:
        self._ledger = ledger
        self.instance = instance
        self.user = user
        self.server = server
        self.log = log
        self.describe = describe or f"{user.name}'s server {server!r}"
        #: This run's row, from admission until it ends (persisted in the spawner's state).
        self.interval_id: int | None = None
        self._opened: Interval | None = None  # the row as admitted, until the server runs
        #: The cost metric since this process last saw the server running; rebuilt from the ledger
        #: at the first poll after a hub restart.
        self._meter: metrics.CostMeter | None = None
        self._resuming = False

    @property
    def currency(self) -> str:
        return self.instance.prices.currency if self.instance.prices is not None else "CZK"

    async def _spent(self, ledger: AsyncLedger, now: float) -> dict[str, Cost]:
        """The user's cost over the usage window ending ``now``, by currency."""
        since, until = window(now, self.instance.usage_window_days)
        intervals = await ledger.call(Ledger.intervals, since, until, self.instance.name, [self.user.name])
        return usage_cost(intervals, since, until)

    async def form_lines(self, *, gpus_offered: bool = True) -> tuple[str, ...]:
        """The form's sentences about the user's cost and quotas (the GPU quotas only when the
        user may choose a GPU at all)."""
        ledger = self._ledger()
        spent = await self._spent(ledger, time.time())
        running = await ledger.call(Ledger.open_intervals, self.instance.name)
        # Without prices nothing is priced: no cost line rather than a misleading "0.00".
        instance = self.instance
        lines = [describe_cost(spent, instance.usage_window_days, self.currency)] if instance.prices else []
        lines.extend(
            describe_quotas(
                instance.quotas, self.user, running, spent, self.currency, gpus_offered=gpus_offered
            )
        )
        return tuple(lines)

    async def admit(self, options: ResolvedOptions) -> None:
        """Check the quotas and open this run's interval in one transaction (two starts cannot
        both take the last GPU); raises :class:`~.intervals.QuotaExceeded` with the limit."""
        instance, user = self.instance, self.user
        ledger = self._ledger()
        now = time.time()
        spent = await self._spent(ledger, now) if instance.quotas.budget is not None else None
        gpu = options.gpu.id if options.gpu is not None else None
        interval = Interval(
            instance=instance.name,
            user=user.name,
            server=self.server,
            profile=options.profile,
            groups=tuple(sorted(user.groups)),
            cpu_millicores=options.cpu_limit,
            memory_bytes=options.memory_limit,
            gpu=gpu,
            gpu_count=options.gpu.count if options.gpu is not None else 0,
            rates=rates_for(instance.prices, gpu),
            started=now,
        )
        currency = self.currency

        def check(running: list[Interval]) -> str | None:
            return quota_refusal(instance.quotas, user, options, running, spent, currency)

        # Reading every open interval of the instance made each admission cost O(running
        # servers); only a group quota the user falls under needs other users' intervals.
        whole_instance = any(group in user.groups for group in instance.quotas.group_max_gpus)
        opened = await ledger.write(
            partial(open_interval, interval=interval, admit=check, whole_instance=whole_instance)
        )
        self.interval_id, self._opened = opened.id, opened

    def running(self) -> None:
        """The backend started the server: its run, and its cost, begin now. Queued, not awaited:
        nothing the start returns depends on it, and the ledger keeps one server's writes in order."""
        opened, self._opened = self._opened, None
        if self.interval_id is None or opened is None:
            return
        now = time.time()
        self._meter = metrics.CostMeter(replace(opened, started=now, last_seen=now))
        queued = self._ledger().write(partial(mark_running, interval_id=self.interval_id, now=now))
        queued.add_done_callback(partial(self._log_failure, "mark as running"))

    def seen(self, within: float | None = None) -> None:
        """A poll saw the server running: note "last seen running" (the ledger writes the notes
        of every server together, at most ``within`` seconds later: the spawner's poll
        interval) and count the cost since the last sighting in the metric."""
        if self.interval_id is None:
            return
        now = time.time()
        ledger = self._ledger()
        if self._meter is None and not self._resuming:
            self._resuming = True  # one lookup, even if polls come faster than its answer
            # A hub restart lost the meter: rebuild it from the row as written before this
            # sighting (lookups of one loop iteration share one query), so the metric also
            # counts the stretch since the last written sighting.
            # A sighting noted in this process but not yet written counts as written.
            since = ledger.noted(self.interval_id)
            row = ledger.lookup(self.interval_id)
            row.add_done_callback(partial(self._resume_meter, self.interval_id, now, since))
        ledger.seen(self.interval_id, now, within)
        if self._meter is not None:
            self._meter.advance(now)

    async def ended(self, at: float | None, *, ran: bool = False) -> None:
        """Close this run's interval at ``at`` (``None``: where it was last seen running; a start
        that never ran leaves no row; ``ran``: the backend did start it, so it is a run even if
        its "running" write was lost). Never raises: the ledger must not keep a server from
        stopping (the reconciler closes what is left open)."""
        interval_id, self.interval_id = self.interval_id, None
        self._opened, self._meter = None, None
        if interval_id is None:
            return
        try:
            ledger = self._ledger()
            # Its last sighting first: a server found gone ends where it was last seen.
            ledger.flush_seen(interval_id)
            closed = await ledger.write(partial(end_interval, interval_id=interval_id, at=at, ran=ran))
        except Exception:
            self.log.exception("Usage ledger: could not close interval %s", interval_id)
            return
        if closed is not None and closed.last_seen is not None and closed.stopped is not None:
            metrics.record_cost(closed.profile, interval_cost(closed, closed.last_seen, closed.stopped))

    def leave_open(self) -> None:
        """Forget the interval without closing it: the server could not be stopped now, and the
        reconciler closes it once the server is really gone (it is billed until then)."""
        self.interval_id, self._opened, self._meter = None, None, None

    def restore(self, interval_id: int | None) -> None:
        """After a hub restart: the interval the spawner's saved state names."""
        self.interval_id = interval_id

    def _resume_meter(
        self, interval_id: int, now: float, since: float | None, row: asyncio.Future[Interval | None]
    ) -> None:
        self._resuming = False
        if row.cancelled() or row.exception() is not None or self._meter is not None:
            return
        interval = row.result()
        if interval is None or interval.id != interval_id or interval.stopped is not None:
            return
        if interval.last_seen is None:
            return
        started = interval.last_seen if since is None else max(since, interval.last_seen)
        meter = metrics.CostMeter(replace(interval, started=started))
        meter.advance(now)  # the stretch up to this poll counts even if the server ended since
        if self.interval_id == interval_id:
            self._meter = meter

    def _log_failure(self, what: str, done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is not None:
            self.log.error("Usage ledger: could not %s %s", what, self.describe, exc_info=done.exception())


class NullRecorder(UsageRecorder):
    """For an instance with neither prices nor quotas: nothing is recorded, nothing refused."""

    async def form_lines(self, *, gpus_offered: bool = True) -> tuple[str, ...]:
        return ()

    async def admit(self, options: ResolvedOptions) -> None:
        return None

    def running(self) -> None:
        return None

    def seen(self, within: float | None = None) -> None:
        return None

    async def ended(self, at: float | None, *, ran: bool = False) -> None:
        self.interval_id = None


def recorder_for(
    instance: Instance,
    ledger: Callable[[], AsyncLedger],
    user: UserContext,
    server: str,
    log: logging.Logger,
    describe: str = "",
) -> UsageRecorder:
    """The recorder of one server: a :class:`NullRecorder` where the instance records nothing."""
    kind = UsageRecorder if records_usage(instance) else NullRecorder
    return kind(ledger=ledger, instance=instance, user=user, server=server, log=log, describe=describe)
