"""The HTTP face of the fake API server: core/v1 paths, watches, Status errors, counters.

Routes follow the real API server's layout (``/api/v1/namespaces/{ns}/{resource}[/{name}]``,
``/api/v1/{resource}`` for all namespaces or cluster-scoped kinds, plus ``/version``, ``/api``,
``/api/v1`` and ``/apis`` for discovery). Requests are parsed into raw dicts, handed to
:class:`~._resources.ResourceApi` and answered with one ``json.dumps``; no model objects on
the path, because a benchmark drives thousands of requests through it.

A watch streams newline-delimited ``{"type", "object"}`` JSON over a chunked response until
``timeoutSeconds`` (a clean end, as on a real server), sends BOOKMARK events when the client
allows them, and answers a too-old ``resourceVersion`` with an ERROR event carrying a 410
``Status`` (which kubernetes_asyncio turns into ``ApiException(410)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ._faults import Faults
from ._kinds import RESOURCES, VERBS
from ._resources import ResourceApi, resource_info
from ._selectors import parse_field_selector, parse_label_selector
from ._status import ApiError, bad_request, method_not_allowed, not_found, resource_not_found
from ._store import Store, event_line

JsonDict = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PodLogReader = Callable[[str, str, str], str]
_TRUE = ("true", "True", "1")
KUBERNETES_VERSION = ("1", "33")


class RequestStats:
    """API requests counted by (verb, resource); verbs: create, get, list, watch, delete,
    patch, update. Also how each watch ended."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        #: Each ended watch: its resource, the seconds it was granted, and why it ended:
        #: "timeout", "closed" (by the harness or the store) or "client gone".
        self.watch_ends: list[tuple[str, float, str]] = []

    def count(self, verb: str | None = None, resource: str | None = None) -> int:
        """Requests matching ``verb`` and ``resource`` (None: any)."""
        return sum(
            number
            for (v, r), number in self.counts.items()
            if (verb is None or v == verb) and (resource is None or r == resource)
        )

    def reset(self) -> None:
        self.counts.clear()
        self.watch_ends.clear()

    def as_json(self) -> list[JsonDict]:
        return [
            {"verb": verb, "resource": resource, "count": number}
            for (verb, resource), number in sorted(self.counts.items())
        ]


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _error_response(error: ApiError) -> web.Response:
    return json_response(error.status(), error.code, error.headers or None)


