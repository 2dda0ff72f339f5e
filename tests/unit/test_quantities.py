"""Quantities: the Kubernetes grammar, exact parsing and canonical formatting."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from einfra_spawner.quantities import (
    format_cpu,
    format_memory,
    is_quantity,
    parse_cpu,
    parse_memory,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("8Gi", Decimal(8 * 2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        ("+2", Decimal(2)),
        (".5", Decimal("0.5")),
    ],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "1 GB", "1GB", "", "Gi", "1..2", "8gi", "1e400", "1" * 41])
def test_not_a_quantity(text: str) -> None:
    assert not is_quantity(text)
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_cpu_and_memory() -> None:
    assert parse_cpu(2) == 2000
    assert parse_cpu(0.5) == 500
    assert parse_cpu("250m") == 250
    assert parse_memory("4Gi") == 4 * 2**30
    assert parse_memory(1024) == 1024
    for bad in (True, None, 0, -1, "0", "0.5m", float("nan"), float("inf"), [2]):
        with pytest.raises(ValueError):
            parse_cpu(bad)
    with pytest.raises(ValueError):
        parse_memory("0.5")  # half a byte


def test_formatting_is_canonical() -> None:
    assert format_cpu(2000) == "2"
    assert format_cpu(500) == "500m"
    assert format_memory(8 * 2**30) == "8Gi"
    assert format_memory(1536 * 2**20) == "1536Mi"
    assert format_memory(1000) == "1000"


@given(st.integers(min_value=1, max_value=10**9))
def test_cpu_round_trip(millicores: int) -> None:
    assert parse_cpu(format_cpu(millicores)) == millicores


@given(st.integers(min_value=1, max_value=2**62))
def test_memory_round_trip(size: int) -> None:
    assert parse_memory(format_memory(size)) == size
