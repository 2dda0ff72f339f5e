"""The reconciler: keeps what the backend runs, what JupyterHub knows and what the ledger counts
in step (the controller pattern: level-triggered, it compares states, not events).

Three records describe a server (see ``ARCHITECTURE.md``, "The hub process and the life cycle"):

* what the **backend** runs: :meth:`~einfra_spawner.backend.Backend.inventory`, from its watch
  caches or records, only objects with this project's labels and this instance's name;
* what **JupyterHub** knows: servers it has as running, and starts and stops in progress;
* what the **ledger** counts: the instance's open intervals (reservations and runs).

:func:`plan_actions` is pure: a :class:`Snapshot` in, a list of actions out, so its rules are
tested as plain comparisons and properties. :class:`Reconciler` takes the snapshot, carries the
actions out, logs each at INFO with user and server, and counts it in ``/hub/metrics``.

The rules, for one server (matched by its server label, which is unique per user and server):

* a backend server no hub knows (not running, no start or stop in progress) is an **orphan**:
  removed once it is older than the grace period, or at once when it was created before this
  hub process started or its interval says it ran (neither can be a start still on its way);
  its interval is then closed at the moment it was removed, so billing covers the time it ran;
* an open interval whose server the backend does not run, and JupyterHub does not have either,
  is **closed** where the server was last seen running, or dropped if it never ran (a
  reservation, once no start can still be using it); a server JupyterHub has is left to its
  polling;
* a reservation whose server runs and JupyterHub has as running is **marked running** from the
  moment the backend created it (the write was lost, e.g. to a crash).

Each pass also has the backend remove the homes kept after resets whose time is up
(:meth:`~einfra_spawner.backend.Backend.expire_homes`; the time is in each home's labels, set
by the reset that asked, so no pass can shorten it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial

from .backend import Backend, ServerRecord
from .names import ServerNames
from .usage import metrics
from .usage.async_ledger import AsyncLedger
from .usage.cost import Interval
from .usage.intervals import end_interval, mark_running
from .usage.ledger import Ledger

__all__ = [
    "CloseInterval",
    "HubServer",
    "HubView",
    "MarkRunning",
    "Reconciler",
    "RemoveOrphan",
    "Snapshot",
    "plan_actions",
]


@dataclass(frozen=True, slots=True)
class HubServer:
    """A server as JupyterHub knows it."""

    user: str
    server: str
    #: JupyterHub has it as running (its database holds a server for it).
    running: bool
    #: A start, stop or check of it is in progress in this hub process.
    pending: bool

    @property
    def label(self) -> str:
        return _server_label(self.user, self.server)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The three records at one moment, and what the rules need to know about time."""

    #: ``None``: the backend keeps no inventory (see :class:`~einfra_spawner.backend.BackendBase`).
    backend: tuple[ServerRecord, ...] | None
    hub: tuple[HubServer, ...]
    intervals: tuple[Interval, ...]
    #: Seconds since the epoch.
    now: float
    #: When this hub process started: nothing created before can be a start in flight.
    process_started: float
    #: Seconds a start may take before what it created counts as left behind.
    grace: float


@dataclass(frozen=True, slots=True)
class RemoveOrphan:
    """Remove a server no hub knows; close its intervals at the moment it is gone."""

    record: ServerRecord
    intervals: tuple[Interval, ...]


@dataclass(frozen=True, slots=True)
class CloseInterval:
    """Close an interval whose server is gone (at its last sighting), or drop a reservation."""

    interval: Interval


@dataclass(frozen=True, slots=True)
class MarkRunning:
    """A reservation whose server runs: its run began when the backend created the server."""

    interval: Interval
    since: float


Action = RemoveOrphan | CloseInterval | MarkRunning


@lru_cache(maxsize=16384)
def _server_label(user: str, server: str) -> str:
    # A hash per call: a pass over thousands of servers reads each name twice (JupyterHub's and
    # the ledger's record of it), so each is computed once.
    return ServerNames(user, server).server_label


