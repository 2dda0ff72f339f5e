"""The ledger on real databases (an SQLite file, and PostgreSQL when given): migrations, the
life of an interval, crash recovery, quota admission in one transaction, window queries."""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einfra_spawner.usage import Interval, Ledger, QuotaExceeded, Rates, interval_cost
from einfra_spawner.usage.schema import SCHEMA_VERSION, VERSIONS, current_version, migrate

T0 = 1_700_000_000.0
HOUR = 3600.0
RATES = Rates(
    currency="CZK", cpu_hour=Decimal("0.35"), memory_gib_hour=Decimal("0.04"), gpu_hour=Decimal("38.5")
)


def planned(
    user: str = "ada", server: str = "", *, gpus: int = 0, at: float = T0, **fields: object
) -> Interval:
    return Interval(
        instance="hub",
        user=user,
        server=server,
        profile="jupyterlab",
        groups=("gpu", "projects"),
        cpu_millicores=2000,
        memory_bytes=8 * 2**30,
        gpu="a40" if gpus else None,
        gpu_count=gpus,
        rates=RATES,
        started=at,
        **fields,  # type: ignore[arg-type]
    )


def test_migrations_are_versioned_and_idempotent(ledger: Ledger) -> None:
    with ledger.engine.connect() as connection:
        assert current_version(connection) == SCHEMA_VERSION
        assert connection.execute(sa.select(VERSIONS.c.version)).scalars().all() == list(
            range(1, SCHEMA_VERSION + 1)
        )
    assert migrate(ledger.engine) == SCHEMA_VERSION  # nothing left to do
    with ledger.engine.begin() as connection:
        connection.execute(VERSIONS.insert().values(version=SCHEMA_VERSION + 1))
    with pytest.raises(RuntimeError, match="newer than this einfra-spawner"):
        migrate(ledger.engine)


def test_an_interval_is_opened_run_seen_and_closed(ledger: Ledger) -> None:
    opened = ledger.open(planned(gpus=1))
    assert opened.id > 0 and opened.stopped is None
    # Not yet running: a reservation, counted by quotas but costing nothing.
    assert [i.id for i in ledger.open_intervals("hub")] == [opened.id]
    assert ledger.intervals(T0 - HOUR, T0 + HOUR) == []
    ledger.mark_running(opened.id, T0 + 10)
    before = ledger.seen_running(opened.id, T0 + 40)
    assert before is not None and before.last_seen == T0 + 10
    closed = ledger.end(opened.id, T0 + 10 + 2 * HOUR)
    assert closed is not None and (closed.started, closed.stopped) == (T0 + 10, T0 + 10 + 2 * HOUR)
    stored = ledger.get(opened.id)
    assert stored == dataclasses.replace(closed, last_seen=T0 + 40)
    assert stored.rates == RATES and stored.groups == ("gpu", "projects")
    assert interval_cost(stored, 0, T0 * 2).gpu == 77  # 38.5 x 2 h
    assert ledger.end(opened.id, T0 + 9 * HOUR) is None  # closing twice changes nothing
    assert ledger.open_intervals("hub") == []


def test_a_server_found_gone_ends_where_it_was_last_seen(ledger: Ledger) -> None:
    opened = ledger.open(planned())
    ledger.mark_running(opened.id, T0)
    ledger.seen_running(opened.id, T0 + 600)
    ledger.seen_running(opened.id, T0 + 300)  # late and out of order: never moves back
    closed = ledger.end(opened.id)  # the hub restarted and found it gone, hours later
    assert closed is not None and closed.stopped == T0 + 600


def test_a_run_whose_running_write_was_lost_is_still_billed(ledger: Ledger) -> None:
    # The backend started it, then the hub died before "running" was written: a poll that sees
    # it running, or a stop of a server that has backend state, makes it a run from admission.
    seen_later = ledger.open(planned(server="seen", at=T0))
    ledger.seen_running(seen_later.id, T0 + 600)
    closed = ledger.end(seen_later.id, T0 + 900)
    assert closed is not None and (closed.started, closed.last_seen, closed.stopped) == (
        T0,
        T0 + 600,
        T0 + 900,
    )
    stopped_at_once = ledger.open(planned(server="stopped", at=T0))
    closed = ledger.end(stopped_at_once.id, T0 + 60, ran=True)
    assert closed is not None and (closed.last_seen, closed.stopped) == (T0 + 60, T0 + 60)
    assert ledger.get(stopped_at_once.id) == closed
    gone_unseen = ledger.open(planned(server="gone", at=T0))
    closed = ledger.end(gone_unseen.id, None, ran=True)  # when it went is unknown: nothing billed
    assert closed is not None and closed.stopped == T0


