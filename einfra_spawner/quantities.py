"""Kubernetes resource quantities: parsing and canonical formatting.

Pure functions used by the profile models, the resolver and the renderer. CPU is handled in
millicores and memory in bytes, both as integers, so that comparisons are exact and the rendered
manifests are byte-identical for equal inputs.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = [
    "format_cpu",
    "format_memory",
    "is_quantity",
    "parse_cpu",
    "parse_memory",
    "parse_quantity",
]

# The Kubernetes quantity grammar: a signed decimal number, then a binary suffix, a decimal suffix or
# a decimal exponent. Full-matched, so "1 GB" and "lots" are refused.
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# Anything longer is not a quantity anyone means, and big exponents would make Decimal work hard.
_MAX_CHARS = 40
_MAX_EXPONENT = 30


def parse_quantity(text: str) -> Decimal:
    """Parse a Kubernetes quantity string to its exact value; ``ValueError`` when it is not one."""
    if not isinstance(text, str) or len(text) > _MAX_CHARS:
        raise ValueError("not a Kubernetes quantity")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError("not a Kubernetes quantity")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid decimals
        raise ValueError("not a Kubernetes quantity") from exc
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise ValueError("exponent out of range")
        return number.scaleb(exponent)
    return number * _DECIMAL[suffix]


def is_quantity(text: str) -> bool:
    """Whether ``text`` is a valid Kubernetes quantity."""
    try:
        parse_quantity(text)
    except ValueError:
        return False
    return True


def _as_text(value: object) -> str:
    # bool is an int subclass; True is never a CPU count or a memory size.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be a number or a quantity string")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return repr(value)
    return str(value).strip()


def parse_cpu(value: object) -> int:
    """CPU as whole millicores: ``2`` -> 2000, ``"500m"`` -> 500, ``"0.25"`` -> 250."""
    amount = parse_quantity(_as_text(value)) * 1000
    if amount <= 0:
        raise ValueError("must be more than zero")
    if amount != amount.to_integral_value():
        raise ValueError("must be a whole number of millicores")
    return int(amount)


def parse_memory(value: object) -> int:
    """Memory as whole bytes: ``"8Gi"`` -> 8589934592; a bare number is bytes, as in Kubernetes."""
    amount = parse_quantity(_as_text(value))
    if amount <= 0:
        raise ValueError("must be more than zero")
    if amount != amount.to_integral_value():
        raise ValueError("must be a whole number of bytes")
    return int(amount)


def format_cpu(millicores: int) -> str:
    """Canonical CPU quantity: whole cores without a suffix, otherwise millicores."""
    if millicores % 1000 == 0:
        return str(millicores // 1000)
    return f"{millicores}m"


def format_memory(size: int) -> str:
    """Canonical memory quantity: the largest binary suffix that divides the size exactly."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)
