"""The operator's settings of EInfraSpawner: each trait with its help text, from which the
configuration reference (``docs/configuration.md``) and ``jupyterhub --help-all`` are generated.

Where it sits: :class:`~einfra_spawner.spawner.EInfraSpawner`, the class operators configure,
declares each setting as its own trait (``profiles_dir = spawner_settings.profiles_dir()``), so
that ``c.EInfraSpawner.x`` and ``c.Spawner.x`` reach it as they reach any trait of the class,
and the reference and the command-line help list it under EInfraSpawner. A trait object belongs
to the one class it is declared on, hence a function per setting that makes it. Declarations
only: what each setting does is the spawner's, the runtime's or the hub's business.
"""

from __future__ import annotations

from traitlets import Float, Integer, Unicode

__all__ = [
    "backend",
    "gpu_capacity_timeout",
    "polls_per_iteration",
    "profiles_dir",
    "reconcile_grace",
    "reconcile_interval",
    "usage_db_url",
    "usage_timeout",
]


def profiles_dir() -> Unicode[str, str | bytes]:
    return Unicode(
        "",
        help="""The instance folder: ``instance.yaml`` and one YAML file per profile.

        Loaded and validated once per hub process; a relative path is taken from the hub's
        working directory. Use :func:`einfra_spawner.configure` to load it when the hub starts
        (a broken folder then stops the hub with every problem listed) and to set the hub's
        named-server limits from ``servers_per_user``. Required; no default.
        """,
    ).tag(config=True)


def backend() -> Unicode[str, str | bytes]:
    return Unicode(
        "local",
        help="""The backend that runs the servers: an entry-point name in ``einfra_spawner.backends``.

        ``local`` runs each server as a local process (one machine, demos, tests);
        ``kubernetes`` runs each as a pod. The backend object is built once per hub process,
        with the hub's configuration, and shared by every spawner. Default: ``local``.
        """,
    ).tag(config=True)


def gpu_capacity_timeout() -> Float[float, int | float]:
    return Float(
        2.0,
        min=0.0,
        help="""How long the options form waits for GPU availability figures, in seconds.

        The form asks the backend how many GPUs of each type are free; when the answer takes
        longer, or the backend cannot tell, the form is shown without the figures. 0 disables
        the figures. Default: 2 seconds.
        """,
    ).tag(config=True)


def usage_db_url() -> Unicode[str, str | bytes]:
    return Unicode(
        "sqlite:///einfra-usage.sqlite",
        help="""The usage ledger's database: an SQLAlchemy URL.

        One row per run of a server (who, which resources, the prices in force, when), from
        which the form shows the user's cost over the instance's ``usage_window_days``, quotas
        count what is running, and ``einfra-spawner usage`` reports. The default is an SQLite
        file in the hub's working directory (nothing to set up); in production use a server
        such as PostgreSQL (``postgresql+psycopg://user:password@host/db``, with the
        ``psycopg`` driver installed), which several hub instances may share: rows carry the
        instance's name. The schema is created and migrated at first use.
        Default: ``sqlite:///einfra-usage.sqlite``.
        """,
    ).tag(config=True)


def usage_timeout() -> Float[float, int | float]:
    return Float(
        5.0,
        min=0.1,
        help="""How long the form waits for the usage figures from the ledger, in seconds.

        When the database is slower, the form is shown without the user's cost and quotas
        (starts still check quotas, and wait for the database as long as it takes).
        Default: 5 seconds.
        """,
    ).tag(config=True)


def polls_per_iteration() -> Integer[int, int]:
    return Integer(
        16,
        min=1,
        help="""How many polls may read a server's state in one iteration of the event loop.

        When the hub starts it polls every server it had at once: with thousands of servers,
        reading all their states back to back would hold the event loop (every page, API
        request and progress stream waits) for a quarter of a second and more. Polls therefore
        take turns, first come first served: at most this many begin in one iteration of the
        loop; the usage ledger's work after a poll holds no turn. Read once per process.
        Default: 16. (Measured: with 5,000 servers the longest stall of a restart was 74-79 ms
        with turns and 224-231 ms without; see ``docs/benchmarks.md``.)
        """,
    ).tag(config=True)


def reconcile_interval() -> Float[float, int | float]:
    return Float(
        60.0,
        min=0.0,
        help="""Seconds between two passes of the reconciler; 0 turns it off.

        The reconciler compares what the backend runs, what JupyterHub knows and what the usage
        ledger counts, at hub start and then every so often: it removes servers no hub knows
        (left by a hub killed during a start, or by a stop during an API outage), closes the
        usage of servers that are gone and drops reservations of starts that never ran. It only
        ever touches objects carrying this project's labels and this instance's name (see
        ``docs/failures.md``). Read once, as the hub starts. Default: 60 seconds.
        """,
    ).tag(config=True)


def reconcile_grace() -> Float[float, int | float]:
    return Float(
        help="""Seconds a start may take before what it created counts as left behind.

        The reconciler removes a server no hub knows only once it is older than this (or was
        created before the hub process started, or has run), so a start still on its way is
        never taken for an orphan. Default: ``start_timeout`` plus ``http_timeout``.
        """,
    ).tag(config=True)
