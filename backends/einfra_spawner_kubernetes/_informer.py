"""One shared list+watch per (kind, namespace): the backend's only source of cluster state.

An ``Informer`` lists once, then watches from the list's resourceVersion, keeping a cache of raw
objects and calling its subscribers for every change. It resumes from the last resourceVersion it
saw (bookmarks move it forward without any object), lists again only on 410 Gone, backs off on
errors, and never raises into the hub: a broken API server delays news, it does not end the hub.
Waiters (a start waiting for its pod to run, a stop waiting for it to go) subscribe to one object
name and are woken by events, never by a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
from collections.abc import Callable
from typing import Any

from ._api import KubeApi
from ._api_errors import ApiError, Gone, api_error

__all__ = ["Informer", "Listener", "slim_event", "slim_pod"]

#: How many watch events are applied before the informer lets the event loop run other tasks.
EVENTS_PER_TURN = 32
#: Objects per list request. A hub restarted with 5,000 servers listed some 20,000 events in one
#: response: parsing and indexing it held the event loop for most of a second. Pages of this
#: size (as kubectl and client-go use) keep each step short, and the loop runs between pages.
LIST_PAGE = 500
#: Listed objects compared and announced to subscribers before the loop runs other tasks.
OBJECTS_PER_TURN = 256

#: Called with (event type, object): ADDED, MODIFIED, DELETED, or SYNCED after a (re)list.
Listener = Callable[[str, dict[str, Any]], None]


def object_key(obj: dict[str, Any]) -> str:
    """``namespace/name`` of an object (``name`` for cluster-scoped ones)."""
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata.get('name')}" if namespace else str(metadata.get("name"))


_POD_METADATA = (
    "name",
    "namespace",
    "uid",
    "labels",
    "annotations",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
)


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Pod the backend reads: its identity and labels, where it runs, what its
    containers request (GPU capacity), and its status.

    The cache holds a pod for as long as it exists; the rest of its spec (environment,
    volumes, security context...) would be a dozen more objects per pod for the garbage
    collector to scan at every full collection, and in a spawn storm those scans stall the
    hub's event loop."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    slim_spec: dict[str, Any] = {
        "containers": [{"name": c.get("name"), "resources": c.get("resources") or {}} for c in containers]
    }
    for key in ("nodeName", "nodeSelector"):
        if key in spec:
            slim_spec[key] = spec[key]
    return {
        "metadata": {key: metadata[key] for key in _POD_METADATA if key in metadata},
        "spec": slim_spec,
        "status": pod.get("status") or {},
    }


_EVENT_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
_EVENT_FIELDS = ("reason", "message", "type", "count", "firstTimestamp", "lastTimestamp", "eventTime")
_INVOLVED = ("kind", "name", "namespace", "uid")


def slim_event(event: dict[str, Any]) -> dict[str, Any]:
    """The parts of an Event the backend reads: which pod it is about, its reason, message and
    type, and when. A hub restarted with thousands of servers caches a few events per server;
    the rest (source, reporting component, a real API server's managedFields) was most of their
    memory."""
    metadata = event.get("metadata") or {}
    involved = event.get("involvedObject") or {}
    slim: dict[str, Any] = {
        "metadata": {key: metadata[key] for key in _EVENT_METADATA if key in metadata},
        "involvedObject": {key: involved[key] for key in _INVOLVED if key in involved},
    }
    for key in _EVENT_FIELDS:
        if key in event:
            slim[key] = event[key]
    return slim


class Informer:
    """The cache and the watch of one kind in one namespace (``None``: all namespaces)."""

    def __init__(
        self,
        api: KubeApi,
        resource: str,
        namespace: str | None,
        log: logging.Logger,
        *,
        selectors: dict[str, str] | None = None,
        index: Callable[[dict[str, Any]], str] = object_key,
        keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        watch_timeout: int = 300,
        max_backoff: float = 5.0,
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.selectors = selectors or {}
        # Subscribers are found by this key: the object's own for pods, the involved object's
        # for events, so N waiting spawns cost one dict lookup per event, not N calls.
        self.index = index
        # What of each object is cached and given to subscribers (the whole object when None).
        self.keep = keep
        self.log = log
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.cache: dict[str, dict[str, Any]] = {}
        # The cache again, grouped by ``index`` (when it is not the object's own key): a start
        # replays its pod's earlier events from here, without scanning every event in the cache.
        self._grouped: dict[str, dict[str, dict[str, Any]]] | None = None if index is object_key else {}
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.relists = 0
        self._listeners: dict[str, list[Listener]] = {}
        self._everything: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    # --- subscriptions -------------------------------------------------------------------------

    def subscribe(self, key: str | None, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for each change of the objects indexed ``key`` (all when ``None``).
        Returns the function that unsubscribes."""
        listeners = self._everything if key is None else self._listeners.setdefault(key, [])
        listeners.append(listener)

        def unsubscribe() -> None:
            if listener in listeners:
                listeners.remove(listener)
            if key is not None and not listeners:
                self._listeners.pop(key, None)

        return unsubscribe

    def indexed(self, key: str) -> list[dict[str, Any]]:
        """The cached objects whose index is ``key`` (for pods: the pod itself, if cached)."""
        if self._grouped is None:
            obj = self.cache.get(key)
            return [] if obj is None else [obj]
        return list(self._grouped.get(key, {}).values())

    def _store(self, key: str, obj: dict[str, Any]) -> None:
        self.cache[key] = obj
        if self._grouped is not None:
            self._grouped.setdefault(self.index(obj), {})[key] = obj

    def _forget(self, key: str) -> None:
        obj = self.cache.pop(key, None)
        if obj is not None and self._grouped is not None:
            group_key = self.index(obj)
            group = self._grouped.get(group_key)
            if group is not None:
                group.pop(key, None)
                if not group:
                    del self._grouped[group_key]

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        key = self.index(obj)
        for listener in (*self._listeners.get(key, ()), *self._everything):
            try:
                listener(kind, obj)
            except Exception:  # a broken listener must not stop the watch for everyone
                self.log.exception("listener for %s %s failed", self.resource, key)

    # --- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start listing and watching (once); ``synced`` is set after the first list."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer-{self.resource}-{self.namespace}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _list(self) -> None:
        """List every object, a page at a time, then replace the cache and announce what
        changed. The list's resourceVersion is the first page's: every page of a list is the
        snapshot at that version, and the watch resumes from it."""
        # The hub froze its start-up heap (configure(freeze_heap=True)). What a restarted hub
        # builds meanwhile (thousands of spawners) is as long-lived, and so is this list's
        # cache: frozen too, at every page, before the list's allocations trigger full
        # collections that scan them (at 5,000 servers they held the loop for seconds). Frozen
        # objects are never scanned, and still freed when dropped unless held in a reference
        # cycle; gc.freeze() itself costs no scan. A list is rare: at start and after a 410.
        frozen = gc.get_freeze_count() > 0
        items: list[dict[str, Any]] = []
        version = ""
        token: str | None = None
        while True:
            body = await self.api.list(
                self.resource, self.namespace, limit=LIST_PAGE, continue_token=token, **self.selectors
            )
            page = body.get("items") or []
            items.extend(page if self.keep is None else [self.keep(o) for o in page])
            if frozen:
                gc.freeze()
            metadata = body.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue") or None
            if token is None:
                break
            await asyncio.sleep(0)  # let the hub serve its users between pages
        fresh = {object_key(o): o for o in items}
        old = self.cache
        self.cache = fresh
        if self._grouped is not None:
            self._grouped = {}
            for key, obj in fresh.items():
                self._grouped.setdefault(self.index(obj), {})[key] = obj
        self.resource_version = version
        self.relists += 1
        if frozen:
            gc.freeze()  # the cache, as indexed
        announced = 0
        for key, obj in old.items():
            if key not in fresh:  # gone while we were not watching
                self._emit("DELETED", obj)
                announced += 1
                if announced % OBJECTS_PER_TURN == 0:
                    await asyncio.sleep(0)
        for key, obj in fresh.items():
            if old.get(key) != obj:
                self._emit("ADDED" if key not in old else "MODIFIED", obj)
                announced += 1
                if announced % OBJECTS_PER_TURN == 0:
                    await asyncio.sleep(0)
        self.synced.set()

    def _apply(self, event: dict[str, Any]) -> None:
        """Apply one watch event. An ERROR event raises its :class:`~._api_errors.ApiError`:
        :class:`~._api_errors.Gone` (410) when the resourceVersion has expired and the watch must list
        again."""
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            raise api_error(int(obj.get("code") or 500), obj, f"watch {self.resource}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if kind == "BOOKMARK":
            return
        if self.keep is not None:
            obj = self.keep(obj)
        key = object_key(obj)
        if kind == "DELETED":
            self._forget(key)
        elif kind in ("ADDED", "MODIFIED"):
            if self._grouped is not None:
                self._forget(key)  # its index may have changed
            self._store(key, obj)
        else:
            return
        self._emit(str(kind), obj)

    async def _run(self) -> None:
        failures = 0
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                applied = 0
                async for event in self.api.watch(
                    self.resource, self.namespace, self.resource_version, self.watch_timeout, **self.selectors
                ):
                    applied += 1
                    if applied % EVENTS_PER_TURN == 0:
                        await asyncio.sleep(0)  # one read may carry hundreds of events: let others run
                    self._apply(event)
                    failures = 0
                # A watch that ends without an error is normal (server time-out): resume at once.
            except asyncio.CancelledError:
                raise
            except Gone:  # in the stream, or as the watch request's answer
                self.log.info(
                    "%s watch: resourceVersion %s expired, listing again",
                    self.resource,
                    self.resource_version,
                )
                need_list = True
                continue
            except ApiError as error:
                failures += 1
                self.log.warning("%s watch failed (%s); retrying", self.resource, error)
            except Exception as error:  # never end the hub: log, back off, resume
                failures += 1
                self.log.warning("%s watch broke (%r); retrying", self.resource, error)
            if failures:
                delay = min(self.max_backoff, 0.05 * 2 ** min(failures, 10))
                await asyncio.sleep(delay / 2 + random.random() * delay / 2)  # noqa: S311
