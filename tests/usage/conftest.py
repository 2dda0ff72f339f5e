"""Ledgers for the usage tests: a fresh SQLite file, and a real PostgreSQL server when one is given.

PostgreSQL: ``EINFRA_TEST_POSTGRES_URL``. ``scripts/test`` sets it to a throwaway server of its
own (``scripts/throwaway-postgres``: a temporary folder, a private socket, stopped and removed at
the end of the run); ``scripts/throwaway-postgres run CMD`` does the same for any command. Its
tests are skipped, with the reason, only when the variable is unset (``scripts/test`` says why in
``EINFRA_TEST_POSTGRES_SKIP``, e.g. no PostgreSQL binaries) or the server does not answer; each
test starts from an empty database (the ledger's tables are dropped first).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from einfra_spawner.usage import Ledger

POSTGRES_ENV = "EINFRA_TEST_POSTGRES_URL"
SKIP_ENV = "EINFRA_TEST_POSTGRES_SKIP"
_TABLES = ("einfra_usage_intervals", "einfra_usage_schema")


def postgres_url() -> str:
    """The test server's URL, or a skip that says why there is none."""
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        why = os.environ.get(SKIP_ENV) or "run the tests with scripts/test or scripts/throwaway-postgres run"
        pytest.skip(f"PostgreSQL: {POSTGRES_ENV} is not set ({why})")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for table in _TABLES:
                connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL: no server reachable at {POSTGRES_ENV}: {exc.orig}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'usage.sqlite'}"
    return postgres_url()


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    opened = Ledger(db_url)
    try:
        yield opened
    finally:
        opened.dispose()
