"""The reconciler: its rules as plain comparisons (``plan_actions`` is pure), a property over
generated snapshots with an oracle of its own, and one pass against a real ledger."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from einfra_spawner.backend import ServerRecord
from einfra_spawner.errors import BackendError
from einfra_spawner.names import ServerNames
from einfra_spawner.reconcile import (
    CloseInterval,
    HubServer,
    MarkRunning,
    Reconciler,
    RemoveOrphan,
    Snapshot,
    plan_actions,
)
from einfra_spawner.usage import AsyncLedger, Interval, Ledger

from ..usage.test_ledger import planned

NOW = 1_800_000_000.0
STARTED = NOW - 3600  # the hub process started an hour ago
GRACE = 120.0


def record(
    user: str = "ada", server: str = "", *, created: float = NOW - 600, running: bool = True
) -> ServerRecord:
    names = ServerNames(user, server)
    return ServerRecord(
        server_label=names.server_label,
        user_label=names.user_label,
        created=created,
        running=running,
        ref={"pod": names.pod},
        description=f"pod {names.pod}",
    )


def hub(user: str = "ada", server: str = "", *, running: bool = True, pending: bool = False) -> HubServer:
    return HubServer(user=user, server=server, running=running, pending=pending)


def ran(user: str = "ada", server: str = "", *, at: float = NOW - 600, seen: float = NOW - 30) -> Interval:
    return replace(planned(user, server, at=at), id=hash((user, server)) % 10_000, last_seen=seen)


def reserved(user: str = "ada", server: str = "", *, at: float = NOW - 600) -> Interval:
    return replace(planned(user, server, at=at), id=hash((user, server, "r")) % 10_000)


def snapshot(
    backend: Sequence[ServerRecord] | None = (),
    hub_servers: Sequence[HubServer] = (),
    intervals: Sequence[Interval] = (),
) -> Snapshot:
    return Snapshot(
        backend=None if backend is None else tuple(backend),
        hub=tuple(hub_servers),
        intervals=tuple(intervals),
        now=NOW,
        process_started=STARTED,
        grace=GRACE,
    )


# --- the rules ----------------------------------------------------------------------------------


def test_what_all_three_agree_on_is_left_alone() -> None:
    assert plan_actions(snapshot([record()], [hub()], [ran()])) == []


def test_a_server_no_hub_knows_is_removed_and_billed_until_removed() -> None:
    # A hub killed during a start: the pod runs, JupyterHub never recorded it, the ledger holds
    # its reservation. Created before this hub process started: it cannot be a start in flight.
    orphan = record(created=STARTED - 10)
    reservation = reserved(at=STARTED - 12)
    assert plan_actions(snapshot([orphan], [], [reservation])) == [RemoveOrphan(orphan, (reservation,))]


def test_a_young_orphan_waits_for_the_grace_period() -> None:
    young = record(created=NOW - GRACE / 2)
    assert plan_actions(snapshot([young], [], [reserved(at=NOW - GRACE / 2)])) == []
    old = record(created=NOW - GRACE - 1)
    assert plan_actions(snapshot([old], [], [])) == [RemoveOrphan(old, ())]


def test_a_server_whose_stop_failed_is_removed_at_once() -> None:
    # Its interval says it ran: JupyterHub forgot it after a stop the API refused. No start can
    # be on its way, however young the pod.
    young = record(created=NOW - 5)
    interval = ran(at=NOW - 5, seen=NOW - 1)
    assert plan_actions(snapshot([young], [], [interval])) == [RemoveOrphan(young, (interval,))]


@pytest.mark.parametrize("known", [hub(pending=True, running=False), hub(running=True, pending=True)])
def test_a_start_or_stop_in_progress_is_never_touched(known: HubServer) -> None:
    assert plan_actions(snapshot([record(created=STARTED - 100)], [known], [reserved()])) == []
    assert plan_actions(snapshot([], [known], [reserved(), ran("ada", "")])) == []


def test_usage_of_a_server_that_is_gone_is_closed_where_last_seen() -> None:
    interval = ran()
    assert plan_actions(snapshot([], [], [interval])) == [CloseInterval(interval)]
    # One JupyterHub has is left to its polling (which closes it where last seen, too).
    assert plan_actions(snapshot([], [hub()], [interval])) == []


def test_a_reservation_is_dropped_only_once_no_start_can_use_it() -> None:
    fresh = reserved(at=NOW - 5)
    assert plan_actions(snapshot([], [], [fresh])) == []  # a start admitted a moment ago
    stale = reserved(at=NOW - GRACE - 1)
    before_restart = reserved("grace", at=STARTED - 1)
    assert plan_actions(snapshot([], [], [stale, before_restart])) == [
        CloseInterval(stale),
        CloseInterval(before_restart),
    ]


def test_a_running_server_whose_running_mark_was_lost_is_marked_from_its_creation() -> None:
    interval = reserved(at=NOW - 600)
    server = record(created=NOW - 590)
    assert plan_actions(snapshot([server], [hub()], [interval])) == [MarkRunning(interval, NOW - 590)]


def test_without_an_inventory_only_reservations_from_before_the_restart_go() -> None:
    old, fresh = reserved("ada", at=STARTED - 1), reserved("ben", at=NOW - GRACE - 1)
    running = ran("cleo")
    known = reserved("dan", at=STARTED - 1)
    planned_actions = plan_actions(snapshot(None, [hub("dan")], [old, fresh, running, known]))
    assert planned_actions == [CloseInterval(old)]


def test_servers_are_matched_exactly_by_user_and_server() -> None:
    # Names that fold to the same DNS characters are different servers.
    mine, other = record("ada.b", "x"), record("ada-b", "x")
    plan = plan_actions(snapshot([mine, other], [hub("ada.b", "x")], [ran("ada.b", "x")]))
    assert plan == [RemoveOrphan(other, ())]


# --- a property, with an oracle that does not reuse the planner ----------------------------------

users = st.sampled_from(["ada", "ben", "cleo"])
servers = st.sampled_from(["", "gpu"])
times = st.floats(min_value=STARTED - 3600, max_value=NOW)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    keys = draw(st.lists(st.tuples(users, servers), unique=True, max_size=6))
    backend: list[ServerRecord] = []
    hub_servers: list[HubServer] = []
    intervals: list[Interval] = []
    for user, server in keys:
        if draw(st.booleans()):
            backend.append(record(user, server, created=draw(times), running=draw(st.booleans())))
        if draw(st.booleans()):
            hub_servers.append(hub(user, server, running=draw(st.booleans()), pending=draw(st.booleans())))
        if draw(st.booleans()):
            at = draw(times)
            seen = draw(st.one_of(st.none(), st.floats(min_value=at, max_value=NOW)))
            intervals.append(replace(planned(user, server, at=at), id=len(intervals) + 1, last_seen=seen))
    return snapshot(backend, hub_servers, intervals)


@given(snapshots())
def test_the_reconciler_never_touches_what_a_hub_has_and_leaves_nothing_unaccounted(state: Snapshot) -> None:
    actions = plan_actions(state)
    active = {(h.user, h.server) for h in state.hub if h.running or h.pending}
    pending = {(h.user, h.server) for h in state.hub if h.pending}
    assert state.backend is not None
    labels = {
        ServerNames(u, s).server_label: (u, s) for u, s in [(i.user, i.server) for i in state.intervals]
    }
    labels.update({ServerNames(h.user, h.server).server_label: (h.user, h.server) for h in state.hub})
    removed = {a.record.server_label for a in actions if isinstance(a, RemoveOrphan)}
    closed = {a.interval.id for a in actions if isinstance(a, CloseInterval)}
    for label in removed:  # never a server JupyterHub has, or is starting or stopping
        assert labels.get(label) not in active
    for action in actions:
        if isinstance(action, CloseInterval):  # never the usage of a server that still runs
            assert (action.interval.user, action.interval.server) not in pending
            running_labels = {r.server_label for r in state.backend}
            assert (
                ServerNames(action.interval.user, action.interval.server).server_label not in running_labels
            )
    # After the actions, every open interval that ran belongs to a server the backend runs
    # (and is kept) or is closed; every server no hub knows is removed or still in its grace.
    kept = {r.server_label for r in state.backend if r.server_label not in removed}
    for interval in state.intervals:
        label = ServerNames(interval.user, interval.server).server_label
        if interval.id in closed or (interval.user, interval.server) in active:
            continue
        if interval.last_seen is not None:
            assert label in kept or label in removed
    for server in state.backend:
        owner = labels.get(server.server_label)
        if owner in active or server.server_label in removed:
            continue
        its = [
            i for i in state.intervals if ServerNames(i.user, i.server).server_label == server.server_label
        ]
        assert not any(i.last_seen is not None for i in its)  # one that ran goes at once
        assert server.created >= state.process_started and state.now - server.created < state.grace


# --- one pass, against a real ledger -----------------------------------------------------------


class Inventory:
    """A backend's inventory and removals, recorded."""

    def __init__(self, servers: list[ServerRecord]) -> None:
        self.servers = servers
        self.removed: list[ServerRecord] = []
        self.refuse = False

    async def inventory(self, instance: str) -> list[ServerRecord] | None:
        assert instance == "hub"
        return list(self.servers)

    async def remove(self, server: ServerRecord) -> None:
        if self.refuse:
            raise BackendError("the API does not answer")
        self.removed.append(server)
        self.servers.remove(server)