def _guard(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return _error_response(error)

    return guarded


def _int_query(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as error:
        raise bad_request(f"invalid value for {name}: {value!r}") from error


class ApiHandlers:
    """Request handlers bound to one store; see :func:`routes`."""

    def __init__(
        self,
        *,
        store: Store,
        api: ResourceApi,
        faults: Faults,
        stats: RequestStats,
        bookmark_interval: float,
        watch_timeout: float,
        pod_log: PodLogReader,
    ) -> None:
        self.store = store
        self.api = api
        self.faults = faults
        self.stats = stats
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.pod_log = pod_log

    async def _admit(self, verb: str, resource: str) -> None:
        """Count the request, apply latency, and raise an injected fault if one is due."""
        self.stats.counts[(verb, resource)] += 1
        if self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        fault = self.faults.decide(verb, resource)
        if fault is not None:
            raise fault

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as error:
            raise bad_request(f"the body of the request could not be decoded: {error}") from error

    # --- collections ---------------------------------------------------------------------

    async def namespaced_collection(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info["resource"]
        info = resource_info(resource)
        if not info.namespaced:
            raise resource_not_found()
        return await self._collection(request, resource, request.match_info["namespace"])

    async def cluster_collection(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info["resource"]
        info = resource_info(resource)
        if info.namespaced and request.method != "GET":
            raise method_not_allowed(f"{request.method} is not supported on all namespaces")
        return await self._collection(request, resource, None if info.namespaced else "")

    async def _collection(
        self, request: web.Request, resource: str, namespace: str | None
    ) -> web.StreamResponse:
        if request.method == "POST":
            await self._admit("create", resource)
            body = await self._body(request)
            return json_response(self.api.create(resource, namespace or "", body), 201)
        if request.method != "GET":
            raise method_not_allowed(f"{request.method} is not supported on a collection")
        query = request.query
        watching = query.get("watch") in _TRUE
        await self._admit("watch" if watching else "list", resource)
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(resource, query.get("fieldSelector"))
        if watching:
            return await self._watch(request, resource, namespace, labels, fields)
        result = self.api.list(
            resource,
            namespace,
            labels,
            fields,
            limit=_int_query(request, "limit") or None,
            continue_token=query.get("continue"),
        )
        return json_response(result)

    # --- single objects ------------------------------------------------------------------

    async def namespaced_item(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info["resource"]
        if not resource_info(resource).namespaced:
            raise resource_not_found()
        return await self._item(request, resource, request.match_info["namespace"])

    async def cluster_item(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info["resource"]
        if resource_info(resource).namespaced:
            raise resource_not_found()
        return await self._item(request, resource, "")

    async def _item(self, request: web.Request, resource: str, namespace: str) -> web.StreamResponse:
        name = request.match_info["name"]
        method = request.method
        if method == "GET":
            await self._admit("get", resource)
            return json_response(self.api.get(resource, namespace, name))
        if method == "DELETE":
            await self._admit("delete", resource)
            body = await self._body(request) or {}
            if not isinstance(body, dict):
                raise bad_request("DeleteOptions must be an object")
            grace = _int_query(request, "gracePeriodSeconds")
            if grace is None and body.get("gracePeriodSeconds") is not None:
                grace = int(body["gracePeriodSeconds"])
            result = self.api.delete(
                resource, namespace, name, grace_period=grace, preconditions=body.get("preconditions")
            )
            return json_response(result)
        if method == "PATCH":
            await self._admit("patch", resource)
            raw = await request.read()
            result = self.api.patch(resource, namespace, name, raw, request.headers.get("Content-Type", ""))
            return json_response(result)
        if method == "PUT":
            await self._admit("update", resource)
            return json_response(self.api.replace(resource, namespace, name, await self._body(request)))
        raise method_not_allowed(f"{method} is not supported on {resource}")

    async def pod_log_handler(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        await self._admit("get", "pods/log")
        pod = self.store.get("pods", namespace, name)
        if pod is None:
            raise not_found("pods", name)
        text = self.pod_log(namespace, name, pod["metadata"]["uid"])
        return web.Response(text=text, content_type="text/plain")

    # --- watch ---------------------------------------------------------------------------

    async def _watch(
        self, request: web.Request, resource: str, namespace: str | None, labels: Any, fields: Any
    ) -> web.StreamResponse:
        timeout = _int_query(request, "timeoutSeconds")
        seconds = float(timeout) if timeout and timeout > 0 else self.watch_timeout
        bookmarks = request.query.get("allowWatchBookmarks") in _TRUE
        version = request.query.get("resourceVersion")
        since: int | None = None
        if version not in (None, "", "0"):
            try:
                since = int(str(version))
            except ValueError as error:
                raise bad_request(f"invalid resourceVersion {version!r}") from error
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        try:
            watcher = self.store.watch(resource, namespace, labels, fields, since)
        except ApiError as error:
            if error.code != 410:
                raise
            # Like the real server: a 200 response whose only event is an ERROR with a Status.
            await response.prepare(request)
            await response.write(event_line("ERROR", error.status()))
            await response.write_eof()
            return response
        kind = RESOURCES[resource].kind
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        next_bookmark = loop.time() + self.bookmark_interval
        why = "client gone"
        try:
            await response.prepare(request)
            while True:
                current = loop.time()
                if current >= deadline:
                    why = "timeout"
                    break
                wake = min(deadline, next_bookmark if bookmarks else deadline, current + 5.0)
                try:
                    line = await asyncio.wait_for(watcher.queue.get(), max(wake - current, 0.001))
                except asyncio.TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break  # the client went away
                    if bookmarks and loop.time() >= next_bookmark and watcher.queue.empty():
                        # Everything up to the current version has been sent: say so.
                        bookmark = {
                            "kind": kind,
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(self.store.resource_version)},
                        }
                        await response.write(event_line("BOOKMARK", bookmark))
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if line is None:
                    why = "closed"
                    break
                chunks = [line]
                ended = False
                while not watcher.queue.empty():
                    item = watcher.queue.get_nowait()
                    if item is None:
                        ended = True
                        break
                    chunks.append(item)
                await response.write(b"".join(chunks))
                if ended:
                    why = "closed"
                    break
        except (ConnectionResetError, ConnectionError):
            return response
        finally:
            self.store.unwatch(watcher)
            self.stats.watch_ends.append((resource, seconds, why))
        with contextlib.suppress(ConnectionResetError, ConnectionError):
            await response.write_eof()
        return response

    # --- discovery -----------------------------------------------------------------------

    @staticmethod
    async def version(request: web.Request) -> web.StreamResponse:
        major, minor = KUBERNETES_VERSION
        return json_response(
            {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{major}.{minor}.0-einfra-fake",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.24",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    @staticmethod
    async def api_versions(request: web.Request) -> web.StreamResponse:
        host = request.host
        return json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }
        )

    @staticmethod
    async def api_groups(request: web.Request) -> web.StreamResponse:
        return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    @staticmethod
    async def resource_list(request: web.Request) -> web.StreamResponse:
        resources = [
            {
                "name": info.name,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": list(VERBS),
                "shortNames": list(info.short_names),
            }
            for info in RESOURCES.values()
        ]
        resources.append(
            {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
        )
        return json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})

    @staticmethod
    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    @staticmethod
    async def unknown(request: web.Request) -> web.StreamResponse:
        return _error_response(resource_not_found())

    def routes(self) -> list[web.AbstractRouteDef]:
        namespaced = "/api/v1/namespaces/{namespace}/{resource}"
        # The generated clients ask for "/version/", "/api/", "/api/v1/" with a slash.
        return [
            web.get("/version", self.version),
            web.get("/version/", self.version),
            web.get("/api", self.api_versions),
            web.get("/api/", self.api_versions),
            web.get("/api/v1", self.resource_list),
            web.get("/api/v1/", self.resource_list),
            web.get("/apis", self.api_groups),
            web.get("/apis/", self.api_groups),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.healthz),
            web.get("/livez", self.healthz),
            web.get("/api/v1/namespaces/{namespace}/pods/{name}/log", _guard(self.pod_log_handler)),
            web.route("*", namespaced, _guard(self.namespaced_collection)),
            web.route("*", namespaced + "/{name}", _guard(self.namespaced_item)),
            web.route("*", "/api/v1/{resource}", _guard(self.cluster_collection)),
            web.route("*", "/api/v1/{resource}/{name}", _guard(self.cluster_item)),
        ]
