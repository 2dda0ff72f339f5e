"""Kubernetes resource quantities (``"500m"``, ``"4Gi"``, ``"1e3"``) as exact fractions.

The fake API server needs them twice: to refuse invalid ones with 422 (the OpenAPI schema
accepts any string, so ``cpu: "lots"`` would otherwise pass) and for the fake scheduler's
arithmetic (requests against node allocatable). Fractions keep ``"100m" * 10 == "1"`` exact.
This module is private to the test harness on purpose: the harness must not import the rest
of einfra_spawner, so it does not reuse the core's quantity helpers.
"""

from __future__ import annotations

import re
from fractions import Fraction

# The grammar of k8s.io/apimachinery's resource.Quantity: a signed decimal number followed by
# at most one suffix: binary SI, decimal SI, or a decimal exponent. The exponent alternative is
# tried before the single letters so that "1E3" is 1000 and "1E" is one exa.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE])?$"
)

_MULTIPLIERS: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}

# The message the real server uses when a quantity does not parse.
QUANTITY_PATTERN_MESSAGE = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_quantity(value: object) -> Fraction:
    """The exact value of a quantity given as a string or a number (JSON allows both)."""
    if isinstance(value, bool):
        raise QuantityError(QUANTITY_PATTERN_MESSAGE)
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    if not isinstance(value, str):
        raise QuantityError(QUANTITY_PATTERN_MESSAGE)
    match = _QUANTITY.match(value)
    if match is None:
        raise QuantityError(QUANTITY_PATTERN_MESSAGE)
    number = Fraction(match["number"])
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Fraction(10) ** int(suffix[1:])
    return number * _MULTIPLIERS[suffix]


def is_quantity(value: object) -> bool:
    try:
        parse_quantity(value)
    except QuantityError:
        return False
    return True


def format_quantity(value: Fraction) -> str:
    """A short canonical form for messages: whole numbers plain, fractions in milli-units."""
    if value.denominator == 1:
        return str(value.numerator)
    milli = value * 1000
    if milli.denominator == 1:
        return f"{milli.numerator}m"
    return str(float(value))