@pytest.fixture
async def ledger() -> AsyncIterator[AsyncLedger]:
    opened = AsyncLedger("sqlite://")
    yield opened
    opened.shutdown()


def reconciler(backend: Inventory, ledger: AsyncLedger, hub_servers: list[HubServer]) -> Reconciler:
    async def view() -> list[HubServer]:
        return hub_servers

    async def opened() -> AsyncLedger:
        return ledger

    return Reconciler(
        instance="hub",
        backend=backend,  # type: ignore[arg-type]  # the two methods the reconciler calls
        ledger=opened,
        hub_view=view,
        grace=GRACE,
        process_started=STARTED,
        log=logging.getLogger("test"),
        clock=lambda: NOW,
    )


async def test_a_pass_removes_an_orphan_and_bills_it_until_removed(ledger: AsyncLedger) -> None:
    orphan = record("ada", "gpu", created=STARTED - 100)
    interval = await ledger.call(Ledger.open, planned("ada", "gpu", gpus=2, at=STARTED - 101))
    backend = Inventory([orphan])
    done = await reconciler(backend, ledger, []).run_once()
    assert [type(a) for a in done] == [RemoveOrphan] and backend.removed == [orphan]
    billed = await ledger.call(Ledger.get, interval.id)
    assert billed is not None
    assert (billed.started, billed.stopped) == (STARTED - 100, NOW)  # from creation to removal
    assert await ledger.call(Ledger.open_intervals, "hub") == []
    assert await reconciler(backend, ledger, []).run_once() == []  # level-triggered: settled


