"""Operators' usage report: per-user totals from the ledger as a table, CSV or JSON.

Where it sits in the data flow: ``einfra-spawner usage`` (:mod:`einfra_spawner.cli`) reads the
intervals overlapping the window from the ledger and hands them here; this module filters them
by the groups stored at each interval's start, sums them with :mod:`.cost` and formats the rows.
Pure: no clock, no I/O (the caller passes "now" and writes the text).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .cost import Interval, cost_by_user, money

__all__ = ["UsageRow", "format_rows", "usage_rows"]

_HOUR = 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRow:
    """One user's totals within the window, in one currency."""

    user: str
    currency: str
    servers: int  # runs that overlap the window
    running: int  # of which still running
    cpu_hours: float
    gpu_hours: float
    cpu: str
    memory: str
    gpu: str
    total: str


def usage_rows(
    intervals: Iterable[Interval], start: float, end: float, *, groups: Sequence[str] = ()
) -> list[UsageRow]:
    """Per-user totals; with ``groups``, only intervals whose user was in one of them at the start."""
    wanted = set(groups)
    chosen = [i for i in intervals if not wanted or wanted.intersection(i.groups)]
    rows = []
    for (user, currency), cost in cost_by_user(chosen, start, end).items():
        mine = [i for i in chosen if i.user == user and i.rates.currency == currency]

        def hours(interval: Interval) -> float:
            stopped = end if interval.stopped is None else min(interval.stopped, end)
            return max(0.0, stopped - max(interval.started, start)) / _HOUR

        rows.append(
            UsageRow(
                user=user,
                currency=currency,
                servers=len(mine),
                running=sum(1 for i in mine if i.stopped is None),
                cpu_hours=round(sum(hours(i) * i.cpu_millicores / 1000 for i in mine), 3),
                gpu_hours=round(sum(hours(i) * i.gpus for i in mine), 3),
                cpu=str(money(cost.cpu)),
                memory=str(money(cost.memory)),
                gpu=str(money(cost.gpu)),
                total=str(money(cost.total)),
            )
        )
    return rows


_FIELDS = (
    "user",
    "servers",
    "running",
    "cpu_hours",
    "gpu_hours",
    "cpu",
    "memory",
    "gpu",
    "total",
    "currency",
)


def format_rows(rows: Sequence[UsageRow], form: str) -> str:
    """``table`` (aligned, for people), ``csv`` or ``json`` (for programs)."""
    records = [{name: getattr(row, name) for name in _FIELDS} for row in rows]
    if form == "json":
        return json.dumps(records, indent=2) + "\n"
    if form == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()
    header = [name.replace("_", " ") for name in _FIELDS]
    cells = [header, *[[str(record[name]) for name in _FIELDS] for record in records]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_FIELDS))]
    lines = []
    for number, line in enumerate(cells):
        # Names left, figures right, as a reader compares them.
        lines.append(
            "  ".join(
                text.ljust(widths[i]) if i == 0 or i == len(_FIELDS) - 1 else text.rjust(widths[i])
                for i, text in enumerate(line)
            ).rstrip()
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    if not records:
        lines.append("(no usage in this window)")
    return "\n".join(lines) + "\n"
