"""CPU, memory and GPU prices and units on the options form: labels, number-field units, prices.

Pure helpers of :mod:`einfra_spawner.form`. A range (``min``/``max``/``step``) becomes a number
field in a unit a person reads (cores; GiB, GB, MiB...); the posted number is turned back into a
quantity with that unit's suffix (:func:`posted_quantity`) and the resolver checks it exactly.
Prices come from :mod:`einfra_spawner.pricing` (the usage report's rule).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import gcd

from .models import Prices
from .options import AllowedQuantity
from .pricing import fraction_text, hourly_cost, money_text
from .quantities import format_memory

__all__ = [
    "CPU_UNIT",
    "Envelope",
    "FieldUnit",
    "Pricer",
    "amount_text",
    "cpu_label",
    "envelope",
    "memory_label",
    "memory_unit",
    "posted_quantity",
]


def cpu_label(millicores: int) -> str:
    """``2000`` -> ``2 CPUs``, ``500`` -> ``0.5 CPU``."""
    if millicores % 1000 == 0:
        count = millicores // 1000
        return f"{count} CPU" if count == 1 else f"{count} CPUs"
    return f"{millicores / 1000:g} CPU"


def memory_label(size: int) -> str:
    """``8589934592`` -> ``8 GiB``."""
    text = format_memory(size)
    if text.endswith("i"):
        return f"{text[:-2]} {text[-2:]}B"
    return f"{text} bytes"


@dataclass(frozen=True, slots=True)
class FieldUnit:
    """The unit of a number field: ``size`` millicores or bytes, written ``label``; ``suffix`` is
    appended to a posted bare number to make it a quantity ("" for CPU: a bare number is cores)."""

    suffix: str
    size: int
    label: str


CPU_UNIT = FieldUnit("", 1000, "CPUs")
_MEMORY_UNITS = (
    FieldUnit("Ti", 2**40, "TiB"),
    FieldUnit("Gi", 2**30, "GiB"),
    FieldUnit("G", 10**9, "GB"),
    FieldUnit("Mi", 2**20, "MiB"),
    FieldUnit("M", 10**6, "MB"),
    FieldUnit("Ki", 2**10, "KiB"),
    FieldUnit("k", 10**3, "kB"),
    FieldUnit("", 1, "bytes"),
)
# What a number field posts: digits with an optional fraction (the browser's own format).
_PLAIN_NUMBER = re.compile(r"[0-9]{1,30}(\.[0-9]{1,30})?")


def memory_unit(values: Iterable[int]) -> FieldUnit:
    """The largest unit (TiB is too coarse below 1 TiB) in which every value is a whole number."""
    sizes = list(values)
    for unit in _MEMORY_UNITS:
        if unit.size <= min(sizes, default=1) and all(v % unit.size == 0 for v in sizes):
            return unit
    return _MEMORY_UNITS[-1]


def amount_text(value: int, unit: FieldUnit) -> str:
    """``value`` (millicores or bytes) in ``unit``, exact: ``1500, CPU_UNIT`` -> ``"1.5"``."""
    exact = Decimal(value) / Decimal(unit.size)
    return format(exact.normalize(), "f") if exact != exact.to_integral_value() else str(int(exact))


def posted_quantity(value: object, unit: FieldUnit) -> object:
    """A posted number field's value as a quantity: ``"8"`` in GiB -> ``"8Gi"``. Anything else
    (a quantity with its own suffix, junk, a list) is left as it is for the resolver to judge."""
    if isinstance(value, str) and _PLAIN_NUMBER.fullmatch(value.strip()):
        return value.strip() + unit.suffix
    return value


@dataclass(frozen=True, slots=True)
class Envelope:
    """What one number field spans for all the options in play (the profile's and those GPU
    types bring): the least and greatest value and a step that every allowed value is on."""

    minimum: int
    maximum: int
    step: int


def envelope(allowed: Sequence[AllowedQuantity]) -> Envelope | None:
    """The field of a range, or of several options one of which is a range; ``None`` when no
    range is in play (then the form shows a select of the values)."""
    if not any(a.is_range for a in allowed):
        return None
    lows = [a.minimum if a.is_range else min(a.values) for a in allowed if a.is_range or a.values]
    highs = [a.maximum if a.is_range else max(a.values) for a in allowed if a.is_range or a.values]
    low, high = min(lows), max(highs)
    # The greatest step that keeps every allowed value on the field's grid (its min plus whole
    # steps): the browser then never blocks a value some option allows; the resolver decides.
    step = 0
    for option in allowed:
        if option.is_range:
            step = gcd(step, option.step, option.minimum - low)
        else:
            for value in option.values:
                step = gcd(step, value - low)
    return Envelope(minimum=low, maximum=high, step=step or max(high - low, 1))


class Pricer:
    """Hourly prices of the form's choices under an instance's ``prices`` (``None``: no prices
    shown). Notes only for what costs something; the exact figures for the data attributes."""

    def __init__(self, prices: Prices | None) -> None:
        self.prices = prices
        self.currency = prices.currency if prices is not None else ""

    @property
    def shown(self) -> bool:
        return self.prices is not None

    def cpu(self, millicores: int) -> Fraction:
        return hourly_cost(self.prices, cpu_millicores=millicores)

    def memory(self, size: int) -> Fraction:
        return hourly_cost(self.prices, memory_bytes=size)

    def gpu(self, gpu: str) -> Fraction:
        """One GPU of type ``gpu`` for an hour."""
        return hourly_cost(self.prices, gpu=gpu, gpu_count=1)

    def exact(self, amount: Fraction) -> str:
        """The data attribute of an amount ("" without prices: the script then shows nothing)."""
        return fraction_text(amount) if self.shown else ""

    def per_hour(self, amount: Fraction) -> str:
        """ "1.40 CZK/h", or "" when nothing is priced or it costs nothing."""
        return f"{money_text(amount, self.currency)}/h" if self.shown and amount else ""

    def per_unit(self, amount: Fraction, unit: str) -> str:
        """ "38.00 CZK per GPU-hour", or "" when nothing is priced or it costs nothing."""
        return f"{money_text(amount, self.currency)} per {unit}-hour" if self.shown and amount else ""

    def total(self, amount: Fraction) -> str:
        return money_text(amount, self.currency)