def _label(interval: Interval) -> str:
    return _server_label(interval.user, interval.server)


def _may_be_in_flight(created: float, snapshot: Snapshot) -> bool:
    """Whether something created at ``created`` may belong to a start still on its way."""
    return created >= snapshot.process_started and snapshot.now - created < snapshot.grace


def _absent(known: HubServer | None) -> bool:
    return known is None or not (known.running or known.pending)


def plan_actions(snapshot: Snapshot) -> list[Action]:
    """What to do so that the three records agree (pure: no clock, no I/O).

    Without a backend inventory only what cannot be wrong is done: reservations made before this
    hub process started, for servers JupyterHub does not have, are dropped."""
    hub = {server.label: server for server in snapshot.hub}
    if snapshot.backend is None:
        return [
            CloseInterval(i)
            for i in snapshot.intervals
            if i.last_seen is None and i.started < snapshot.process_started and _absent(hub.get(_label(i)))
        ]
    by_label: dict[str, list[Interval]] = {}
    for interval in snapshot.intervals:
        by_label.setdefault(_label(interval), []).append(interval)
    actions: list[Action] = []
    in_backend: set[str] = set()
    for record in snapshot.backend:
        in_backend.add(record.server_label)
        known = hub.get(record.server_label)
        its = tuple(by_label.get(record.server_label, ()))
        if known is not None and (known.running or known.pending):
            if known.running and record.running and not known.pending:
                actions.extend(
                    MarkRunning(i, max(i.started, record.created)) for i in its if i.last_seen is None
                )
            continue
        ran = any(i.last_seen is not None for i in its)
        if ran or not _may_be_in_flight(record.created, snapshot):
            actions.append(RemoveOrphan(record, its))
    for label, intervals in by_label.items():
        if label in in_backend:
            continue
        known = hub.get(label)
        if known is not None and (known.running or known.pending):
            # JupyterHub's own polling settles the servers it has (a backend that lists no
            # record for one, e.g. started before it kept records, is not proof that it is
            # gone), and a start or stop in progress settles its own interval.
            continue
        for interval in intervals:
            if interval.last_seen is None and _may_be_in_flight(interval.started, snapshot):
                continue  # admitted a moment ago: its start may not have reached the backend yet
            actions.append(CloseInterval(interval))
    return actions


#: What JupyterHub knows, read in the hub's process (see :mod:`einfra_spawner.runtime`).
HubView = Callable[[], Awaitable[Sequence[HubServer] | None]]


