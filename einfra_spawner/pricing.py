"""Hourly prices for the options form: what each choice costs per hour, by the usage report's rule.

Pure, beside :mod:`einfra_spawner.usage.cost`, whose rule it applies rather than restates: the price
of one hour of a choice is :func:`~einfra_spawner.usage.cost.interval_cost` of a one-hour interval
with that choice, at the rates :func:`~einfra_spawner.usage.cost.rates_for` gives. So the form's
"38.00 CZK per GPU-hour" and "1.02 CZK per hour" are the figures the usage report will charge
(CPU per core-hour and memory per GiB-hour on the limits, each GPU per hour).

Amounts stay exact fractions; :func:`money_text` rounds to cents for display (half to even, as the
report does). :func:`fraction_text` writes an exact amount as ``"numerator/denominator"`` for the
form's data attributes, from which the page's script adds up the current choice in exact integer
arithmetic and rounds it the same way, so the script never restates a price.
"""

from __future__ import annotations

from fractions import Fraction

from .models import Prices
from .usage.cost import Interval, interval_cost, money, rates_for

__all__ = ["HOUR", "fraction_text", "hourly_cost", "money_text"]

#: Seconds in the hour that prices are quoted for.
HOUR = 3600


def hourly_cost(
    prices: Prices | None,
    *,
    cpu_millicores: int = 0,
    memory_bytes: int = 0,
    gpu: str | None = None,
    gpu_count: int = 0,
) -> Fraction:
    """What one hour of the given limits costs under ``prices`` (no prices: nothing)."""
    interval = Interval(
        user="",
        profile="",
        cpu_millicores=cpu_millicores,
        memory_bytes=memory_bytes,
        gpu=gpu,
        gpu_count=gpu_count,
        rates=rates_for(prices, gpu),
        started=0.0,
        stopped=float(HOUR),
    )
    return interval_cost(interval, 0.0, float(HOUR)).total


def money_text(amount: Fraction, currency: str) -> str:
    """``Fraction(7, 20)``, ``"CZK"`` -> ``"0.35 CZK"`` (rounded to cents, half to even)."""
    return f"{money(amount)} {currency}"


def fraction_text(amount: Fraction) -> str:
    """An exact amount as ``"numerator/denominator"`` (the form script's input)."""
    return f"{amount.numerator}/{amount.denominator}"
