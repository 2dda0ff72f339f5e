"""What a backend's ``inventory`` reports, for tests that expect it to know (not ``None``)."""

from __future__ import annotations

from einfra_spawner.backend import Backend, ServerRecord


async def inventory_of(backend: Backend, instance: str) -> list[ServerRecord]:
    """``backend.inventory(instance)``; fails the test when the backend cannot tell (``None``)."""
    records = await backend.inventory(instance)
    assert records is not None, f"{type(backend).__name__} could not tell what runs for {instance!r}"
    return records
