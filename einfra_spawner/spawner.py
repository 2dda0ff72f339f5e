"""The JupyterHub spawner: thin glue between JupyterHub's Spawner API, the pure core and a backend.

Where it sits in the data flow: JupyterHub hands this spawner a request (the options form posted
through :meth:`EInfraSpawner.options_from_form`, ``/hub/spawn?opt-...`` query arguments, or REST
``user_options``); the spawner resolves it with :func:`~einfra_spawner.resolve_options` for the
user's groups, renders the manifests and gives both to the backend, which does the I/O. Nothing
from one spawn is kept as configuration for the next: a spawn's resolved options live on the
spawner only while that server exists.

How a refused request reaches the caller (JupyterHub 6.1.1 and 5.3; ``tests/e2e`` checks each
path on both):

* form posts are resolved in ``options_from_form`` (query arguments in ``options_from_query``):
  JupyterHub shows the form again with the message (status 400; 200 on JupyterHub 5, which
  shows ``str()`` of the error, hence :class:`_Refusal`), and starts nothing;
* REST requests are resolved in ``run_pre_spawn_hook``, which ``User.spawn`` calls before
  ``start``. The :class:`~jupyterhub.spawner.SpawnException` (status 400) comes out of
  ``POST /hub/api/users/{name}/servers/{server}`` as a 400 JSON error whose ``message`` is the
  resolver's; JupyterHub then stops the half-made server (our ``stop`` has no backend state yet,
  so it touches nothing) and the backend is never called. ``start`` resolves again if the hook
  was skipped, so no path starts an unvalidated request.
* a :class:`~einfra_spawner.BackendError` in ``start`` becomes a 503 with the backend's message
  (the REST body, the progress page, or the error page of the form).
* quotas are checked in the same ``run_pre_spawn_hook``, after resolution, against the usage
  ledger (:mod:`einfra_spawner.usage`): a refusal is a ``SpawnException`` with status 403, which
  JupyterHub passes through to the REST caller as a 403 JSON error with the quota's message, and
  the backend is never called. A ledger that does not answer refuses starts with a 503.

Usage: each run is an interval in the ledger, opened when the start is admitted, marked running
when the backend answers, refreshed ("last seen running") at every poll, closed at stop, or at
its last-seen time when a poll finds the server gone (see :mod:`einfra_spawner.usage.recorder`).

Per-process caches: profile folders are loaded once per process and folder; the backend object is
built once per process and name and shared by every spawner (it may hold watches and caches),
at hub start when :func:`configure` runs on the hub's event loop.

Spawn storms (see ``docs/benchmarks.md``): resolving and rendering take turns at a per-loop
preparation gate (``concurrent_preparations`` begin per loop iteration), rendering happens inside
the backend's ``admission()`` when it has one, and nothing waiting on the database or the
cluster holds a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import cache, partial
from typing import Any

import jinja2
import jupyterhub
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Float, Integer, Unicode, default

from .asked import as_stored, asks_for_reset, query_options
from .backend import Backend, GpuCapacity, ProgressEvent, StartRequest
from .capacity import capacity_for
from .errors import BackendError, EInfraError, OptionsError, ProfileError
from .form import build_form, capacity_figures, capacity_types, request_from_form, request_from_query
from .profiles import ProfileSet
from .render import ServerIdentity, SingleUser, render_manifests
from .resolve import ResolvedOptions, UserContext, resolve_options
from .runtime import current_runtime
from .usage import QuotaExceeded
from .usage import metrics as usage_metrics
from .usage.recorder import UsageRecorder, recorder_for

try:  # JupyterHub >= 6: a refusal that metrics count as a policy failure, not an error
    from jupyterhub.spawner import SpawnException
except ImportError:  # pragma: no cover - JupyterHub 5
    SpawnException = None

__all__ = ["EInfraSpawner"]

# JupyterHub 6 (read in 6.1) hands options_from_query the option keys of /hub/spawn's query
# (asked.query_options); JupyterHub 5 (read in 5.3) hands it every query argument but "next".
_HUB_READS_QUERY_OPTIONS = jupyterhub.version_info >= (6,)


class _Refusal(web.HTTPError):
    """A refusal on JupyterHub 5, whose ``str()`` is the message alone: JupyterHub 5's spawn
    page shows ``str(error)`` of a refused form post or query (tornado's own ``str()`` would
    read "HTTP 400: options (<message>)"); its REST API writes ``log_message % args``."""

    def __init__(self, message: str, *, reason: str, status: int) -> None:
        # The message as an argument: tornado escapes a "%" in a log message without arguments
        # (6.3 and later) or not (before), so only this form reads the same under both.
        super().__init__(status, "%s", message, reason=reason)
        self.jupyterhub_message = message

    def __str__(self) -> str:
        return self.jupyterhub_message


def _refusal(message: str, *, reason: str, status: int = 400) -> web.HTTPError:
    """An HTTP error that JupyterHub shows as ``message`` alone: on the re-rendered form, on the
    progress page and in the REST API's JSON body (``jupyterhub_message`` is what JupyterHub 6's
    ``format_exception`` and API ``write_error`` read; JupyterHub 5's form reads ``str()``)."""
    if SpawnException is None:  # JupyterHub 5
        return _Refusal(message, reason=reason, status=status)
    error: web.HTTPError = SpawnException(message, reason=reason, status_code=status)
    error.jupyterhub_message = message  # type: ignore[attr-defined]  # read by JupyterHub
    return error


