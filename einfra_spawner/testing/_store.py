"""The object store: current objects, one global resourceVersion, change history, watchers.

This plays etcd plus the API server's watch cache. Every write takes the next value of a
single integer counter as the object's ``resourceVersion`` (serialised as a string, as on a
real server) and appends a :class:`Change` to a bounded history. A watch that starts from a
resourceVersion replays the history after it; when that part of the history has been
forgotten (the bound was reached, or a test called :meth:`Store.compact`), the watch is told
410 Expired, exactly the case a client must handle by relisting.

Stored objects are immutable snapshots: a writer always passes a fresh dict and never
mutates it afterwards, so history entries and list results can share them without copying.
Listeners (the fake scheduler, kubelet and controllers) are called synchronously after each
change and must not write to the store from inside the callback: they schedule their work on
the event loop, which keeps the order of events identical for every watcher.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ._selectors import FieldSelector, LabelSelector
from ._status import expired, status_body

JsonDict = dict[str, Any]
Listener = Callable[["Change"], None]

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"


class Change:
    """One write: its resourceVersion, the object after it and (for MODIFIED) before it."""

    __slots__ = ("_line", "namespace", "obj", "old", "resource", "rv", "type")

    def __init__(
        self, rv: int, resource: str, namespace: str, type_: str, obj: JsonDict, old: JsonDict | None
    ) -> None:
        self.rv = rv
        self.resource = resource
        self.namespace = namespace
        self.type = type_
        self.obj = obj
        self.old = old
        self._line: bytes | None = None

    def line(self) -> bytes:
        """The watch event as one line of JSON, serialised once and shared by all watchers."""
        if self._line is None:
            self._line = event_line(self.type, self.obj)
        return self._line


def event_line(type_: str, obj: JsonDict) -> bytes:
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"


class Watcher:
    """One open watch: its filter and a queue of event lines (None ends the stream)."""

    def __init__(
        self,
        store: Store,
        resource: str,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        max_queue: int,
    ) -> None:
        self.store = store
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        self._max_queue = max_queue
        self._filtered = bool(labels.requirements or fields.requirements)

    def _matches(self, obj: JsonDict) -> bool:
        return self.labels.matches(obj) and self.fields.matches(obj)

    def offer(self, change: Change) -> None:
        if self.closed:
            return
        if self.namespace is not None and change.namespace != self.namespace:
            return
        if not self._filtered:
            self._push(change.line())
            return
        matches = self._matches(change.obj)
        if change.type == MODIFIED and change.old is not None:
            # Like the real watch cache: an object that starts or stops matching the
            # selector is reported as ADDED or DELETED to this watcher.
            matched = self._matches(change.old)
            if matches and not matched:
                self._push(event_line(ADDED, change.obj))
            elif matched and not matches:
                self._push(event_line(DELETED, change.obj))
            elif matches:
                self._push(change.line())
        elif matches:
            self._push(change.line())

    def _push(self, line: bytes) -> None:
        if self.queue.qsize() >= self._max_queue:
            # A real API server also terminates a watcher that cannot keep up.
            self.close()
            return
        self.queue.put_nowait(line)

    def close(self) -> None:
        """End the stream after the events already queued (a clean close, no error)."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
            self.store.unwatch(self)


