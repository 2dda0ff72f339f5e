"""The Kubernetes API as the backend uses it: typed core/v1 operations on raw JSON, retried.

The top of the backend's API layer, and the one part the rest of the backend calls: one
:class:`KubeApi` per hub process (held by :class:`~._cluster.Cluster`) creates, gets,
replaces, deletes, lists (in pages) and watches objects as plain dicts. Each call runs its
requests (:func:`~._transport.exchange`) inside a :class:`~._retry.Budget`, so it is retried on
429, 5xx, time-outs and refused or dropped connections until its deadline; every error is an
:class:`~._api_errors.ApiError`, the statuses a caller acts on as subclasses (``except
Conflict:``). Lists and watches go through kubernetes-asyncio's generated ``CoreV1Api``, the
calls of a start or a stop through the leaner :class:`~._transport.Transport`. A create whose
outcome is unknown (no answer, or a 500, 502 or 504) is looked up before it is sent again: see
:meth:`KubeApi.create`.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client

from ._api_errors import ApiError, MaybeCreated, NoResponse, NotFound, api_error, maybe_applied, retriable
from ._retry import Budget, RetryNotes, RetryPolicy
from ._transport import Transport, exchange

__all__ = ["KubeApi"]


def _made_by(existing: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether ``existing`` is the object a create of ``body`` made: not being deleted, the
    same labels, and ``body``'s annotations among its own (admission may add annotations)."""
    theirs = existing.get("metadata") or {}
    mine = body.get("metadata") or {}
    if theirs.get("deletionTimestamp"):
        return False
    if (theirs.get("labels") or {}) != (mine.get("labels") or {}):
        return False
    annotations = theirs.get("annotations") or {}
    return all(annotations.get(key) == value for key, value in (mine.get("annotations") or {}).items())