@cache
def _form_template() -> jinja2.Template:
    # Autoescaping is forced on: custom images and messages typed by users end up in the page.
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("einfra_spawner", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template("form.html")


class EInfraSpawner(Spawner):  # type: ignore[misc]  # jupyterhub is untyped
    """Spawns single-user servers from declarative profiles, through a pluggable backend."""

    profiles_dir = Unicode(
        "",
        help="""The instance folder: ``instance.yaml`` and one YAML file per profile.

        Loaded and validated once per hub process; a relative path is taken from the hub's
        working directory. Use :func:`einfra_spawner.configure` to load it when the hub starts
        (a broken folder then stops the hub with every problem listed) and to set the hub's
        named-server limits from ``servers_per_user``. Required; no default.
        """,
    ).tag(config=True)

    backend = Unicode(
        "local",
        help="""The backend that runs the servers: an entry-point name in ``einfra_spawner.backends``.

        ``local`` runs each server as a local process (one machine, demos, tests);
        ``kubernetes`` runs each as a pod. The backend object is built once per hub process,
        with the hub's configuration, and shared by every spawner. Default: ``local``.
        """,
    ).tag(config=True)

    gpu_capacity_timeout = Float(
        2.0,
        min=0.0,
        help="""How long the options form waits for GPU availability figures, in seconds.

        The form asks the backend how many GPUs of each type are free; when the answer takes
        longer, or the backend cannot tell, the form is shown without the figures. 0 disables
        the figures. Default: 2 seconds.
        """,
    ).tag(config=True)

    usage_db_url = Unicode(
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

    usage_timeout = Float(
        5.0,
        min=0.1,
        help="""How long the form waits for the usage figures from the ledger, in seconds.

        When the database is slower, the form is shown without the user's cost and quotas
        (starts still check quotas, and wait for the database as long as it takes).
        Default: 5 seconds.
        """,
    ).tag(config=True)

    concurrent_preparations = Integer(
        16,
        min=1,
        help="""How many starts may do their CPU work at once in this hub process.

        Before a start reaches the backend, the hub resolves its request and checks its quotas,
        then builds its environment and renders its manifests: a fraction of a millisecond of
        CPU each. When hundreds of starts arrive together (a class pressing Start), running all
        of that back to back would hold the event loop for a long time (every other request,
        timer and progress stream waits) and finish every start late together. These steps
        therefore take turns, first come first served: at most this many begin in one turn of
        the event loop; waiting for the usage database or the cluster holds no turn. Read once
        per process. Default: 16.
        """,
    ).tag(config=True)

    reconcile_interval = Float(
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

    reconcile_grace = Float(
        help="""Seconds a start may take before what it created counts as left behind.

        The reconciler removes a server no hub knows only once it is older than this (or was
        created before the hub process started, or has run), so a start still on its way is
        never taken for an orphan. Default: ``start_timeout`` plus ``http_timeout``.
        """,
    ).tag(config=True)

    @default("reconcile_grace")
    def _default_reconcile_grace(self) -> float:
        return float(self.start_timeout + self.http_timeout)

    # Per-server facts, never configuration: the request resolved for the start in progress, the
    # options the running server was given, and the backend's state for that server.
    _pending: ResolvedOptions | None = None
    _options: ResolvedOptions | None = None
    _usage: UsageRecorder | None = None  # this run's side of the usage ledger
    _saved_interval: int | None = None  # its ledger row, as a restarted hub's state names it
    _spawn_began: float | None = None  # monotonic time the start was admitted, for the metric
    _starting = False  # from admission until the start has ended, either way
    _granted: dict[str, Any] | None = None  # the request last granted, as stored (no reset)
    # The generation of the server's current home (see einfra_spawner.storage), kept across
    # stops and hub restarts; None: not known yet (asked of the backend at the next start).
    _home_generation: int | None = None
    # Looked up once per spawner: its profiles, its backend object and its identity.
    _profiles: ProfileSet | None = None
    _backend: Backend | None = None
    _identity: ServerIdentity | None = None
    _backend_state: dict[str, Any]
    user_options: dict[str, Any]  # JupyterHub's trait, annotated for the type checker only

    def __init__(self, **kwargs: Any) -> None:
        self._backend_state = {}
        super().__init__(**kwargs)

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        # This spawner applies user_options itself (resolved, never set as attributes); an
        # explicit no-op tells JupyterHub so, instead of warning at every start that the
        # options were "unhandled". An operator's own hook still runs if configured.
        return _options_applied_by_spawner

    # --- the core and the backend ----------------------------------------------------------------

    def profile_set(self) -> ProfileSet:
        """The instance's profiles (loaded once per process)."""
        if self._profiles is not None:
            return self._profiles
        if not self.profiles_dir:
            raise _refusal(
                "This hub is not configured: EInfraSpawner.profiles_dir is not set.",
                reason="configuration",
                status=500,
            )
        folder = os.path.abspath(self.profiles_dir)
        try:
            self._profiles = current_runtime().profiles(folder)
            return self._profiles
        except ProfileError as exc:
            self.log.error("The profile folder %s is broken:\n%s", folder, exc)
            raise _refusal(
                "This hub's profile files are broken; its operators can see why in the hub log.",
                reason="configuration",
                status=500,
            ) from exc

    def backend_object(self) -> Backend:
        """The backend named by :attr:`backend`, built once per process and shared."""
        if self._backend is None:
            try:
                self._backend = current_runtime().backend(self.backend, self.config, self.log)
            except EInfraError as exc:
                self.log.error("%s", exc)
                raise _refusal(str(exc), reason="configuration", status=500) from exc
        return self._backend

    def user_context(self) -> UserContext:
        """Who is asking, as the resolver sees them."""
        return UserContext(
            name=self.user.name,
            groups=frozenset(group.name for group in self.user.groups),
            admin=bool(self.user.admin),
        )

    def identity(self) -> ServerIdentity:
        """Whose server this is, in the namespace the backend chooses for it (if it has any).
        Computed once: a server is never renamed, nor moved to another backend."""
        if self._identity is not None:
            return self._identity
        plain = ServerIdentity(user=self.user.name, server=self.name)
        namespace = self.backend_object().namespace_for(plain)
        if namespace is not None:
            plain = ServerIdentity(user=self.user.name, server=self.name, namespace=namespace)
        self._identity = plain
        return plain

    def resolve(self, request: object) -> ResolvedOptions:
        """Resolve ``request`` for this user, or raise a 400 error with the resolver's message."""
        try:
            return resolve_options(self.profile_set(), self.user_context(), request)
        except OptionsError as exc:
            self.log.info("Refused a request for %s: %s", self._log_name, exc)
            raise _refusal(str(exc), reason="options") from exc

    @property
    def resolved_options(self) -> ResolvedOptions | None:
        """What the start in progress (or the running server) was granted, if known."""
        return self._pending or self._options

    # --- usage: quotas at start, the run in the ledger (see usage.recorder) ------------------

    def usage(self) -> UsageRecorder:
        """This run's usage recorder (a null one where the instance has neither prices nor
        quotas), made at the first use of each run."""
        if self._usage is None:
            self._usage = recorder_for(
                self.profile_set().instance,
                partial(current_runtime().ledger, self.usage_db_url),
                self.user_context(),
                self.name,
                self.log,
                self._log_name,
            )
            self._usage.restore(self._saved_interval)
        return self._usage

    async def _admit(self, options: ResolvedOptions) -> None:
        """Check the quotas and open this run's interval, in one ledger transaction; a refusal
        is a 403 with the limit and what is in use, before the backend is called."""
        try:
            await self.usage().admit(options)
        except QuotaExceeded as exc:
            self.log.info("Quota refused a start of %s: %s", self._log_name, exc)
            usage_metrics.SPAWN_FAILURES.labels(reason="quota").inc()
            raise _refusal(str(exc), reason="quota", status=403) from exc
        except Exception as exc:
            # Fail closed: without the ledger, quotas cannot be enforced nor the run accounted.
            self.log.exception("Usage ledger at %s failed; refusing the start", self.usage_db_url)
            usage_metrics.SPAWN_FAILURES.labels(reason="usage").inc()
            raise _refusal(
                "The usage database of this hub does not answer; servers cannot start until it does. "
                "The hub's operators can see why in its log.",
                reason="usage",
                status=503,
            ) from exc

    async def _form_usage(self, *, gpus_offered: bool = True) -> tuple[str, ...]:
        """The form's usage sentences; none when the ledger is slow or failing (the form still
        shows: starts check quotas anyway). ``gpus_offered``: whether the user may choose any GPU
        (if not, no GPU quota line: "You use 0 of your 4 GPUs" would only puzzle them)."""
        try:
            lines = self.usage().form_lines(gpus_offered=gpus_offered)
            return await asyncio.wait_for(lines, timeout=self.usage_timeout)
        except asyncio.TimeoutError:
            self.log.warning("Usage figures took longer than %.1f s; form without them", self.usage_timeout)
        except Exception:  # a form without figures beats no form at all
            self.log.exception("Usage figures failed; showing the form without them")
        return ()

    # --- the options form ------------------------------------------------------------------------

    async def get_options_form(self) -> str:
        """The options form for this user (JupyterHub wraps it in its own ``<form>``)."""
        profiles = self.profile_set()
        user = self.user_context()
        last: ResolvedOptions | None = None
        if self.user_options:
            try:
                last = resolve_options(profiles, user, self.user_options)
            except OptionsError:
                last = None  # the last choices are no longer allowed: offer the defaults
        backend = self.backend_object()
        view = build_form(
            profiles,
            user,
            last=last,
            capacity=await self._gpu_capacity(backend, profiles, user),
            images_apply=backend.features.supports_images,
            servers_run_as=backend.features.description,
            reset_keeps_old_home=backend.features.reset_keeps_old_home,
            mounts_apply=backend.features.supports_mounts,
            usage=await self._form_usage(gpus_offered=bool(capacity_types(profiles, user))),
            gpus_url=self._gpus_url(),
        )
        return _form_template().render(form=view)

    def _gpus_url(self) -> str:
        """Where the form's script fetches fresh GPU figures: the GPU figures service of this
        hub process (``einfra_spawner.configure``); ``""`` (no refresh) without one."""
        service = current_runtime().gpu_service
        return service.figures_path() if service is not None else ""

    async def gpu_figures(self) -> dict[str, dict[str, int | str]]:
        """Free/total GPUs of the types this user can see, as the GPU figures service returns them."""
        profiles = self.profile_set()
        capacity = await self._gpu_capacity(self.backend_object(), profiles, self.user_context())
        return capacity_figures(capacity)

    async def _gpu_capacity(
        self, backend: Backend, profiles: ProfileSet, user: UserContext
    ) -> dict[str, GpuCapacity]:
        """Free/total GPUs of the types this user can see; ``{}`` when slow or unknown."""
        return await capacity_for(backend, profiles, user, self.gpu_capacity_timeout, self.log)

    def options_from_form(self, formdata: Mapping[str, Sequence[str]]) -> dict[str, object]:
        """The request a posted form asks for, validated now so that a refusal shows the form
        again with the message (the request is resolved again at start)."""
        request = request_from_form(formdata, self.profile_set(), self.user_context())
        self.resolve(request)
        return request

    def options_from_query(self, query_data: Mapping[str, Sequence[str]]) -> dict[str, object]:
        """``/hub/spawn?opt-profile=...&opt-cpu=4`` (or ``?profile=...``): the REST keys as query
        arguments, by JupyterHub 6's rule on JupyterHub 5 and 6 alike (``asked.query_options``:
        JupyterHub 6 has applied it already; JupyterHub 5 passes the arguments as they came)."""
        request = request_from_query(query_data if _HUB_READS_QUERY_OPTIONS else query_options(query_data))
        self.resolve(request)
        return request

    # --- JupyterHub's lifecycle ------------------------------------------------------------------

    def run_pre_spawn_hook(self) -> Any:
        """Resolve the request before anything else runs (so a refusal is a 400 and nothing
        starts), check the quotas and open the usage interval (a refusal is a 403), then run the
        operator's ``pre_spawn_hook``, which may read :attr:`resolved_options`.

        JupyterHub awaits what this returns: resolving waits its turn at the preparation gate,
        and the ledger work is asynchronous."""
        return self._resolve_admit_then_hook()

    def _preparation_turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        return current_runtime().preparation_turn(self.concurrent_preparations)

    async def _resolve_admit_then_hook(self) -> Any:
        self._starting = True
        try:
            request = self._request_of_this_start()
            async with self._preparation_turn():
                try:
                    self._pending = self.resolve(request)
                except web.HTTPError:
                    usage_metrics.SPAWN_FAILURES.labels(reason="options").inc()
                    raise
            # Waiting for the database holds no turn (the few steps before its write run at
            # once, before the next turn begins).
            await self._admit(self._pending)
        except BaseException:
            # Refused: the request leaves nothing of itself behind (JupyterHub stored it).
            self._store_user_options(self._granted or {})
            self._starting = False
            raise
        self._granted = as_stored(request)
        self._spawn_began = time.monotonic()
        try:
            result = super().run_pre_spawn_hook()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
        except BaseException:  # the operator's hook refused: the reservation goes too
            await self._close_abandoned_start()
            raise
        return result

    def _request_of_this_start(self) -> object:
        """The request to resolve for this start, and what JupyterHub keeps of it.

        JupyterHub stores a request's options before this spawner sees them, and reuses them
        for a start that brings none (a REST ``POST`` without a body, the admin page's "Start",
        a hub restart): a stored ``home: reset`` would erase a home nobody asked to erase. So a
        reset counts only when the HTTP request being handled carries it itself, and is never
        stored."""
        request: Any = self.user_options
        if not isinstance(request, Mapping):
            return request
        request = dict(request)
        handled = getattr(getattr(self, "handler", None), "request", None)
        if request.get("home") == "reset" and not asks_for_reset(
            handled, self.profile_set(), self.user_context()
        ):
            self.log.info(
                "Ignored a stored home reset for %s: a reset acts only in the request that asks for it",
                self._log_name,
            )
            del request["home"]
        self._store_user_options(as_stored(request))
        return request

    def _store_user_options(self, options: dict[str, Any]) -> None:
        """Replace the options JupyterHub keeps for this server (it commits them with its next
        commit, which follows at once: when it calls ``start``, or in the stop after a refusal)."""
        self.user_options = options
        if self.orm_spawner is not None:
            self.orm_spawner.user_options = options

    async def _close_abandoned_start(self) -> None:
        """An admitted start that will not run: its reservation is dropped, whatever happens to
        the task that asks (a cancelled start still closes it)."""
        self._starting = False
        with contextlib.suppress(Exception):
            await asyncio.shield(self.usage().ended(None))

    async def start(self) -> tuple[str, int]:
        """Resolve, render, and have the backend start the server; return where it listens.

        Every way out other than a running server (a refusal, an error, the start time-out, a
        cancellation, the hub shutting down) closes the start's usage interval."""
        if self._pending is None:  # the pre-spawn hook was skipped: resolve and admit now
            await self._resolve_admit_then_hook()
        options = self._pending
        assert options is not None
        self._pending = None
        self._options = options
        began = self._spawn_began if self._spawn_began is not None else time.monotonic()
        self._spawn_began = None
        outcome, reason = "failure", "error"
        try:
            # JupyterHub 6 cancels a start at start_timeout; JupyterHub 5 only stops waiting.
            # Either way the backend's start is cancelled then, and cleans up what it made.
            endpoint = await asyncio.wait_for(self._start_backend(options), timeout=self.start_timeout)
            outcome = "success"
        except asyncio.TimeoutError:
            reason = "timeout"
            raise _refusal(
                f"Your server did not start within {self.start_timeout:g} seconds; it was stopped.",
                reason="timeout",
                status=503,
            ) from None
        except web.HTTPError as exc:
            reason = str(getattr(exc, "reason", "") or "error")
            raise
        finally:
            usage_metrics.SPAWN_DURATION.labels(profile=options.profile, outcome=outcome).observe(
                time.monotonic() - began
            )
            if outcome != "success":
                usage_metrics.SPAWN_FAILURES.labels(reason=reason).inc()
                await self._close_abandoned_start()
        self._starting = False
        self.usage().running()
        return endpoint

    async def _start_backend(self, options: ResolvedOptions) -> tuple[str, int]:
        """Render the manifests (in turn) and have the backend start the server.

        The manifests are rendered inside the backend's ``admission()``: a backend that paces
        its submissions renders each spawn's manifests once it is ready to send them, so in a
        burst each spawn's CPU work happens just before its requests instead of every spawn
        rendering first and all of them submitting late."""
        backend = self.backend_object()
        try:
            if self._home_generation is None and options.home is not None and not options.home.ephemeral:
                # A new server, or one re-created after a delete that kept its home: the
                # backend knows which home is current (from its caches).
                found = await backend.current_home(self.identity(), options.instance)
                self._home_generation = found or 0
            async with backend.admission():
                async with self._preparation_turn():
                    request = self._start_request(options)
                started = await backend.start(request)
        except BackendError as exc:
            self.log.warning("Could not start %s: %s", self._log_name, exc)
            raise _refusal(str(exc), reason="backend", status=503) from exc
        self._backend_state = dict(started.state)
        # The home the server now has: a reset that kept the old home moved it on.
        self._home_generation = request.manifests.home_generation
        return started.endpoint.ip, started.endpoint.port

    def _start_request(self, options: ResolvedOptions) -> StartRequest:
        """What the backend is given: the manifests, the single-user command and environment."""
        identity = dataclasses.replace(self.identity(), home_generation=self._home_generation or 0)
        # JupyterHub tells the server where to listen through JUPYTERHUB_SERVICE_URL (get_env),
        # built from ip and port. A backend may say where its servers listen: a pod on every
        # address of its own network namespace. The local backend rewrites that URL itself with
        # the loopback address and a free port of its own.
        listen_ip = self.backend_object().features.listen_ip
        if listen_ip:
            self.ip = listen_ip
        port: int = self.port or SingleUser().port  # type: ignore[has-type]  # a traitlets Integer
        self.port = port
        single_user = SingleUser(
            cmd=tuple(self.cmd),
            args=tuple(self.get_args()),
            env=tuple((key, str(value)) for key, value in self.get_env().items()),
            port=port,
        )
        manifests = render_manifests(options, identity, single_user)
        return StartRequest(
            identity=identity,
            options=options,
            manifests=manifests,
            single_user=single_user,
            state=dict(self._backend_state),
            timeout=float(self.start_timeout),
        )

    async def stop(self, now: bool = False) -> None:
        """Stop the server and wait until it is gone, then close its usage interval now.

        When the backend cannot stop it now (an API outage outlasting the retries) and the
        reconciler runs, the stop is left to the reconciler, which removes every server no hub
        knows: the server keeps carrying our labels, its interval stays open (it is billed
        until it is really gone), and the error is logged. Without a reconciler the error is
        raised."""
        if not self._backend_state:  # never started (a failed start): only its reservation
            await self._close_abandoned_start()
            return
        try:
            await self.backend_object().stop(self.identity(), self._backend_state)
        except BackendError as exc:
            if not current_runtime().reconcilers:
                self.log.error("Could not stop %s: %s", self._log_name, exc)
                raise _refusal(str(exc), reason="backend", status=503) from exc
            self.log.error(
                "Could not stop %s now (%s); the reconciler removes it once the backend answers, "
                "and its usage counts until then",
                self._log_name,
                exc,
            )
            self.usage().leave_open()  # the reconciler closes it when the server is gone
            return
        await self.usage().ended(time.time(), ran=True)

    async def poll(self) -> int | None:
        """``None`` while the server runs, else its exit status (0 when never started).

        A server that never started (a start that failed or was refused after admission) is
        "stopped" for JupyterHub, which then never calls ``stop``: its reservation is closed
        here, so a failed start never keeps counting against a quota."""
        if not self._backend_state:
            if self.usage().interval_id is not None and not self._starting:
                await self._close_abandoned_start()
            return 0
        # JupyterHub polls every server at once when it starts: 5,000 polls in one loop
        # iteration held the loop for half a second. The cache reads take turns like
        # preparations; the ledger's work (not waited on while holding a turn) comes after.
        async with self._preparation_turn():
            try:
                status = await self.backend_object().poll(self.identity(), self._backend_state)
            except BackendError as exc:
                # Not knowing is not "stopped": forgetting a running server would orphan it.
                self.log.warning("Could not poll %s, assuming it runs: %s", self._log_name, exc)
                return None
        if status is None:
            self.usage().seen(within=self.poll_interval)  # written within one poll interval
        else:
            # Gone, at some moment since it was last seen running (perhaps while the hub was
            # down): the interval ends there, not now.
            await self.usage().ended(None, ran=True)
        return status

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """JupyterHub's progress events, from the backend's."""
        events = self.backend_object().progress(self.identity(), self._backend_state)
        try:
            async for event in events:
                yield _progress_event(event)
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def delete_forever(self) -> None:
        """JupyterHub deletes this server (a named server removed, or its user deleted): its
        per-server volumes go, and its homes go or stay as the instance's ``homes.on_delete``
        says. A server re-created with the same name gets its home back only when kept."""
        profiles = self.profile_set()
        homes = profiles.instance.homes.on_delete == "delete"
        try:
            await self.backend_object().delete_storage(self.identity(), profiles.instance.name, homes=homes)
        except BackendError as exc:
            # JupyterHub logs it and deletes the server anyway: say what is left behind.
            self.log.error("Could not remove the storage of deleted %s: %s", self._log_name, exc)
            raise
        self.log.info(
            "Deleted %s: its storage was removed%s",
            self._log_name,
            ", its homes too" if homes else "; its homes are kept (homes.on_delete: keep)",
        )
        self._home_generation = None

    async def rename(self, old_name: str, new_name: str) -> None:
        """Refused: a server's home and storage are kept under its name, and would be lost."""
        raise web.HTTPError(
            400,
            "Servers cannot be renamed on this hub: each server's home is kept under its name. "
            "Change its display name instead.",
        )

    # --- state and environment -------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """JupyterHub's state plus the backend's, so a restarted hub finds its servers."""
        state: dict[str, Any] = super().get_state()
        if self._backend_state:
            state["backend"] = self.backend
            state["server"] = self._backend_state
        interval = self._usage.interval_id if self._usage is not None else self._saved_interval
        if interval is not None:
            state["usage_interval"] = interval
        if self._granted:
            # The options last granted: what a refused request leaves stored instead of itself.
            state["granted_options"] = self._granted
        if self._home_generation is not None:
            state["home_generation"] = self._home_generation
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        server = state.get("server")
        self._backend_state = dict(server) if isinstance(server, Mapping) else {}
        interval = state.get("usage_interval")
        self._saved_interval = interval if isinstance(interval, int) else None
        if self._usage is not None:
            self._usage.restore(self._saved_interval)
        granted = state.get("granted_options")
        if isinstance(granted, Mapping):
            self._granted = dict(granted)
        generation = state.get("home_generation")
        if isinstance(generation, int) and not isinstance(generation, bool) and generation >= 0:
            self._home_generation = generation
        saved = state.get("backend")
        if self._backend_state and saved != self.backend:
            self.log.warning(
                "%s was started by backend %r, but the hub now uses %r",
                self._log_name,
                saved,
                self.backend,
            )

    def clear_state(self) -> None:
        # JupyterHub calls this after a stop and before each start (before run_pre_spawn_hook).
        super().clear_state()
        self._backend_state = {}
        self._options = None
        self._pending = None
        self._usage = None  # the next run gets a recorder of its own
        self._saved_interval = None

    def get_env(self) -> dict[str, str]:
        """JupyterHub's environment, plus the profile's ``default_url`` where images apply.

        The profile's own variables and the resource figures (``CPU_LIMIT``, ``MEM_LIMIT``...) are
        added by the renderer and the backends, beneath these: the hub's variables always win.
        """
        env: dict[str, str] = super().get_env()
        options = self._pending or self._options
        # A profile's default URL (e.g. /rstudio) belongs to its image; where images do not apply
        # (local processes), the page it names does not exist.
        images_apply = self.backend_object().features.supports_images
        if options is not None and options.default_url and images_apply:
            env["JUPYTERHUB_DEFAULT_URL"] = options.default_url
        return env


def _options_applied_by_spawner(spawner: Any, user_options: Any) -> None:
    """JupyterHub's ``apply_user_options`` hook: nothing to do, EInfraSpawner resolves them."""


def _progress_event(event: ProgressEvent) -> dict[str, Any]:
    message: dict[str, Any] = {"message": event.message}
    if event.progress is not None:
        message["progress"] = max(0, min(100, event.progress))
    if event.failed:
        message["failed"] = True
    return message