class Store:
    """All objects of all resources, keyed by resource, namespace ("" if cluster-scoped), name."""

    def __init__(self, *, history_limit: int = 10_000, watch_queue_limit: int = 100_000) -> None:
        self.resource_version = 0
        self._objects: dict[str, dict[str, dict[str, JsonDict]]] = {}
        self._history: deque[Change] = deque()
        self._history_limit = history_limit
        # Every change with a resourceVersion above this one is still in the history.
        self._compacted = 0
        self._watchers: dict[str, set[Watcher]] = {}
        self._watch_queue_limit = watch_queue_limit
        self.listeners: list[Listener] = []

    # --- reads ---------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> JsonDict | None:
        return self._objects.get(resource, {}).get(namespace, {}).get(name)

    def items(self, resource: str, namespace: str | None = None) -> list[JsonDict]:
        """Objects sorted by namespace and name, like a real list."""
        by_namespace = self._objects.get(resource, {})
        if namespace is not None:
            objects = by_namespace.get(namespace, {})
            return [objects[name] for name in sorted(objects)]
        return [by_namespace[ns][name] for ns in sorted(by_namespace) for name in sorted(by_namespace[ns])]

    def iter_objects(self, resource: str, namespace: str | None = None) -> Iterator[JsonDict]:
        """Unsorted and cheaper than :meth:`items`, for the scheduler's bookkeeping."""
        by_namespace = self._objects.get(resource, {})
        if namespace is not None:
            yield from by_namespace.get(namespace, {}).values()
            return
        for objects in by_namespace.values():
            yield from objects.values()

    def count(self, resource: str) -> int:
        return sum(len(objects) for objects in self._objects.get(resource, {}).values())

    # --- writes --------------------------------------------------------------------------

    def _record(
        self, resource: str, namespace: str, type_: str, obj: JsonDict, old: JsonDict | None
    ) -> Change:
        change = Change(self.resource_version, resource, namespace, type_, obj, old)
        if len(self._history) >= self._history_limit:
            self._compacted = self._history.popleft().rv
        self._history.append(change)
        for watcher in list(self._watchers.get(resource, ())):
            watcher.offer(change)
        for listener in self.listeners:
            listener(change)
        return change

    def _stamp(self, obj: JsonDict) -> None:
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)

    def add(self, resource: str, namespace: str, obj: JsonDict) -> Change:
        """Store a new object (the caller has checked that the name is free)."""
        self._stamp(obj)
        name = obj["metadata"]["name"]
        self._objects.setdefault(resource, {}).setdefault(namespace, {})[name] = obj
        return self._record(resource, namespace, ADDED, obj, None)

    def replace(self, resource: str, namespace: str, obj: JsonDict) -> Change:
        """Store a new version of an existing object."""
        name = obj["metadata"]["name"]
        objects = self._objects[resource][namespace]
        old = objects[name]
        self._stamp(obj)
        objects[name] = obj
        return self._record(resource, namespace, MODIFIED, obj, old)

    def remove(self, resource: str, namespace: str, name: str) -> Change:
        """Remove an object; the DELETED event carries its last state at a new version."""
        objects = self._objects[resource][namespace]
        old = objects.pop(name)
        if not objects:
            del self._objects[resource][namespace]
        final = {**old, "metadata": {**old["metadata"]}}
        self._stamp(final)
        return self._record(resource, namespace, DELETED, final, None)

    # --- watches -------------------------------------------------------------------------

    def watch(
        self,
        resource: str,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        since: int | None,
    ) -> Watcher:
        """Open a watch: from ``since`` (replaying history) or, if None, from the current state.

        Raises a 410 ``ApiError`` when the history after ``since`` is no longer retained.
        Registration and replay happen without awaiting, so no change can fall in between.
        """
        watcher = Watcher(self, resource, namespace, labels, fields, self._watch_queue_limit)
        if since is None:
            for obj in self.items(resource, namespace):
                if watcher._matches(obj):
                    watcher.queue.put_nowait(event_line(ADDED, obj))
        else:
            if since < self._compacted:
                raise expired(f"too old resource version: {since} ({self._compacted + 1})")
            replay = []
            for change in reversed(self._history):
                if change.rv <= since:
                    break
                replay.append(change)
            for change in reversed(replay):
                if change.resource == resource:
                    watcher.offer(change)
        self._watchers.setdefault(resource, set()).add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.resource, set()).discard(watcher)

    def watcher_count(self) -> int:
        return sum(len(watchers) for watchers in self._watchers.values())

    def drop_watches(self, resource: str | None = None) -> int:
        """Close open watches cleanly, as an API server does when a watch times out."""
        dropped = 0
        for name, watchers in list(self._watchers.items()):
            if resource is None or name == resource:
                for watcher in list(watchers):
                    watcher.close()
                    dropped += 1
        return dropped

    def compact(self) -> None:
        """Forget the history, so watches from any older resourceVersion get 410 Expired.

        The counter moves on by one, without a change: every version a client has seen is
        now too old, while the version of a fresh list is a valid start for a watch.
        """
        self._history.clear()
        self.resource_version += 1
        self._compacted = self.resource_version

    def expired_event(self, since: int) -> bytes:
        """The ERROR event a watch receives when it starts from a compacted version."""
        status = status_body(410, "Expired", f"too old resource version: {since} ({self._compacted + 1})")
        return event_line("ERROR", status)