class KubeApi:
    """Raw-JSON core/v1 calls with timeouts and retries. One per hub process.

    Every call takes an optional ``deadline``, a :func:`time.monotonic` instant: it is retried
    until another attempt would end after it, and no request outlives it. Without one, the
    policy's ``budget`` (seconds from the call) applies. A call that cannot succeed raises the
    last error: an :class:`~._api_errors.ApiError`, or one of its subclasses.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        policy: RetryPolicy,
        log: logging.Logger,
        *,
        connections: int = 16,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.client = api_client
        self.policy = policy
        self.transport = Transport(api_client, connections=connections, tls=tls)
        self.log = log
        #: Requests made, by (verb, resource): read by tests and benchmarks.
        self.counts: dict[tuple[str, str], int] = {}
        self._notes = RetryNotes(log)

    async def close(self) -> None:
        """Close this layer's connections (the generated client's are closed with it)."""
        await self.transport.close()

    # --- one request, and the retries around it -------------------------------------------------

    def _budget(self, what: str, subject: str, deadline: float | None) -> Budget:
        return Budget(self.policy, self._notes, what, subject, deadline)

    async def _attempt(
        self, budget: Budget, verb: str, resource: str, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """One request within ``budget``; every failure comes out as an :class:`ApiError`."""
        timeout = budget.timeout()
        self.counts[(verb, resource)] = self.counts.get((verb, resource), 0) + 1
        return await exchange(f"{verb} {resource}", timeout, call, *args, **kwargs)

    async def _retrying(
        self,
        verb: str,
        resource: str,
        subject: str,
        deadline: float | None,
        call: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> dict[str, Any]:
        budget = self._budget(f"{verb} {resource}", subject, deadline)
        while True:
            try:
                result = await self._attempt(budget, verb, resource, call, *args, **kwargs)
            except ApiError as error:
                if not retriable(error) or not await budget.wait(error):
                    raise budget.gave_up(error) from error.__cause__
                continue
            budget.done()
            return result

    # --- the calls the backend makes ----------------------------------------------------------

    @staticmethod
    def _path(resource: str, namespace: str | None, name: str | None = None) -> str:
        path = "/api/v1" if namespace is None else f"/api/v1/namespaces/{quote(namespace, safe='')}"
        path += f"/{resource}"
        return path if name is None else f"{path}/{quote(name, safe='')}"

    async def create(
        self, resource: str, namespace: str | None, body: dict[str, Any], *, deadline: float | None = None
    ) -> dict[str, Any]:
        """Create ``body`` in ``namespace``; returns the object the server stored.

        Retried like every call, with one rule for attempts whose outcome is unknown (no
        answer, a dropped connection, or a 500, 502 or 504: the server may have created the
        object anyway). Before such a create is sent again, and before the call gives up after
        one, the object is looked up by the body's ``metadata.name``. If it exists, is not
        being deleted, has the body's labels (ours carry the spec hash) and the body's
        annotations, the earlier attempt made it: it is returned, and nothing is created
        twice. If it is absent the create is sent again; if it is another object of that name
        the create is sent again too and meets :class:`Conflict`, as any create of a taken
        name does. ``namespace`` is ``None`` for a cluster-scoped kind (PersistentVolumes).
        A look-up that fails is retried within the deadline. When the deadline
        passes with the outcome still unknown, :class:`MaybeCreated` is raised: the object may
        exist, and the caller should remove it. A body with only ``generateName`` cannot be
        looked up: it is never sent twice, and an unknown outcome raises MaybeCreated at once.
        """
        return await self._create(resource, namespace, body, deadline)

    async def create_namespace(
        self, body: dict[str, Any], *, deadline: float | None = None
    ) -> dict[str, Any]:
        """Create a namespace, with the rules of :meth:`create`."""
        return await self._create("namespaces", None, body, deadline)

    async def _create(
        self, resource: str, namespace: str | None, body: dict[str, Any], deadline: float | None
    ) -> dict[str, Any]:
        name = str((body.get("metadata") or {}).get("name") or "")
        subject = f"{namespace}/{name}" if namespace else name
        what = f"create {resource}"
        budget = self._budget(what, subject, deadline)
        unsure: ApiError | None = None  # a failed attempt that may have created the object anyway
        final = False  # the budget is spent: one last look, then give up
        path = self._path(resource, namespace)
        while True:
            if unsure is not None:
                try:
                    existing = await self._look_up(budget, resource, namespace, name)
                except ApiError as error:
                    if final or not retriable(error) or not await budget.wait(error):
                        raise budget.gave_up(MaybeCreated(error, what, namespace, name)) from error
                    continue
                if existing is not None and _made_by(existing, body):
                    budget.done("found the object an earlier attempt created")
                    return existing
                unsure = None  # absent, or someone else's: a create settles it (or meets a 409)
                if final:
                    last = budget.last or NoResponse(what, TimeoutError("no time left"), delivered=False)
                    raise budget.gave_up(last)
            try:
                created = await self._attempt(
                    budget, "create", resource, self.transport.send, "POST", path, body
                )
            except ApiError as error:
                if retriable(error) and maybe_applied(error):
                    if not name:
                        raise budget.gave_up(MaybeCreated(error, what, namespace, name)) from error
                    unsure = error
                if not retriable(error):
                    raise budget.gave_up(error) from error.__cause__
                if not await budget.wait(error):
                    if unsure is None:
                        raise budget.gave_up(error) from error.__cause__
                    final = True
                continue
            budget.done()
            return created

    async def _look_up(
        self, budget: Budget, resource: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """One GET of ``name`` within ``budget``: the object, or None when it does not exist."""
        try:
            return await self._attempt(
                budget, "get", resource, self.transport.send, "GET", self._path(resource, namespace, name)
            )
        except NotFound:
            return None

    async def delete(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        grace: int | None = None,
        *,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Delete an object (:class:`NotFound` when it is not there, e.g. when a retry follows
        a delete that was carried out but not answered)."""
        query = {"gracePeriodSeconds": str(grace)} if grace is not None else None
        path = self._path(resource, namespace, name)
        subject = f"{namespace}/{name}"
        return await self._retrying(
            "delete", resource, subject, deadline, self.transport.send, "DELETE", path, None, query
        )

    async def get(
        self, resource: str, namespace: str | None, name: str, *, deadline: float | None = None
    ) -> dict[str, Any]:
        path = self._path(resource, namespace, name)
        return await self._retrying(
            "get", resource, f"{namespace}/{name}", deadline, self.transport.send, "GET", path
        )

    async def replace(
        self, resource: str, namespace: str | None, body: dict[str, Any], *, deadline: float | None = None
    ) -> dict[str, Any]:
        """Write ``body`` over the object of its name (PUT). It carries the ``resourceVersion``
        that was read, so a write over a newer version meets :class:`Conflict`, never a lost
        update."""
        name = str(body["metadata"]["name"])
        path = self._path(resource, namespace, name)
        subject = f"{namespace}/{name}"
        return await self._retrying(
            "update", resource, subject, deadline, self.transport.send, "PUT", path, body
        )

    def _lister(self, resource: str, namespace: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if resource == "nodes":
            return self.core.list_node, ()
        if resource == "persistentvolumes":
            return self.core.list_persistent_volume, ()
        namespaced: dict[str, Callable[..., Any]] = {
            "pods": self.core.list_namespaced_pod,
            "events": self.core.list_namespaced_event,
            "persistentvolumeclaims": self.core.list_namespaced_persistent_volume_claim,
        }
        everywhere: dict[str, Callable[..., Any]] = {
            "pods": self.core.list_pod_for_all_namespaces,
            "events": self.core.list_event_for_all_namespaces,
            "persistentvolumeclaims": self.core.list_persistent_volume_claim_for_all_namespaces,
        }
        if namespace is None:
            return everywhere[resource], ()
        return namespaced[resource], (namespace,)

    async def list(
        self,
        resource: str,
        namespace: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
        **selectors: str,
    ) -> dict[str, Any]:
        """One page of objects (within the policy's budget: a watch's list has no deadline): at
        most ``limit`` (all when ``None``), after the page whose ``metadata.continue`` is
        ``continue_token``."""
        method, args = self._lister(resource, namespace)
        subject = selectors.get("label_selector", "")
        paging: dict[str, Any] = {}
        if limit is not None:
            paging["limit"] = limit
        if continue_token:
            paging["_continue"] = continue_token
        return await self._retrying("list", resource, subject, None, method, *args, **selectors, **paging)

    async def watch(
        self,
        resource: str,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int,
        **selectors: str,
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request, as raw dicts, until the server ends the stream."""
        method, args = self._lister(resource, namespace)
        self.counts[("watch", resource)] = self.counts.get(("watch", resource), 0) + 1
        response = await method(
            *args,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.policy.timeout,
                sock_connect=self.policy.timeout,
                sock_read=timeout_seconds + 30,
            ),
            **selectors,
        )
        try:
            if not 200 <= response.status <= 299:
                raw = await response.read()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                raise api_error(response.status, body if isinstance(body, dict) else {}, f"watch {resource}")
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)
        finally:
            # close, not release: a stream left early must not go back to the pool half read
            response.close()
