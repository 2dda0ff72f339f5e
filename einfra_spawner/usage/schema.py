"""The ledger's tables and their versioned migrations (SQLAlchemy Core; blocking I/O).

Where it sits in the data flow: :class:`~einfra_spawner.usage.ledger.Ledger` calls
:func:`migrate` once when it opens a database. The schema version lives in its own table
(``einfra_usage_schema``, one row per applied version); :data:`MIGRATIONS` is an ordered list,
each step applied in its own transaction together with its version row, so a database is always
at exactly one known version. A new schema change is a new function appended to the list; an
applied step is never edited.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

__all__ = ["INTERVALS", "MIGRATIONS", "SCHEMA_VERSION", "VERSIONS", "current_version", "migrate"]

metadata = sa.MetaData()

VERSIONS = sa.Table(
    "einfra_usage_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
)


# Times are seconds since the epoch (double precision): exact enough for milliseconds for
# centuries, the same on every database, and free of time zone conversions.
# Prices are decimal text: SQLite has no exact decimal type, and prices must stay exact.
def _intervals_v1(metadata: sa.MetaData) -> sa.Table:
    """The intervals table as version 1 creates it. While it is also the current schema, the
    queries use it too; a later migration that changes the table keeps this function as it is
    (frozen history) and defines the current table anew."""
    return sa.Table(
        "einfra_usage_intervals",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.String(255), nullable=False),
        sa.Column("user_name", sa.String(255), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(255), nullable=False),
        sa.Column("groups", sa.Text, nullable=False),  # JSON list: the user's groups at the start
        sa.Column("cpu_millicores", sa.BigInteger, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("gpu", sa.String(255), nullable=True),
        sa.Column("gpu_count", sa.Integer, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("cpu_hour", sa.String(40), nullable=False),
        sa.Column("memory_gib_hour", sa.String(40), nullable=False),
        sa.Column("gpu_hour", sa.String(40), nullable=False),
        sa.Column("started", sa.Double, nullable=False),
        # NULL until the backend reports the server started: a reservation, counted by quotas.
        sa.Column("last_seen", sa.Double, nullable=True),
        sa.Column("stopped", sa.Double, nullable=True),
        sa.Index("einfra_usage_open", "instance", "stopped"),
        sa.Index("einfra_usage_user", "user_name", "started"),
    )


INTERVALS = _intervals_v1(metadata)


def _v1_intervals(connection: sa.Connection) -> None:
    _intervals_v1(sa.MetaData()).create(connection)


#: Ordered schema steps: version ``i + 1`` is ``MIGRATIONS[i]``.
MIGRATIONS: tuple[Callable[[sa.Connection], None], ...] = (_v1_intervals,)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(connection: sa.Connection) -> int:
    """The highest applied version (0: an empty database)."""
    if not sa.inspect(connection).has_table(VERSIONS.name):
        return 0
    found = connection.execute(sa.select(sa.func.max(VERSIONS.c.version))).scalar()
    return int(found or 0)


def migrate(engine: sa.Engine) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version it was at before.

    A database newer than this code is refused rather than used with a schema it does not know.
    """
    with engine.begin() as connection:
        if not sa.inspect(connection).has_table(VERSIONS.name):
            VERSIONS.create(connection)
        before = current_version(connection)
    if before > SCHEMA_VERSION:
        raise RuntimeError(
            f"the usage database is at schema version {before}, newer than this einfra-spawner "
            f"({SCHEMA_VERSION}); upgrade einfra-spawner"
        )
    for version in range(before + 1, SCHEMA_VERSION + 1):
        with engine.begin() as connection:
            MIGRATIONS[version - 1](connection)
            connection.execute(VERSIONS.insert().values(version=version))
    return before