async def test_a_removal_that_fails_is_tried_at_the_next_pass(ledger: AsyncLedger) -> None:
    orphan = record(created=STARTED - 100)
    interval = await ledger.call(Ledger.open, planned(at=STARTED - 101))
    backend = Inventory([orphan])
    backend.refuse = True
    assert await reconciler(backend, ledger, []).run_once() == []
    assert [i.id for i in await ledger.call(Ledger.open_intervals, "hub")] == [interval.id]  # still counted
    backend.refuse = False
    assert len(await reconciler(backend, ledger, []).run_once()) == 1
    assert await ledger.call(Ledger.open_intervals, "hub") == []


async def test_a_pass_closes_usage_of_servers_that_are_gone(ledger: AsyncLedger) -> None:
    gone = await ledger.call(Ledger.open, planned("ben", at=NOW - 900))
    await ledger.call(Ledger.mark_running, gone.id, NOW - 890)
    await ledger.call(Ledger.seen_running, gone.id, NOW - 60)
    stale = await ledger.call(Ledger.open, planned("cleo", at=STARTED - 5))
    await reconciler(Inventory([]), ledger, []).run_once()
    closed = await ledger.call(Ledger.get, gone.id)
    assert closed is not None and closed.stopped == NOW - 60
    assert await ledger.call(Ledger.get, stale.id) is None  # a reservation that never ran
