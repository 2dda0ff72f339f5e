"""A thin layer over kubernetes-asyncio: raw JSON, a timeout on every call, retries on 429/5xx.

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

Retries back off exponentially with jitter and honour ``Retry-After``; a create that timed
out may have succeeded, which the caller sees as a 409 on the retry and handles.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from kubernetes_asyncio import client

__all__ = ["ApiError", "KubeApi", "RetryPolicy", "tls_context"]

_RETRIABLE = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A Kubernetes API error with its status code and Status body (``{}`` when there was none)."""

    def __init__(self, status: int, body: dict[str, Any], what: str) -> None:
        self.status = status
        self.body = body
        self.reason = str(body.get("reason", ""))
        message = body.get("message") or f"HTTP {status}"
        super().__init__(f"{what}: {status} {message}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How API calls are bounded: seconds per call, attempts, and the backoff between them."""

    timeout: float = 10.0
    attempts: int = 6
    backoff: float = 0.05
    max_backoff: float = 2.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return float(min(float(retry_after), self.max_backoff * 4))
        base = min(self.max_backoff, self.backoff * 2.0**attempt)
        return base / 2 + random.random() * base / 2  # noqa: S311 - jitter, not security


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
    """Raw-JSON core/v1 calls with timeouts and retries. One per hub process."""

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
        self._timeout = aiohttp.ClientTimeout(total=policy.timeout)
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

    async def _once(
        self, verb: str, resource: str, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        self.counts[(verb, resource)] = self.counts.get((verb, resource), 0) + 1
        response = await call(*args, _preload_content=False, _request_timeout=self.policy.timeout, **kwargs)
        try:
            raw = await response.read()
        finally:
            response.release()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"message": raw[:200].decode("utf-8", "replace")}
        if not 200 <= response.status <= 299:
            error = ApiError(response.status, body if isinstance(body, dict) else {}, f"{verb} {resource}")
            error.retry_after = response.headers.get("Retry-After")  # type: ignore[attr-defined]
            raise error
        return body if isinstance(body, dict) else {}

    async def call(
        self, verb: str, resource: str, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """One API call, retried on 429, 5xx, time-outs and dropped connections."""
        attempt = 0
        while True:
            try:
                return await self._once(verb, resource, call, *args, **kwargs)
            except ApiError as error:
                if error.status not in _RETRIABLE or attempt + 1 >= self.policy.attempts:
                    raise
                retry_after = getattr(error, "retry_after", None)
                self.log.info("%s %s: %s, retrying", verb, resource, error.status)
            except (asyncio.TimeoutError, TimeoutError, aiohttp.ClientError) as error:
                if attempt + 1 >= self.policy.attempts:
                    raise ApiError(
                        0, {"message": f"the API did not answer ({error!r})"}, f"{verb} {resource}"
                    ) from error
                retry_after = None
                self.log.info("%s %s: %r, retrying", verb, resource, error)
            await asyncio.sleep(self.policy.delay(attempt, retry_after))
            attempt += 1

    # --- the calls the backend makes ----------------------------------------------------------

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """One request on this layer's connections; the caller reads and releases the response."""
        headers = {"Accept": "application/json", "User-Agent": self.client.user_agent}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, separators=(",", ":")).encode()
        await self.client.update_params_for_auth(headers, [], ["BearerToken"])
        return await self._session.request(
            method,
            self._host + path,
            params=query,
            data=data,
            headers=headers,
            timeout=self._timeout,
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
        **_: Any,
    ) -> aiohttp.ClientResponse:
        # ``call`` passes the generated client's keyword arguments; this path has its own.
        return await self._send(method, path, body, query)

    @staticmethod
    def _path(resource: str, namespace: str | None, name: str | None = None) -> str:
        path = "/api/v1" if namespace is None else f"/api/v1/namespaces/{quote(namespace, safe='')}"
        path += f"/{resource}"
        return path if name is None else f"{path}/{quote(name, safe='')}"

    async def create(self, resource: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("create", resource, self._fast, "POST", self._path(resource, namespace), body)

    async def create_namespace(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call(
            "create", "namespaces", self._fast, "POST", self._path("namespaces", None), body
        )

    async def delete(
        self, resource: str, namespace: str, name: str, grace: int | None = None
    ) -> dict[str, Any]:
        query = {"gracePeriodSeconds": str(grace)} if grace is not None else None
        path = self._path(resource, namespace, name)
        return await self.call("delete", resource, self._fast, "DELETE", path, None, query)

    async def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        return await self.call("get", resource, self._fast, "GET", self._path(resource, namespace, name))

    def _lister(self, resource: str, namespace: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if resource == "nodes":
            return self.core.list_node, ()
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

    async def list(self, resource: str, namespace: str | None, **selectors: str) -> dict[str, Any]:
        method, args = self._lister(resource, namespace)
        return await self.call("list", resource, method, *args, **selectors)

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
                raise ApiError(response.status, body if isinstance(body, dict) else {}, f"watch {resource}")
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
