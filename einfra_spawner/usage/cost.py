"""Cost of usage intervals: pure arithmetic, no clock and no I/O.

Where it sits in the data flow: the ledger (:mod:`einfra_spawner.usage.ledger`) stores one
:class:`Interval` per run of a server, with the :class:`Rates` in force when it started; this
module turns intervals and a window into money. The spawner's form, its budget quota, the
``einfra-spawner usage`` command and the cost metric all use these functions, so they agree.

Times are seconds since the epoch (floats, as the ledger stores them); every computation is done
in exact fractions, so that the cost of a window is exactly the sum of the costs of its parts,
and is rounded to cents only for display (:func:`money`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from ..models import Prices

__all__ = [
    "SECONDS_PER_DAY",
    "Cost",
    "Interval",
    "Rates",
    "cost_by_user",
    "describe_cost",
    "interval_cost",
    "money",
    "rates_for",
    "usage_cost",
    "window",
]

SECONDS_PER_DAY = 86_400
_GIB = 2**30
_HOUR = 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class Rates:
    """The prices frozen into one interval at its start: per CPU-hour, per GiB-hour of memory and
    per GPU-hour of the interval's own GPU type, in ``currency``."""

    currency: str
    cpu_hour: Decimal = Decimal(0)
    memory_gib_hour: Decimal = Decimal(0)
    gpu_hour: Decimal = Decimal(0)


def rates_for(prices: Prices | None, gpu: str | None) -> Rates:
    """The rates an interval with GPU type ``gpu`` gets under ``prices`` (none: free, ``CZK``)."""
    if prices is None:
        return Rates(currency="CZK")
    return Rates(
        currency=prices.currency,
        cpu_hour=prices.cpu_hour,
        memory_gib_hour=prices.memory_gib_hour,
        gpu_hour=prices.gpu_hour.get(gpu, Decimal(0)) if gpu else Decimal(0),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval:
    """One run of one server: who, what it was given, at which rates, and when.

    ``stopped`` is ``None`` while it runs; ``last_seen`` is the last time the hub saw it running
    (where a crashed hub's interval is closed). ``groups`` are the user's groups at its start.
    """

    user: str
    profile: str
    cpu_millicores: int
    memory_bytes: int
    rates: Rates
    started: float
    id: int = 0
    instance: str = ""
    server: str = ""
    groups: tuple[str, ...] = ()
    gpu: str | None = None
    gpu_count: int = 0
    stopped: float | None = None
    last_seen: float | None = None

    @property
    def gpus(self) -> int:
        """GPUs held while it runs (0 without a GPU type)."""
        return self.gpu_count if self.gpu else 0


@dataclass(frozen=True, slots=True)
class Cost:
    """Money by resource, exact; :func:`money` rounds it for display."""

    currency: str
    cpu: Fraction = field(default=Fraction(0))
    memory: Fraction = field(default=Fraction(0))
    gpu: Fraction = field(default=Fraction(0))

    @property
    def total(self) -> Fraction:
        return self.cpu + self.memory + self.gpu

    def __add__(self, other: Cost) -> Cost:
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Cost(self.currency, self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)


def window(now: float, days: int) -> tuple[float, float]:
    """The window of the last ``days`` days ending at ``now``."""
    return now - days * SECONDS_PER_DAY, now


def interval_cost(interval: Interval, start: float, end: float) -> Cost:
    """The cost of ``interval`` within ``[start, end]``; a running interval counts up to ``end``
    (pass "now"), an interval outside the window costs nothing."""
    stopped = end if interval.stopped is None else min(interval.stopped, end)
    begins = max(interval.started, start)
    if stopped <= begins:
        return Cost(interval.rates.currency)
    hours = (Fraction(stopped) - Fraction(begins)) / _HOUR
    rates = interval.rates
    return Cost(
        rates.currency,
        cpu=Fraction(rates.cpu_hour) * Fraction(interval.cpu_millicores, 1000) * hours,
        memory=Fraction(rates.memory_gib_hour) * Fraction(interval.memory_bytes, _GIB) * hours,
        gpu=Fraction(rates.gpu_hour) * interval.gpus * hours,
    )


def usage_cost(intervals: Iterable[Interval], start: float, end: float) -> dict[str, Cost]:
    """The cost of all ``intervals`` within the window, by currency (one, unless the instance
    changed its currency within the window)."""
    totals: dict[str, Cost] = {}
    for interval in intervals:
        cost = interval_cost(interval, start, end)
        previous = totals.get(cost.currency)
        totals[cost.currency] = cost if previous is None else previous + cost
    return totals


def cost_by_user(intervals: Iterable[Interval], start: float, end: float) -> dict[tuple[str, str], Cost]:
    """Per (user, currency) totals within the window, for operators' reports."""
    by_user: dict[str, list[Interval]] = {}
    for interval in intervals:
        by_user.setdefault(interval.user, []).append(interval)
    return {
        (user, currency): cost
        for user in sorted(by_user)
        for currency, cost in sorted(usage_cost(by_user[user], start, end).items())
    }


def money(amount: Fraction) -> Decimal:
    """``amount`` rounded to cents (half to even), for display."""
    exact = Decimal(amount.numerator) / Decimal(amount.denominator)
    return exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def describe_cost(costs: Mapping[str, Cost], days: int, currency: str) -> str:
    """ "Your usage over the last 90 days: 123.45 CZK (CPU 1.20, memory 0.25, GPU 122.00)"."""
    shown = dict(costs) or {currency: Cost(currency)}
    parts = [
        f"{money(cost.total)} {code} (CPU {money(cost.cpu)}, memory {money(cost.memory)}, "
        f"GPU {money(cost.gpu)})"
        for code, cost in sorted(shown.items())
    ]
    return f"Your usage over the last {days} days: {'; '.join(parts)}"
