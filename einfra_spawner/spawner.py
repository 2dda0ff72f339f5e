"""The JupyterHub spawner: thin glue between JupyterHub's Spawner API, the pure core and a backend.

Where it sits in the data flow: JupyterHub hands this spawner a request (the options form posted
through :meth:`EInfraSpawner.options_from_form`, ``/hub/spawn?opt-...`` query arguments, or REST
``user_options``); the spawner resolves it with :func:`~einfra_spawner.resolve_options` for the
user's groups, has the usage ledger admit it and the backend start it from the rendered manifests
(:mod:`einfra_spawner.lifecycle`). Nothing from one spawn is kept as configuration for the next:
a spawn's resolved options live on the spawner only while that server exists. Beneath the class:
its settings (:mod:`einfra_spawner.spawner_settings`), what it looks up from them
(:mod:`einfra_spawner.spawner_lookups`; shared by the hub's :mod:`einfra_spawner.runtime`), its
saved state (:mod:`einfra_spawner.spawner_state`) and its form page
(:mod:`einfra_spawner.spawner_form`). How a refusal reaches the caller (400 for options, 403 for
quotas, 503 for the backend or the ledger) is told in :mod:`einfra_spawner.refusals`.

Usage: each run is an interval in the ledger, opened when the start is admitted, marked running
when the backend answers, refreshed ("last seen running") at every poll, closed at stop, or at
its last-seen time when a poll finds the server gone (see :mod:`einfra_spawner.usage.recorder`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import jupyterhub
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import default

from . import lifecycle
from . import spawner_lookups as lookups
from . import spawner_settings as settings
from .asked import as_stored, query_options, request_to_resolve
from .backend import Backend
from .capacity import capacity_for
from .errors import BackendError, OptionsError
from .form import capacity_figures, request_from_form, request_from_query
from .profiles import ProfileSet
from .refusals import refusal
from .render import ServerIdentity, SingleUser
from .resolve import ResolvedOptions, UserContext, resolve_options
from .runtime import current_runtime
from .spawner_form import options_form
from .spawner_state import SavedState
from .usage import metrics as usage_metrics
from .usage.recorder import UsageRecorder

__all__ = ["EInfraSpawner"]

# JupyterHub 6 (read in 6.1) hands options_from_query the option keys of /hub/spawn's query
# (asked.query_options); JupyterHub 5 (read in 5.3) hands it every query argument but "next".
_HUB_READS_QUERY_OPTIONS = jupyterhub.version_info >= (6,)


class EInfraSpawner(Spawner):  # type: ignore[misc]  # jupyterhub is untyped
    """Spawns single-user servers from declarative profiles, through a pluggable backend."""

    # The operator's settings, with their help texts in einfra_spawner.spawner_settings.
    profiles_dir = settings.profiles_dir()
    backend = settings.backend()
    gpu_capacity_timeout = settings.gpu_capacity_timeout()
    usage_db_url = settings.usage_db_url()
    usage_timeout = settings.usage_timeout()
    polls_per_iteration = settings.polls_per_iteration()
    reconcile_interval = settings.reconcile_interval()
    reconcile_grace = settings.reconcile_grace()

    @default("reconcile_grace")
    def _default_reconcile_grace(self) -> float:
        return float(self.start_timeout + self.http_timeout)

    # Per-server facts, never configuration: the request resolved for the start in progress, the
    # options the running server was given, and the backend's state for that server.
    _pending: ResolvedOptions | None = None
    _options: ResolvedOptions | None = None
    _spawn_began: float | None = None  # monotonic time the start was admitted, for the metric
    _starting = False  # from admission until the start has ended, either way
    _granted: dict[str, Any] | None = None  # the request last granted, as stored (no reset)
    # The generation of the server's current home (see einfra_spawner.storage), kept across
    # stops and hub restarts; None: not known yet (asked of the backend at the next start).
    _home_generation: int | None = None
    _usage: UsageRecorder | None = None  # this run's side of the usage ledger
    _saved_interval: int | None = None  # its ledger row, as a restarted hub's state names it
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

    # --- what the spawner looks up (see einfra_spawner.spawner_lookups) ----------------------------

    def profile_set(self) -> ProfileSet:
        """The instance's profiles (loaded once per process)."""
        if self._profiles is None:
            self._profiles = lookups.instance_profiles(current_runtime(), self.profiles_dir, self.log)
        return self._profiles

    def backend_object(self) -> Backend:
        """The backend named by :attr:`backend`, built once per process and shared."""
        if self._backend is None:
            self._backend = lookups.shared_backend(current_runtime(), self.backend, self.config, self.log)
        return self._backend

    def user_context(self) -> UserContext:
        """Who is asking, as the resolver sees them."""
        return lookups.user_context(self.user)

    def identity(self) -> ServerIdentity:
        """Whose server this is, in the namespace the backend chooses for it (if it has any).
        Computed once: a server is never renamed, nor moved to another backend."""
        if self._identity is None:
            self._identity = lookups.server_identity(self.backend_object(), self.user.name, self.name)
        return self._identity

    def usage(self) -> UsageRecorder:
        """This run's usage recorder, made at the first use of each run."""
        if self._usage is None:
            self._usage = lookups.run_recorder(
                current_runtime(),
                self.profile_set(),
                ledger_url=self.usage_db_url,
                user=self.user_context(),
                server=self.name,
                log=self.log,
                describe=self._log_name,
                interval=self._saved_interval,
            )
        return self._usage

    def resolve(self, request: object) -> ResolvedOptions:
        """Resolve ``request`` for this user, or raise a 400 error with the resolver's message."""
        try:
            return resolve_options(self.profile_set(), self.user_context(), request)
        except OptionsError as exc:
            self.log.info("Refused a request for %s: %s", self._log_name, exc)
            raise refusal(str(exc), reason="options") from exc

    def _poll_turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        return current_runtime().poll_turn(self.polls_per_iteration)

    @property
    def resolved_options(self) -> ResolvedOptions | None:
        """What the start in progress (or the running server) was granted, if known."""
        return self._pending or self._options

    # --- the options form ------------------------------------------------------------------------

    async def get_options_form(self) -> str:
        """The options form for this user (JupyterHub wraps it in its own ``<form>``)."""
        return await options_form(
            self.profile_set(),
            self.user_context(),
            self.backend_object(),
            stored=self.user_options,
            usage=self.usage,
            capacity_timeout=self.gpu_capacity_timeout,
            usage_timeout=self.usage_timeout,
            gpus_url=lookups.gpus_url(current_runtime()),
            log=self.log,
        )

    async def gpu_figures(self) -> dict[str, dict[str, int | str]]:
        """Free/total GPUs of the types this user can see, as the GPU figures service returns them."""
        profiles, user, timeout = self.profile_set(), self.user_context(), self.gpu_capacity_timeout
        return capacity_figures(await capacity_for(self.backend_object(), profiles, user, timeout, self.log))

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

        JupyterHub awaits what this returns: the ledger work is asynchronous."""
        return self._resolve_admit_then_hook()

    async def _resolve_admit_then_hook(self) -> Any:
        self._starting = True
        try:
            request = self._request_of_this_start()
            try:
                self._pending = self.resolve(request)
            except web.HTTPError:
                usage_metrics.SPAWN_FAILURES.labels(reason="options").inc()
                raise
            ledger = self.usage_db_url
            admitted = await lifecycle.admit(
                self.usage(), self._pending, log=self.log, server=self._log_name, ledger_url=ledger
            )
        except BaseException:
            # Refused: the request leaves nothing of itself behind (JupyterHub stored it).
            self._store_user_options(self._granted or {})
            self._starting = False
            raise
        self._granted = as_stored(request)
        self._spawn_began = admitted
        try:
            result = super().run_pre_spawn_hook()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
        except BaseException:  # the operator's hook refused: the reservation goes too
            await self._close_abandoned_start()
            raise
        return result

    def _request_of_this_start(self) -> object:
        """The request to resolve for this start (:func:`.asked.request_to_resolve`: a stored home
        reset counts only when the request being handled asks for it), and what JupyterHub keeps
        of it (never a reset)."""
        handled = getattr(getattr(self, "handler", None), "request", None)
        request, dropped = request_to_resolve(self.user_options, handled, self.profile_set, self.user_context)
        if dropped:
            self.log.info(
                "Ignored a stored home reset for %s: a reset acts only in the request that asks for it",
                self._log_name,
            )
        if isinstance(request, Mapping):
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
        began, self._spawn_began = self._spawn_began, None
        endpoint = await lifecycle.run_start(
            self._start_backend(options),
            profile=options.profile,
            began=began,
            timeout=self.start_timeout,
            abandon=self._close_abandoned_start,
        )
        self._starting = False
        self.usage().running()
        return endpoint

    async def _start_backend(self, options: ResolvedOptions) -> tuple[str, int]:
        """Have the backend start the server in the home it has now; keep the backend's state and
        the home the server then has."""
        backend, identity = self.backend_object(), self.identity()
        try:
            self._home_generation = await lifecycle.current_home(
                backend, identity, options, self._home_generation
            )
            started, request = await lifecycle.start_on_backend(
                backend,
                options,
                identity=identity,
                home_generation=self._home_generation,
                single_user=self._single_user,
                state=self._backend_state,
                timeout=float(self.start_timeout),
            )
        except BackendError as exc:
            self.log.warning("Could not start %s: %s", self._log_name, exc)
            raise refusal(str(exc), reason="backend", status=503) from exc
        self._backend_state = dict(started.state)
        # The home the server now has: a reset that kept the old home moved it on.
        self._home_generation = request.manifests.home_generation
        return started.endpoint.ip, started.endpoint.port

    def _single_user(self) -> SingleUser:
        """The single-user server's command, arguments, environment and port, as JupyterHub
        gives them."""
        # JupyterHub tells the server where to listen through JUPYTERHUB_SERVICE_URL (get_env),
        # built from ip and port. A backend may say where its servers listen: a pod on every
        # address of its own network namespace. The local backend rewrites that URL itself with
        # the loopback address and a free port of its own.
        listen_ip = self.backend_object().features.listen_ip
        if listen_ip:
            self.ip = listen_ip
        port: int = self.port or SingleUser().port  # type: ignore[has-type]  # a traitlets Integer
        self.port = port
        return SingleUser(
            cmd=tuple(self.cmd),
            args=tuple(self.get_args()),
            env=tuple((key, str(value)) for key, value in self.get_env().items()),
            port=port,
        )

    async def stop(self, now: bool = False) -> None:
        """Stop the server and wait until it is gone, then close its usage interval now (or leave
        both to the reconciler if the backend does not answer: :func:`.lifecycle.stop_server`)."""
        if not self._backend_state:  # never started (a failed start): only its reservation
            await self._close_abandoned_start()
            return
        await lifecycle.stop_server(
            self.backend_object(),
            self.identity(),
            self._backend_state,
            self.usage(),
            reconciled=bool(current_runtime().reconcilers),
            log=self.log,
            server=self._log_name,
        )

    async def poll(self) -> int | None:
        """``None`` while the server runs, else its exit status (0 when never started).

        A server that never started (a start that failed or was refused after admission) is
        "stopped" for JupyterHub, which then never calls ``stop``: its reservation is closed
        here, so a failed start never keeps counting against a quota."""
        if not self._backend_state:
            if self.usage().interval_id is not None and not self._starting:
                await self._close_abandoned_start()
            return 0
        return await lifecycle.poll_server(
            self.backend_object,
            self.identity,
            self._backend_state,
            self.usage,
            turn=self._poll_turn,
            within=self.poll_interval,
            log=self.log,
            server=self._log_name,
        )

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """JupyterHub's progress events, from the backend's."""
        events = self.backend_object().progress(self.identity(), self._backend_state)
        async with contextlib.aclosing(lifecycle.hub_progress(events)) as converted:
            async for event in converted:
                yield event

    async def delete_forever(self) -> None:
        """JupyterHub deletes this server (a named server removed, or its user deleted): its
        per-server volumes go, and its homes go or stay as the instance's ``homes.on_delete``
        says. A server re-created with the same name gets its home back only when kept."""
        instance = self.profile_set().instance
        await lifecycle.delete_storage(
            instance, self.backend_object(), self.identity(), log=self.log, server=self._log_name
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
        interval = self._usage.interval_id if self._usage is not None else self._saved_interval
        saved = SavedState(
            server=self._backend_state,
            backend=self.backend,
            usage_interval=interval,
            granted_options=self._granted,
            home_generation=self._home_generation,
        )
        state.update(saved.as_state())
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        saved = SavedState.from_state(state)
        self._backend_state = dict(saved.server)
        self._saved_interval = saved.usage_interval
        if self._usage is not None:
            self._usage.restore(self._saved_interval)
        if saved.granted_options is not None:
            self._granted = dict(saved.granted_options)
        if saved.home_generation is not None:
            self._home_generation = saved.home_generation
        if self._backend_state and saved.backend != self.backend:
            self.log.warning(
                "%s was started by backend %r, but the hub now uses %r",
                self._log_name,
                saved.backend,
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
