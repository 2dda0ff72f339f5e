"""The ledger's statements: reads and writes of intervals, each a function of an open connection.

Where it sits in the data flow: below :class:`~einfra_spawner.usage.ledger.Ledger` (which runs
each of these in a transaction of its own) and
:class:`~einfra_spawner.usage.async_ledger.AsyncLedger` (which runs the writes of many callers in
one transaction on its worker thread), above the tables of :mod:`.schema`. Nothing here opens,
commits or rolls back a transaction: whoever calls a function owns the transaction it runs in,
which is what lets a batch of writes share one commit.

The rules of a run live here: an interval is opened at admission (after the quota check, in the
same transaction, so two concurrent starts cannot both take the last GPU), marked running when the
backend has started the server, seen running as polls see it (never moved back), and closed at
stop, or at its last-seen time when the server was found gone. A start that never ran leaves no
interval.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa

from ..errors import EInfraError
from .cost import Interval, Rates
from .schema import INTERVALS

__all__ = [
    "QuotaExceeded",
    "Write",
    "drop_reservations",
    "end_interval",
    "interval_by_id",
    "intervals_by_ids",
    "intervals_overlapping",
    "mark_running",
    "open_interval",
    "open_interval_by_id",
    "open_intervals",
    "seen_many",
    "seen_running",
]

T = TypeVar("T")
_COLUMNS = INTERVALS.c
#: A write: a function of an open connection, run inside a transaction it does not manage.
Write = Callable[[sa.Connection], T]

# Statements are built once, with bound parameters: building one costs more than running it.
_OPEN_OF_INSTANCE = sa.select(INTERVALS).where(
    _COLUMNS.instance == sa.bindparam("instance"), _COLUMNS.stopped.is_(None)
)
_OPEN_OF_USER = _OPEN_OF_INSTANCE.where(_COLUMNS.user_name == sa.bindparam("user"))
_OPEN_BY_ID = sa.select(INTERVALS).where(
    _COLUMNS.id == sa.bindparam("interval_id"), _COLUMNS.stopped.is_(None)
)
_BY_ID = sa.select(INTERVALS).where(_COLUMNS.id == sa.bindparam("interval_id"))
_INSERT = sa.insert(INTERVALS)
#: Ids per ``IN (...)`` query: well under SQLite's limit on bound parameters.
_IDS_PER_QUERY = 500
_DELETE = sa.delete(INTERVALS).where(_COLUMNS.id == sa.bindparam("interval_id"))
_CLOSE = (
    sa.update(INTERVALS).where(_COLUMNS.id == sa.bindparam("interval_id")).values(stopped=sa.bindparam("at"))
)
# A run whose "running" write was lost (a crash) closes as a run: seen until it stopped.
_CLOSE_RUN = (
    sa.update(INTERVALS)
    .where(_COLUMNS.id == sa.bindparam("interval_id"))
    .values(stopped=sa.bindparam("at"), last_seen=sa.bindparam("at"))
)
_MARK_RUNNING = (
    sa.update(INTERVALS)
    .where(_COLUMNS.id == sa.bindparam("interval_id"), _COLUMNS.stopped.is_(None))
    .values(started=sa.bindparam("now"), last_seen=sa.bindparam("now"))
)
# Never moves back: a late poll answer must not undo a later one. A reservation seen running (its
# "running" write was lost to a crash) becomes a run from its admission.
_SEEN = (
    sa.update(INTERVALS)
    .where(
        _COLUMNS.id == sa.bindparam("interval_id"),
        _COLUMNS.stopped.is_(None),
        sa.or_(_COLUMNS.last_seen.is_(None), _COLUMNS.last_seen < sa.bindparam("now")),
    )
    .values(last_seen=sa.bindparam("now"))
)


class QuotaExceeded(EInfraError):
    """A start refused by a quota; the message says the limit and what is in use."""


def _row_values(interval: Interval) -> dict[str, Any]:
    return {
        "instance": interval.instance,
        "user_name": interval.user,
        "server_name": interval.server,
        "profile": interval.profile,
        "groups": json.dumps(sorted(interval.groups)),
        "cpu_millicores": interval.cpu_millicores,
        "memory_bytes": interval.memory_bytes,
        "gpu": interval.gpu,
        "gpu_count": interval.gpu_count,
        "currency": interval.rates.currency,
        "cpu_hour": str(interval.rates.cpu_hour),
        "memory_gib_hour": str(interval.rates.memory_gib_hour),
        "gpu_hour": str(interval.rates.gpu_hour),
        "started": interval.started,
        "last_seen": interval.last_seen,
        "stopped": interval.stopped,
    }


def _interval(row: sa.Row[Any]) -> Interval:
    return Interval(
        id=row.id,
        instance=row.instance,
        user=row.user_name,
        server=row.server_name,
        profile=row.profile,
        groups=tuple(json.loads(row.groups)),
        cpu_millicores=row.cpu_millicores,
        memory_bytes=row.memory_bytes,
        gpu=row.gpu,
        gpu_count=row.gpu_count,
        rates=Rates(
            currency=row.currency,
            cpu_hour=Decimal(row.cpu_hour),
            memory_gib_hour=Decimal(row.memory_gib_hour),
            gpu_hour=Decimal(row.gpu_hour),
        ),
        started=row.started,
        last_seen=row.last_seen,
        stopped=row.stopped,
    )


# --- the reads -----------------------------------------------------------------------------


def open_intervals(connection: sa.Connection, instance: str, user: str | None = None) -> list[Interval]:
    """Everything running or starting on ``instance`` (only ``user``'s when given)."""
    if user is None:
        rows = connection.execute(_OPEN_OF_INSTANCE, {"instance": instance})
    else:
        rows = connection.execute(_OPEN_OF_USER, {"instance": instance, "user": user})
    return [_interval(row) for row in rows]


def open_interval_by_id(connection: sa.Connection, interval_id: int) -> Interval | None:
    """The interval ``interval_id`` if it is open, else ``None``."""
    row = connection.execute(_OPEN_BY_ID, {"interval_id": interval_id}).first()
    return None if row is None else _interval(row)


def interval_by_id(connection: sa.Connection, interval_id: int) -> Interval | None:
    """The interval ``interval_id``, open or closed (``None`` if there is none)."""
    row = connection.execute(_BY_ID, {"interval_id": interval_id}).first()
    return None if row is None else _interval(row)


def intervals_by_ids(connection: sa.Connection, interval_ids: Sequence[int]) -> dict[int, Interval]:
    """The intervals of ``interval_ids`` that exist, by id (a few queries of many ids each)."""
    found: dict[int, Interval] = {}
    for start in range(0, len(interval_ids), _IDS_PER_QUERY):
        chunk = list(interval_ids[start : start + _IDS_PER_QUERY])
        for row in connection.execute(sa.select(INTERVALS).where(_COLUMNS.id.in_(chunk))):
            found[row.id] = _interval(row)
    return found


def intervals_overlapping(
    connection: sa.Connection,
    since: float,
    until: float,
    instance: str | None = None,
    users: Sequence[str] = (),
    running_only_if_seen: bool = True,
) -> list[Interval]:
    """Intervals that overlap ``[since, until]`` (open ones included), oldest first.

    Reservations (starts not yet running) cost nothing and are left out unless
    ``running_only_if_seen`` is false.
    """
    query = sa.select(INTERVALS).where(
        _COLUMNS.started < until,
        sa.or_(_COLUMNS.stopped.is_(None), _COLUMNS.stopped > since),
    )
    if instance is not None:
        query = query.where(_COLUMNS.instance == instance)
    if users:
        query = query.where(_COLUMNS.user_name.in_(list(users)))
    if running_only_if_seen:
        query = query.where(_COLUMNS.last_seen.is_not(None))
    return [_interval(row) for row in connection.execute(query.order_by(_COLUMNS.started, _COLUMNS.id))]


# --- the writes ----------------------------------------------------------------------------


def open_interval(
    connection: sa.Connection,
    interval: Interval,
    admit: Callable[[list[Interval]], str | None] | None = None,
    *,
    whole_instance: bool = True,
) -> Interval:
    """Record a start; returns it with its id.

    ``admit`` sees the instance's open intervals (only the user's own when ``whole_instance``
    is false: no group quota concerns the others) and may refuse with a message: then
    :class:`QuotaExceeded` is raised before anything is written. An interval still open for this
    very server belongs to a run the hub lost track of: it is ended where it was last seen (or
    dropped, if it never ran), so one server's runs never overlap, and it is not counted."""
    scope = None if whole_instance else interval.user
    rows = open_intervals(connection, interval.instance, scope)
    lost = [i for i in rows if i.user == interval.user and i.server == interval.server]
    if admit is not None:
        refusal = admit([i for i in rows if i not in lost])
        if refusal is not None:
            raise QuotaExceeded(refusal)
    for earlier in lost:
        if earlier.last_seen is None:
            connection.execute(_DELETE, {"interval_id": earlier.id})
        else:
            connection.execute(_CLOSE, {"interval_id": earlier.id, "at": earlier.last_seen})
    values = _row_values(replace(interval, stopped=None))
    new_id = connection.execute(_INSERT, values).inserted_primary_key
    assert new_id is not None
    return replace(interval, id=int(new_id[0]), stopped=None)


def mark_running(connection: sa.Connection, interval_id: int, now: float) -> None:
    """The server started: its run (and its cost) begins now."""
    connection.execute(_MARK_RUNNING, {"interval_id": interval_id, "now": now})


def seen_running(connection: sa.Connection, interval_id: int, now: float) -> None:
    """Poll saw the server running at ``now`` (an earlier time never overwrites a later one)."""
    connection.execute(_SEEN, {"interval_id": interval_id, "now": now})


def seen_many(connection: sa.Connection, sightings: Sequence[tuple[int, float]]) -> None:
    """Many sightings ``(interval_id, now)`` in one statement (executemany), each with the rule
    of :func:`seen_running`."""
    if sightings:
        connection.execute(_SEEN, [{"interval_id": i, "now": now} for i, now in sightings])


def end_interval(
    connection: sa.Connection, interval_id: int, at: float | None = None, *, ran: bool = False
) -> Interval | None:
    """Close an open interval at ``at`` (a stop), or at its last-seen time when ``at`` is
    ``None`` (found gone). One that never ran is deleted, unless ``ran`` says the server did run
    (the backend started it) although its "running" write was lost to a crash: it is then closed
    as a run from its admission (to ``at``, or to its admission when the end is unknown: never
    billed for time nobody saw). Returns the closed interval, or ``None`` when there was nothing
    open (or it never ran)."""
    row = connection.execute(_OPEN_BY_ID, {"interval_id": interval_id}).first()
    if row is None:
        return None
    if row.last_seen is None:
        if not ran:
            connection.execute(_DELETE, {"interval_id": interval_id})
            return None
        stopped = row.started if at is None else max(at, row.started)
        connection.execute(_CLOSE_RUN, {"interval_id": interval_id, "at": stopped})
        return replace(_interval(row), stopped=stopped, last_seen=stopped)
    stopped = row.last_seen if at is None else max(at, row.started)
    connection.execute(_CLOSE, {"interval_id": interval_id, "at": stopped})
    return replace(_interval(row), stopped=stopped)


def drop_reservations(connection: sa.Connection, instance: str, before: float | None = None) -> int:
    """Delete the starts of ``instance`` that never ran (admitted before ``before``, when
    given); returns how many."""
    condition = (_COLUMNS.instance == instance) & _COLUMNS.stopped.is_(None) & _COLUMNS.last_seen.is_(None)
    if before is not None:
        condition = condition & (_COLUMNS.started < before)
    result = connection.execute(sa.delete(INTERVALS).where(condition))
    return int(result.rowcount or 0)
