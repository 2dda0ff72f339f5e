"""A thin layer over kubernetes-asyncio: raw JSON, a timeout on every request, retries within a budget.

Lists and watches go through the real client's ``CoreV1Api`` with ``_preload_content=False``,
so responses stay plain dicts (no conversion into model objects) and the status is checked
here. The calls a start or a stop makes (create, delete, get) skip the generated client's
request building, which costs more CPU than the request itself in a spawn storm (it walks the
whole pod manifest in ``sanitize_for_serialization``): they go on a bounded pool of aiohttp
connections of their own, with the client's configuration (host, TLS, proxy, and the bearer
token through the client's own ``update_params_for_auth``, so refreshed tokens keep working),
the body serialised once as compact JSON. That session does not "trust the environment": with
kubernetes-asyncio's session aiohttp looks up ``~/.netrc`` and the proxy variables in a worker
thread for every request (two thread hops, about half the CPU of a request); the proxy
variables are read once here instead, and ``~/.netrc`` not at all (the API server's
credentials come from the kubeconfig).

Retries are bounded by time, not by a count: a call is retried on 429, 5xx, time-outs and
refused or dropped connections until its deadline (or the policy's budget) would pass, so a
call outlasts an API server restart of a few seconds. The waits grow exponentially with
jitter, so that the callers of a storm do not come back in lock-step, and honour
``Retry-After``. Every error is an :class:`ApiError`; the statuses a caller acts on have
subclasses (``except Conflict:``). A create whose outcome is unknown (no answer, or a 500, 502
or 504) is looked up before it is sent again: see :meth:`KubeApi.create`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from kubernetes_asyncio import client

__all__ = [
    "ApiError",
    "Conflict",
    "Forbidden",
    "Gone",
    "KubeApi",
    "MaybeCreated",
    "NoResponse",
    "NotFound",
    "RetryPolicy",
    "TooManyRequests",
    "api_error",
    "tls_context",
]

#: Statuses worth another try: the server is overloaded, restarting or behind a failing proxy.
_RETRIABLE = frozenset({429, 500, 502, 503, 504})
#: Statuses after which a write may have been applied anyway (an error after the write, or a
#: proxy or the API server itself giving up on a request still in progress).
_MAYBE_APPLIED = frozenset({500, 502, 504})
#: Seconds between two log lines about retries of the same verb and resource.
_NOTE_EVERY = 5.0

# --- errors ---------------------------------------------------------------------------------------


class ApiError(Exception):
    """A Kubernetes API error with its status code and Status body (``{}`` when there was none).

    ``status`` is 0 when the server gave no answer (:class:`NoResponse`). ``retry_after`` is
    the response's ``Retry-After`` header, if any.
    """

    def __init__(
        self, status: int, body: dict[str, Any], what: str, *, retry_after: str | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.reason = str(body.get("reason", ""))
        self.retry_after = retry_after
        message = body.get("message") or f"HTTP {status}"
        super().__init__(f"{what}: {status} {message}" if status else f"{what}: {message}")


class Forbidden(ApiError):
    """403: the hub's service account may not do this (its RBAC)."""


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""


class Conflict(ApiError):
    """409: the object already exists (``reason`` AlreadyExists) or was changed meanwhile."""


class Gone(ApiError):
    """410: a watch's or list's resourceVersion is too old (Expired): list again."""


class TooManyRequests(ApiError):
    """429: the server asks to slow down; retried until the budget ends, after ``Retry-After``."""


class NoResponse(ApiError):
    """No answer (status 0): a time-out, or a connection refused, reset or dropped.

    ``delivered`` is False only when no connection was made, so the server cannot have acted
    on the request; ``permanent`` marks failures that retrying cannot fix (TLS, a bad URL).
    """

    def __init__(self, what: str, cause: BaseException, *, delivered: bool, permanent: bool = False) -> None:
        super().__init__(0, {"message": f"the API did not answer ({cause!r})"}, what)
        self.delivered = delivered
        self.permanent = permanent