class Reconciler:
    """Takes a :class:`Snapshot` of one instance and carries out :func:`plan_actions`."""

    def __init__(
        self,
        *,
        instance: str,
        backend: Backend,
        ledger: Callable[[], Awaitable[AsyncLedger | None]],
        hub_view: HubView,
        grace: float,
        process_started: float,
        log: logging.Logger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self.backend = backend
        self.ledger = ledger
        self.hub_view = hub_view
        self.grace = grace
        self.process_started = process_started
        self.log = log
        self.clock = clock

    async def snapshot(self) -> Snapshot | None:
        """The three records, or ``None`` when one of them cannot be read now."""
        ledger = await self.ledger()  # None: the instance records no usage
        # The ledger first: an interval marked running after this read has its server in the
        # backend's inventory read below, so a fresh run is never taken for a lost one.
        intervals = [] if ledger is None else await ledger.call(Ledger.open_intervals, self.instance)
        backend = await self.backend.inventory(self.instance)
        hub = await self.hub_view()
        if hub is None:
            self.log.debug("Reconcile: JupyterHub has not finished starting")
            return None
        return Snapshot(
            backend=None if backend is None else tuple(backend),
            hub=tuple(hub),
            intervals=tuple(intervals),
            now=self.clock(),
            process_started=self.process_started,
            grace=self.grace,
        )

    async def run_once(self) -> list[Action]:
        """One pass: compare, act, and return what was done (actions that failed are logged
        and left for the next pass)."""
        snapshot = await self.snapshot()
        if snapshot is None:
            return []
        done: list[Action] = []
        # Pure and over frozen records: planned off the event loop, which a pass over thousands
        # of servers would otherwise hold for a few hundred milliseconds (benchmarks/scale.py).
        for action in await asyncio.to_thread(plan_actions, snapshot):
            try:
                await self._carry_out(action)
            except Exception:
                self.log.exception("Reconcile: could not %s", _describe(action))
                metrics.RECONCILE_ACTIONS.labels(action=_kind(action), outcome="failed").inc()
                continue
            metrics.RECONCILE_ACTIONS.labels(action=_kind(action), outcome="done").inc()
            done.append(action)
        await self.expire_homes()
        return done

    async def expire_homes(self) -> list[str]:
        """Have the backend remove the homes kept after resets whose time is up; a failure is
        logged and left for the next pass."""
        try:
            removed = await self.backend.expire_homes(self.instance, self.clock())
        except Exception:
            self.log.exception("Reconcile: could not remove the old homes whose time is up")
            metrics.RECONCILE_ACTIONS.labels(action="expire_home", outcome="failed").inc()
            return []
        for what in removed:
            self.log.info("Reconcile: removed %s, whose time was up", what)
            metrics.RECONCILE_ACTIONS.labels(action="expire_home", outcome="done").inc()
        return removed

    async def _carry_out(self, action: Action) -> None:
        self.log.info("Reconcile: %s", _describe(action))
        if isinstance(action, RemoveOrphan):
            await self.backend.remove(action.record)
            gone = self.clock()
            ledger = await self.ledger()
            if ledger is None:
                return
            for interval in action.intervals:
                if interval.last_seen is None:  # it ran, unknown to any hub: bill it as it ran
                    since = max(interval.started, action.record.created)
                    await ledger.write(partial(mark_running, interval_id=interval.id, now=since))
                await ledger.write(partial(end_interval, interval_id=interval.id, at=gone))
            return
        ledger = await self.ledger()
        if ledger is None:  # no ledger, no intervals: nothing of this kind is ever planned
            return
        if isinstance(action, CloseInterval):
            await ledger.write(partial(end_interval, interval_id=action.interval.id, at=None))
        else:
            await ledger.write(partial(mark_running, interval_id=action.interval.id, now=action.since))

    async def run_forever(self, interval: float, started: Callable[[], Awaitable[None]]) -> None:
        """Wait for ``started`` (the hub is up), then a pass every ``interval`` seconds; a pass
        that fails is logged and the next one runs as planned."""
        await started()
        while True:
            try:
                await self.run_once()
            except Exception:
                self.log.exception("Reconcile: the pass failed; trying again in %g s", interval)
            await asyncio.sleep(interval)


def _kind(action: Action) -> str:
    if isinstance(action, RemoveOrphan):
        return "remove_orphan"
    if isinstance(action, CloseInterval):
        return "close_interval"
    return "mark_running"


def _who(interval: Interval) -> str:
    return f"user {interval.user!r}, server {interval.server!r}"


def _describe(action: Action) -> str:
    if isinstance(action, RemoveOrphan):
        record = action.record
        named = f"user {record.user!r}, server {record.server!r}" if record.user is not None else ""
        owners = _owners(action.intervals) or named or f"server label {record.server_label}"
        return f"remove {action.record.description or 'a server'} that no hub knows ({owners})"
    if isinstance(action, CloseInterval):
        if action.interval.last_seen is None:
            return f"drop the reservation of a start that never ran ({_who(action.interval)})"
        return f"close the usage of a server that is gone ({_who(action.interval)}), where last seen"
    return f"mark as running since it was created ({_who(action.interval)})"


def _owners(intervals: Iterable[Interval]) -> str:
    return "; ".join(sorted({_who(i) for i in intervals}))
