"""A thin layer over kubernetes-asyncio: raw JSON, a timeout on every call, retries on 429/5xx.

Every call goes through the real client's ``CoreV1Api`` with ``_preload_content=False``, so
responses stay plain dicts (no conversion into model objects on the hot path) and the status is
checked here. Retries back off exponentially with jitter and honour ``Retry-After``; a create
that timed out may have succeeded, which the caller sees as a 409 on the retry and handles.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client

__all__ = ["ApiError", "KubeApi", "RetryPolicy"]

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


class KubeApi:
    """Raw-JSON core/v1 calls with timeouts and retries. One per hub process."""

    def __init__(self, api_client: client.ApiClient, policy: RetryPolicy, log: logging.Logger) -> None:
        self.core = client.CoreV1Api(api_client)
        self.policy = policy
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

    async def create(self, resource: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        methods: dict[str, Callable[..., Any]] = {
            "pods": self.core.create_namespaced_pod,
            "persistentvolumeclaims": self.core.create_namespaced_persistent_volume_claim,
        }
        return await self.call("create", resource, methods[resource], namespace, body)

    async def create_namespace(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("create", "namespaces", self.core.create_namespace, body)

    async def delete(
        self, resource: str, namespace: str, name: str, grace: int | None = None
    ) -> dict[str, Any]:
        methods: dict[str, Callable[..., Any]] = {
            "pods": self.core.delete_namespaced_pod,
            "persistentvolumeclaims": self.core.delete_namespaced_persistent_volume_claim,
        }
        method = methods[resource]
        kwargs: dict[str, Any] = {}
        if grace is not None:
            kwargs["grace_period_seconds"] = grace
        return await self.call("delete", resource, method, name, namespace, **kwargs)

    async def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        methods: dict[str, Callable[..., Any]] = {
            "pods": self.core.read_namespaced_pod,
            "persistentvolumeclaims": self.core.read_namespaced_persistent_volume_claim,
        }
        return await self.call("get", resource, methods[resource], name, namespace)

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