class MaybeCreated(ApiError):
    """A create gave up without knowing whether the object was made: it may exist.

    Raised when the budget ran out after an attempt with no answer (or a 500, 502, 504) and
    the object could not be looked up since. The caller should remove ``namespace``/``name``
    (``namespace`` is None for cluster-wide objects) or check for it later. ``status``,
    ``body`` and the cause are those of the last failure.
    """

    def __init__(self, last: ApiError, what: str, namespace: str | None, name: str) -> None:
        super().__init__(last.status, last.body, what)
        where = f"{namespace}/{name}" if namespace else name
        self.args = (f"{what}: gave up without knowing whether {where} was created; it may exist ({last})",)
        self.last = last
        self.namespace = namespace
        self.name = name


_BY_STATUS: dict[int, type[ApiError]] = {
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    429: TooManyRequests,
}


def api_error(status: int, body: dict[str, Any], what: str, *, retry_after: str | None = None) -> ApiError:
    """The :class:`ApiError` (or its subclass for ``status``) for a failed response."""
    return _BY_STATUS.get(status, ApiError)(status, body, what, retry_after=retry_after)


def _retriable(error: ApiError) -> bool:
    if isinstance(error, NoResponse):
        return not error.permanent
    return error.status in _RETRIABLE


def _maybe_applied(error: ApiError) -> bool:
    """Whether the server may have carried out the request that failed with ``error``."""
    if isinstance(error, NoResponse):
        return error.delivered
    return error.status in _MAYBE_APPLIED


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