def test_a_start_that_never_ran_leaves_nothing(ledger: Ledger) -> None:
    refused_by_backend = ledger.open(planned(server="a"))
    assert ledger.end(refused_by_backend.id, T0 + 5) is None
    cut_short = ledger.open(planned(server="b"))
    running = ledger.open(planned(server="c"))
    ledger.mark_running(running.id, T0)
    assert ledger.drop_reservations("other-hub") == 0
    assert ledger.drop_reservations("hub") == 1  # at hub start: the crash's half-made start
    assert [i.id for i in ledger.open_intervals("hub")] == [running.id]
    assert ledger.get(cut_short.id) is None and ledger.get(refused_by_backend.id) is None


def test_a_sweep_tried_again_keeps_the_starts_of_the_running_hub(ledger: Ledger) -> None:
    ledger.open(planned(server="cut-short", at=T0))
    admitted_since = ledger.open(planned(server="starting", at=T0 + HOUR))
    hub_started = T0 + HOUR / 2
    assert ledger.drop_reservations("hub", before=hub_started) == 1
    assert [i.id for i in ledger.open_intervals("hub")] == [admitted_since.id]
    assert ledger.drop_reservations("hub", before=hub_started) == 0  # again: nothing more


def test_a_new_run_ends_a_lost_run_of_the_same_server(ledger: Ledger) -> None:
    lost = ledger.open(planned(server="work"))
    ledger.mark_running(lost.id, T0)
    ledger.seen_running(lost.id, T0 + 120)
    again = ledger.open(planned(server="work", at=T0 + HOUR))
    assert ledger.get(lost.id) == dataclasses.replace(lost, started=T0, last_seen=T0 + 120, stopped=T0 + 120)
    assert [i.id for i in ledger.open_intervals("hub")] == [again.id]


def test_admission_sees_the_instances_open_intervals_and_may_refuse(ledger: Ledger) -> None:
    ledger.open(planned("ada", "one", gpus=2))
    ledger.open(planned("ben", "x", gpus=1))
    ledger.open(dataclasses.replace(planned("ada", "elsewhere", gpus=4), instance="other"))

    def at_most_three(running: list[Interval]) -> str | None:
        held = sum(i.gpus for i in running)
        return f"{held} GPUs in use" if held + 1 > 3 else None

    with pytest.raises(QuotaExceeded, match="3 GPUs in use"):
        ledger.open(planned("ada", "two", gpus=1), at_most_three)
    assert len(ledger.open_intervals("hub")) == 2  # the refused start left nothing


def test_the_window_query_keeps_overlapping_and_running_intervals(ledger: Ledger) -> None:
    ids = {}
    for name, start, stop in [
        ("before", 0, HOUR),
        ("across", HOUR, 3 * HOUR),
        ("inside", 2 * HOUR, 2.5 * HOUR),
        ("open", 2 * HOUR, None),
        ("after", 5 * HOUR, 6 * HOUR),
    ]:
        opened = ledger.open(planned("ada" if name != "inside" else "ben", name))
        ledger.mark_running(opened.id, T0 + start)
        if stop is not None:
            ledger.end(opened.id, T0 + stop)
        ids[opened.id] = name
    found = ledger.intervals(T0 + 1.5 * HOUR, T0 + 4 * HOUR)
    assert [ids[i.id] for i in found] == ["across", "inside", "open"]
    assert [ids[i.id] for i in ledger.intervals(T0 + 1.5 * HOUR, T0 + 4 * HOUR, "hub", ["ben"])] == ["inside"]
    assert ledger.intervals(T0, T0 + 9 * HOUR, "other") == []


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, str, float]]:
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["open", "run", "seen", "stop", "gone", "restart"]),
                st.sampled_from(["", "a"]),
                st.floats(1, 600),
            ),
            max_size=25,
        )
    )
    return steps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations())
def test_intervals_of_one_server_never_overlap(ledger: Ledger, steps: list[tuple[str, str, float]]) -> None:
    """Whatever happens (starts, polls, stops, servers found gone, hub restarts), the runs of one
    server are disjoint, and every closed run ends no earlier than it started."""
    with ledger.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM einfra_usage_intervals"))
    now = T0
    current: dict[str, int] = {}
    for action, server, step in steps:
        now += step
        interval_id = current.get(server)
        if action == "open":
            current[server] = ledger.open(planned(server=server, at=now)).id
        elif interval_id is None:
            continue
        elif action == "run":
            ledger.mark_running(interval_id, now)
        elif action == "seen":
            ledger.seen_running(interval_id, now)
        elif action == "stop":
            ledger.end(interval_id, now)
            del current[server]
        elif action == "gone":
            ledger.end(interval_id)
            del current[server]
        else:  # the hub restarts: its half-made starts are forgotten
            ledger.drop_reservations("hub")
    everything = ledger.intervals(0, now + HOUR, "hub", running_only_if_seen=False)
    for server in ("", "a"):
        runs = sorted(
            (i.started, i.stopped if i.stopped is not None else float("inf"))
            for i in everything
            if i.server == server
        )
        for start, stop in runs:
            assert stop >= start
        for (_, first_stop), (second_start, _) in itertools.pairwise(runs):
            assert first_stop <= second_start
