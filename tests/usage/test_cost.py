"""Cost arithmetic: hand-computed cases, and properties that must hold for any interval."""

from __future__ import annotations

import itertools
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from einfra_spawner.models import Prices
from einfra_spawner.usage import (
    Cost,
    Interval,
    Rates,
    describe_cost,
    interval_cost,
    money,
    rates_for,
    usage_cost,
)
from einfra_spawner.usage.cost import cost_by_user, window

GIB = 2**30
HOUR = 3600.0
T0 = 1_700_000_000.0  # any epoch second: nothing depends on it
RATES = Rates(
    currency="CZK", cpu_hour=Decimal("0.35"), memory_gib_hour=Decimal("0.04"), gpu_hour=Decimal("38")
)


def run(
    start: float, stop: float | None, *, cpu: int = 2000, memory: int = 8 * GIB, gpus: int = 0
) -> Interval:
    return Interval(
        user="ada",
        profile="jupyterlab",
        cpu_millicores=cpu,
        memory_bytes=memory,
        gpu="a40" if gpus else None,
        gpu_count=gpus,
        rates=RATES,
        started=start,
        stopped=stop,
        last_seen=stop,
    )


def test_two_hours_of_two_cpus_8_gib_and_one_a40() -> None:
    # By hand: CPU 2 x 0.35 x 2 = 1.40; memory 8 x 0.04 x 2 = 0.64; GPU 1 x 38 x 2 = 76.
    cost = interval_cost(run(T0, T0 + 2 * HOUR, gpus=1), T0 - 1e6, T0 + 1e6)
    assert (cost.cpu, cost.memory, cost.gpu) == (Fraction("1.40"), Fraction("0.64"), Fraction(76))
    assert money(cost.total) == Decimal("78.04")


def test_half_a_cpu_for_ninety_minutes() -> None:
    # 0.5 x 0.35 x 1.5 = 0.2625 -> 0.26 (half to even); memory 1 GiB x 0.04 x 1.5 = 0.06.
    cost = interval_cost(run(T0, T0 + 1.5 * HOUR, cpu=500, memory=GIB), 0, T0 * 2)
    assert cost.cpu == Fraction("0.2625") and money(cost.cpu) == Decimal("0.26")
    assert cost.memory == Fraction("0.06")


def test_an_interval_is_clipped_to_the_window() -> None:
    # Runs 10 hours; the window holds its last 3.
    cost = interval_cost(run(T0, T0 + 10 * HOUR), T0 + 7 * HOUR, T0 + 20 * HOUR)
    assert cost.cpu == Fraction(2) * Fraction("0.35") * 3


def test_a_running_interval_counts_up_to_now() -> None:
    now = T0 + 4 * HOUR
    cost = interval_cost(run(T0, None, gpus=2), *window(now, 90))
    assert cost.gpu == 2 * 38 * 4


def test_outside_the_window_costs_nothing() -> None:
    assert interval_cost(run(T0, T0 + HOUR), T0 + 2 * HOUR, T0 + 3 * HOUR).total == 0
    assert interval_cost(run(T0, T0 + HOUR), T0 - 3 * HOUR, T0 - 2 * HOUR).total == 0


def test_the_gpu_price_is_that_of_the_intervals_type() -> None:
    prices = Prices(
        currency="CZK", cpu_hour=Decimal("0.35"), gpu_hour={"a40": Decimal(38), "h100": Decimal(120)}
    )
    assert rates_for(prices, "h100").gpu_hour == 120
    assert rates_for(prices, "a10").gpu_hour == 0  # no price: free
    assert rates_for(prices, None).gpu_hour == 0
    assert rates_for(None, "a40") == Rates(currency="CZK")


def test_totals_by_user_and_the_forms_sentence() -> None:
    ada = run(T0, T0 + HOUR, gpus=1)
    ben = replace(run(T0, T0 + 2 * HOUR), user="ben")
    totals = cost_by_user([ada, ben], 0, T0 * 2)
    assert list(totals) == [("ada", "CZK"), ("ben", "CZK")]
    assert money(totals["ben", "CZK"].total) == Decimal("2.04")
    text = describe_cost(usage_cost([ada], 0, T0 * 2), 90, "CZK")
    assert text == "Your usage over the last 90 days: 39.02 CZK (CPU 0.70, memory 0.32, GPU 38.00)"
    assert (
        describe_cost({}, 30, "EUR")
        == "Your usage over the last 30 days: 0.00 EUR (CPU 0.00, memory 0.00, GPU 0.00)"
    )


def test_costs_in_different_currencies_are_never_added() -> None:
    euros = replace(run(T0, T0 + HOUR), rates=Rates(currency="EUR", cpu_hour=Decimal(1)))
    totals = usage_cost([run(T0, T0 + HOUR), euros], 0, T0 * 2)
    assert sorted(totals) == ["CZK", "EUR"] and totals["EUR"].cpu == 2
    try:
        _ = Cost("CZK") + Cost("EUR")
    except ValueError as exc:
        assert "EUR" in str(exc)
    else:
        raise AssertionError("CZK + EUR was added")


# --- properties --------------------------------------------------------------------------------

times = st.floats(min_value=0, max_value=1e10, allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)


@st.composite
def intervals(draw: st.DrawFn) -> Interval:
    start = draw(times)
    stop = draw(st.none() | st.floats(min_value=start, max_value=1e10 + 1))
    return Interval(
        user="u",
        profile="p",
        cpu_millicores=draw(st.integers(1, 256_000)),
        memory_bytes=draw(st.integers(1, 2**42)),
        gpu=draw(st.sampled_from([None, "a40"])),
        gpu_count=draw(st.integers(0, 8)),
        rates=Rates(
            currency="CZK", cpu_hour=draw(prices), memory_gib_hour=draw(prices), gpu_hour=draw(prices)
        ),
        started=start,
        stopped=stop,
    )


@given(intervals(), st.lists(times, min_size=3, max_size=6))
def test_cost_is_additive_over_split_windows(interval: Interval, cuts: list[float]) -> None:
    points = sorted(cuts)
    whole = interval_cost(interval, points[0], points[-1])
    parts = [interval_cost(interval, a, b) for a, b in itertools.pairwise(points)]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    assert total == whole  # exact: fractions, no rounding until display


@given(intervals(), times, times)
def test_cost_is_never_negative(interval: Interval, a: float, b: float) -> None:
    cost = interval_cost(interval, min(a, b), max(a, b))
    assert cost.cpu >= 0 and cost.memory >= 0 and cost.gpu >= 0
    # An empty or inverted window costs nothing.
    assert interval_cost(interval, max(a, b), min(a, b)).total == 0


@given(intervals(), times, times)
def test_a_price_of_zero_costs_nothing(interval: Interval, a: float, b: float) -> None:
    free = replace(interval, rates=Rates(currency="CZK"))
    assert interval_cost(free, min(a, b), max(a, b)).total == 0
    no_gpu_price = replace(interval, rates=Rates(currency="CZK", cpu_hour=Decimal(1)))
    assert interval_cost(no_gpu_price, min(a, b), max(a, b)).gpu == 0


@given(intervals(), times, times)
def test_cost_grows_with_the_window(interval: Interval, a: float, b: float) -> None:
    lo, hi = min(a, b), max(a, b)
    assert interval_cost(interval, lo, hi).total <= interval_cost(interval, lo - 1000, hi + 1000).total
