"""The hub process's runtime: one owner for what every spawner of a hub process shares.

Where it sits: JupyterHub builds one :class:`~einfra_spawner.spawner.EInfraSpawner` per server;
what they share (the loaded profile folders, the backend object with its watches and
connections, the usage ledger with its worker thread, the poll gate, the background
tasks: the backend's warm-up and the reconciler) belongs to one :class:`HubRuntime` per process.
:func:`~einfra_spawner.configure` arranges for :meth:`HubRuntime.begin` to run as the hub
starts; the runtime closes it all when JupyterHub shuts down (JupyterHub cancels every task of
its event loop and waits for them: the runtime's keeper task closes the runtime as it ends).

Spawners find the runtime with :func:`current_runtime`; tests install a fresh one with
:func:`use_runtime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from .backend import Backend, load_backend_class
from .profiles import ProfileSet, load_profiles
from .reconcile import HubView, Reconciler
from .usage.async_ledger import AsyncLedger

if TYPE_CHECKING:  # imports JupyterHub's service handlers: only where a hub configures it
    from .gpu_service import GpuServiceServer

__all__ = ["HubRuntime", "current_runtime", "use_runtime"]

T = TypeVar("T")


class HubRuntime:
    """What the spawners of one hub process share, built on first use and closed once."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        #: When this hub process started: reservations and servers from before cannot belong
        #: to a start in flight.
        self.started = clock()
        self._profiles: dict[str, ProfileSet] = {}
        self._backends: dict[str, Backend] = {}
        self._ledgers: dict[str, AsyncLedger] = {}
        # An asyncio semaphore is bound to one loop; tests run several loops in one process.
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Future[Any]] = set()
        self.reconcilers: list[Reconciler] = []
        #: The GPU figures service, served in this process (``einfra_spawner.configure``).
        self.gpu_service: GpuServiceServer | None = None

    # --- shared objects --------------------------------------------------------------------------

    @property
    def backends(self) -> Mapping[str, Backend]:
        """The backends built so far, by name."""
        return MappingProxyType(self._backends)

    @property
    def ledgers(self) -> Mapping[str, AsyncLedger]:
        """The usage ledgers opened so far, by URL."""
        return MappingProxyType(self._ledgers)

    def profiles(self, folder: str) -> ProfileSet:
        """The instance folder ``folder`` (an absolute path), loaded once."""
        profiles = self._profiles.get(folder)
        if profiles is None:
            profiles = self._profiles[folder] = load_profiles(folder)
        return profiles

    def backend(self, name: str, config: Any, log: Any) -> Backend:
        """The backend ``name``, built on first use with ``config`` and shared."""
        backend = self._backends.get(name)
        if backend is None:
            backend = self._backends.setdefault(name, load_backend_class(name)(config=config, log=log))
        return backend

    def set_backend(self, name: str, backend: Backend) -> None:
        """Use ``backend`` for ``name`` (tests and benchmarks bring their own)."""
        self._backends[name] = backend

    def ledger(self, url: str) -> AsyncLedger:
        """The usage ledger at ``url`` (its worker thread opens the database at the first job)."""
        ledger = self._ledgers.get(url)
        if ledger is None:
            ledger = self._ledgers.setdefault(url, AsyncLedger(url))
        return ledger

    @contextlib.asynccontextmanager
    async def poll_turn(self, width: int) -> AsyncIterator[None]:
        """A turn at this event loop's poll gate: at most ``width`` turns begin in one iteration
        of the loop, first come first served.

        A turn is given back at the next iteration, not when the block ends: the step it covers
        (reading a server's state from the backend's cache) does not wait for anything, so a turn
        given back at once would be taken again at once, and a burst of polls would still run in
        one iteration."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:  # an asyncio semaphore is FIFO
            gate = self._gates[loop] = asyncio.Semaphore(width)
        await gate.acquire()
        try:
            yield
        finally:
            loop.call_soon(gate.release)

    # --- background tasks ------------------------------------------------------------------------

    def track(self, work: Coroutine[Any, Any, T], log: logging.Logger, what: str) -> asyncio.Task[T]:
        """Run ``work`` in the background, referenced until it ends; its failure is logged."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda done: _log_failure(done, log, what))
        return task

    def begin(
        self,
        *,
        backend_name: str,
        config: Any,
        log: logging.Logger,
        usage_db_url: str | None,
        instance: str,
        reconcile_interval: float,
        reconcile_grace: float,
        hub_view: HubView,
        hub_started: Callable[[], Awaitable[None]],
        in_hub: bool = True,
    ) -> None:
        """The hub is starting (its configuration complete): open the ledger (``usage_db_url``;
        ``None`` where the instance records no usage), build the backend
        and let it warm up, start the reconciler, all in the background, and (``in_hub``) close
        everything when the hub shuts down."""
        ledger = self.ledger(usage_db_url) if usage_db_url is not None else None
        if ledger is not None:
            # Opens (and migrates) the database now, not at the first spawn; a failure is in the
            # log before anyone spawns.
            opening = ledger.call(_nothing)
            opening.add_done_callback(lambda done: _log_failure(done, log, "Opening the usage ledger"))
        try:
            backend = self.backend(backend_name, config, log)
        except Exception:  # the first spawn builds it again, and reports what fails
            log.exception("Could not prepare the %s backend at hub start", backend_name)
            return
        self.track(backend.warm_up(), log, f"Warming up the {backend_name} backend")
        if reconcile_interval > 0:

            async def opened() -> AsyncLedger | None:
                return ledger

            reconciler = Reconciler(
                instance=instance,
                backend=backend,
                ledger=opened,
                hub_view=hub_view,
                grace=reconcile_grace,
                process_started=self.started,
                log=log,
            )
            self.reconcilers.append(reconciler)
            self.track(reconciler.run_forever(reconcile_interval, hub_started), log, "The reconciler")
        if in_hub:  # a tool or a test that configures a hub without running one closes it itself
            self.track(self._keep(log), log, "Closing the einfra-spawner runtime")

    async def _keep(self, log: logging.Logger) -> None:
        """Lives as long as the hub's event loop runs; JupyterHub's shutdown cancels it (as every
        task) and waits for it, which closes the runtime."""
        try:
            await asyncio.Event().wait()
        finally:
            log.info("einfra-spawner: closing the backend connections and the usage ledger")
            await self.close()

    async def close(self) -> None:
        """Stop the background tasks, close the backends (watches, connections) and flush and
        close the ledgers. Servers keep running; a new hub process adopts them."""
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        service, self.gpu_service = self.gpu_service, None
        if service is not None:
            await service.close()
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            with contextlib.suppress(Exception):
                await backend.close()
        ledgers, self._ledgers = list(self._ledgers.values()), {}
        for ledger in ledgers:
            await asyncio.to_thread(ledger.shutdown)  # runs what is queued, then stops the thread


def _nothing(ledger: object) -> None:
    """A job that only makes the ledger's worker open the database."""


def _log_failure(done: asyncio.Future[Any], log: logging.Logger, what: str) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("%s failed", what, exc_info=done.exception())


_current: HubRuntime | None = None


def current_runtime() -> HubRuntime:
    """This process's runtime (built on first use)."""
    global _current
    if _current is None:
        _current = HubRuntime()
    return _current


def use_runtime(runtime: HubRuntime | None) -> HubRuntime | None:
    """Make ``runtime`` the process's runtime (``None``: a new one at the next use); returns the
    one it replaces. For tests and tools that run several hubs in one process."""
    global _current
    previous, _current = _current, runtime
    return previous