# --- the retry policy -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How API calls are bounded and retried.

    ``timeout``: seconds one request may take (never beyond the call's deadline).
    ``budget``: seconds a call keeps retrying when its caller gives no deadline.
    ``attempts``: at most this many requests per call (None: only time bounds a call).
    ``backoff``: seconds of the first wait (with jitter, between half of it and all of it);
    the waits double up to ``max_backoff``. ``max_retry_after``: the longest ``Retry-After``
    honoured.
    """

    timeout: float = 10.0
    budget: float = 30.0
    attempts: int | None = None
    backoff: float = 0.1
    max_backoff: float = 3.0
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.budget <= 0:
            raise ValueError("a retry policy needs a positive timeout and budget")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("a retry policy allows at least one attempt")

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first).

        "Equal jitter": a random point in the upper half of the exponential step, so that the
        waits still grow but many callers failing at once spread out. A ``Retry-After`` (in
        seconds, at most ``max_retry_after``) is waited instead, plus up to a fifth of it.
        """
        if retry_after and retry_after.strip().isdigit():
            seconds = min(float(retry_after), self.max_retry_after)
            if seconds > 0:
                return seconds * (1.0 + random.random() / 5)  # noqa: S311 - jitter, not security
        step = min(self.max_backoff, self.backoff * 2.0 ** min(retry, 32))
        return step / 2 + random.random() * step / 2  # noqa: S311 - jitter, not security


class _Budget:
    """The attempts of one call: how long the next request may take, whether and how long to
    wait before another, and the log lines about them."""

    def __init__(self, api: KubeApi, what: str, subject: str, deadline: float | None) -> None:
        self.api = api
        self.what = what
        self.subject = subject
        self.started = time.monotonic()
        self.deadline = self.started + api.policy.budget if deadline is None else deadline
        self.sent = 0
        self.retries = 0
        self.last: ApiError | None = None

    def timeout(self) -> float:
        """Seconds the next request may take; raises when the deadline has passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            if self.last is not None:
                raise self.last
            error = TimeoutError("the deadline passed before the request was sent")
            raise NoResponse(self.what, error, delivered=False)
        self.sent += 1
        return min(self.api.policy.timeout, remaining)

    async def wait(self, error: ApiError) -> bool:
        """Wait before the next attempt after ``error``; False, at once, when the deadline (or
        the policy's attempts) leaves no room for one."""
        self.last = error
        policy = self.api.policy
        if policy.attempts is not None and self.sent >= policy.attempts:
            return False
        delay = policy.delay(self.retries, error.retry_after)
        if time.monotonic() + delay >= self.deadline:
            return False
        self.retries += 1
        self.api._note_retry(self.what, self.subject, error)
        await asyncio.sleep(delay)
        return True

    def done(self, how: str = "succeeded") -> None:
        if self.sent > 1:
            self.api.log.info(
                "%s %s: %s after %d attempts in %.1f s",
                self.what,
                self.subject,
                how,
                self.sent,
                time.monotonic() - self.started,
            )

    def gave_up(self, error: ApiError) -> ApiError:
        """Log the end of a call that failed after retries; returns ``error`` to raise."""
        if self.retries:
            self.api.log.info(
                "%s %s: giving up after %d attempts in %.1f s: %s",
                self.what,
                self.subject,
                self.sent,
                time.monotonic() - self.started,
                error,
            )
        return error


def tls_context(configuration: client.Configuration) -> ssl.SSLContext | None:
    """The TLS settings of ``configuration``, as the generated client applies them (``None``
    for a plain-HTTP server). Building one takes ~20 ms of blocking work: call it in a thread."""
    if not str(configuration.host or "").startswith("https:"):
        return None
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def _environment_proxy(url: str) -> str | None:
    """The proxy the environment (``https_proxy``, ``no_proxy``...) names for ``url``, if any."""
    parts = urlsplit(url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    proxy = getproxies().get(parts.scheme)
    return str(proxy) if proxy else None


class KubeApi:
    """Raw-JSON core/v1 calls with timeouts and retries. One per hub process.

    Every call takes an optional ``deadline``, a :func:`time.monotonic` instant: it is retried
    until another attempt would end after it, and no request outlives it. Without one, the
    policy's ``budget`` (seconds from the call) applies. A call that cannot succeed raises the
    last error: an :class:`ApiError`, or one of its subclasses.
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
        rest = api_client.rest_client
        # Connections of its own, bounded: watches hold the generated client's connections for
        # minutes, and must never leave a create waiting for one (nor the other way round).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, ssl=tls if tls is not None else True),
            trust_env=False,
        )
        self._extra: dict[str, Any] = {}
        self._host = str(api_client.configuration.host or "")
        proxy = rest.proxy or _environment_proxy(self._host)
        if proxy:
            self._extra["proxy"] = proxy
        if rest.proxy_headers:
            self._extra["proxy_headers"] = rest.proxy_headers
        if rest.server_hostname:
            self._extra["server_hostname"] = rest.server_hostname
        self.log = log
        #: Requests made, by (verb, resource): read by tests and benchmarks.
        self.counts: dict[tuple[str, str], int] = {}
        # (when the last line about retries of this verb and resource was logged, retries since)
        self._notes: dict[str, tuple[float, int]] = {}

    # --- one request, and the retries around it -------------------------------------------------

    async def _once(
        self, verb: str, resource: str, timeout: float, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        self.counts[(verb, resource)] = self.counts.get((verb, resource), 0) + 1
        response = await call(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
        try:
            raw = await response.read()
        finally:
            response.release()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"message": raw[:200].decode("utf-8", "replace")}
        if not 200 <= response.status <= 299:
            raise api_error(
                response.status,
                body if isinstance(body, dict) else {},
                f"{verb} {resource}",
                retry_after=response.headers.get("Retry-After"),
            )
        return body if isinstance(body, dict) else {}

    async def _attempt(
        self, budget: _Budget, verb: str, resource: str, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """One request within ``budget``; every failure comes out as an :class:`ApiError`."""
        timeout = budget.timeout()
        what = f"{verb} {resource}"
        try:
            return await self._once(verb, resource, timeout, call, *args, **kwargs)
        except (aiohttp.ClientSSLError, aiohttp.InvalidURL) as error:
            raise NoResponse(what, error, delivered=False, permanent=True) from error
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            # No connection was made (refused, or none free in time): the request was not sent.
            raise NoResponse(what, error, delivered=False) from error
        except (asyncio.TimeoutError, TimeoutError, aiohttp.ClientError) as error:
            raise NoResponse(what, error, delivered=True) from error

    def _note_retry(self, what: str, subject: str, error: ApiError) -> None:
        """Log a retry at INFO, at most once per ``_NOTE_EVERY`` seconds per verb and resource
        (a storm of calls in an outage would otherwise write a line per request)."""
        now = time.monotonic()
        last, hidden = self._notes.get(what, (-math.inf, 0))
        if now - last < _NOTE_EVERY:
            self._notes[what] = (last, hidden + 1)
            self.log.debug("%s %s: %s, retrying", what, subject, error)
            return
        self._notes[what] = (now, 0)
        self.log.info(
            "%s %s: %s, retrying (%d other retries of %s not logged since the last such line)",
            what,
            subject,
            error,
            hidden,
            what,
        )

    async def call(
        self,
        verb: str,
        resource: str,
        call: Callable[..., Any],
        *args: Any,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``call(*args, **kwargs)``, retried on 429, 5xx, time-outs and dropped connections
        until ``deadline`` (a :func:`time.monotonic` instant; default: the policy's budget)."""
        subject = str(kwargs.get("label_selector") or "")
        return await self._retrying(verb, resource, subject, deadline, call, *args, **kwargs)

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
        budget = _Budget(self, f"{verb} {resource}", subject, deadline)
        while True:
            try:
                result = await self._attempt(budget, verb, resource, call, *args, **kwargs)
            except ApiError as error:
                if not _retriable(error) or not await budget.wait(error):
                    raise budget.gave_up(error) from error.__cause__
                continue
            budget.done()
            return result

    # --- the calls the backend makes ----------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        query: dict[str, str] | None,
        timeout: float,
    ) -> aiohttp.ClientResponse:
        """One request on this layer's connections; the caller reads and releases the response."""
        headers = {"Accept": "application/json", "User-Agent": self.client.user_agent}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, separators=(",", ":")).encode()
        # A coroutine from kubernetes-asyncio 33 on (it may refresh the token first), a plain
        # function before: the z2jh 4.2 hub image ships 32.3.
        authorised = self.client.update_params_for_auth(headers, [], ["BearerToken"])
        if inspect.isawaitable(authorised):
            await authorised
        return await self._session.request(
            method,
            self._host + path,
            params=query,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            **self._extra,
        )

    async def close(self) -> None:
        """Close this layer's connections (the generated client's are closed with it)."""
        await self._session.close()

    async def _fast(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        *,
        _request_timeout: float,
        **_: Any,
    ) -> aiohttp.ClientResponse:
        # ``_once`` passes the generated client's keyword arguments; this path uses the timeout.
        return await self._send(method, path, body, query, _request_timeout)

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
        budget = _Budget(self, what, subject, deadline)
        unsure: ApiError | None = None  # a failed attempt that may have created the object anyway
        final = False  # the budget is spent: one last look, then give up
        while True:
            if unsure is not None:
                try:
                    existing = await self._look_up(budget, resource, namespace, name)
                except ApiError as error:
                    if final or not _retriable(error) or not await budget.wait(error):
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
                    budget, "create", resource, self._fast, "POST", self._path(resource, namespace), body
                )
            except ApiError as error:
                if _retriable(error) and _maybe_applied(error):
                    if not name:
                        raise budget.gave_up(MaybeCreated(error, what, namespace, name)) from error
                    unsure = error
                if not _retriable(error):
                    raise budget.gave_up(error) from error.__cause__
                if not await budget.wait(error):
                    if unsure is None:
                        raise budget.gave_up(error) from error.__cause__
                    final = True
                continue
            budget.done()
            return created

    async def _look_up(
        self, budget: _Budget, resource: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """One GET of ``name`` within ``budget``: the object, or None when it does not exist."""
        try:
            return await self._attempt(
                budget, "get", resource, self._fast, "GET", self._path(resource, namespace, name)
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
        return await self._retrying(
            "delete", resource, f"{namespace}/{name}", deadline, self._fast, "DELETE", path, None, query
        )

    async def get(
        self, resource: str, namespace: str | None, name: str, *, deadline: float | None = None
    ) -> dict[str, Any]:
        path = self._path(resource, namespace, name)
        return await self._retrying("get", resource, f"{namespace}/{name}", deadline, self._fast, "GET", path)

    async def replace(
        self, resource: str, namespace: str | None, body: dict[str, Any], *, deadline: float | None = None
    ) -> dict[str, Any]:
        """Write ``body`` over the object of its name (PUT). It carries the ``resourceVersion``
        that was read, so a write over a newer version meets :class:`Conflict`, never a lost
        update."""
        name = str(body["metadata"]["name"])
        path = self._path(resource, namespace, name)
        subject = f"{namespace}/{name}"
        return await self._retrying("update", resource, subject, deadline, self._fast, "PUT", path, body)

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
