"""The harness's own debug routes under ``/_harness/``: counters and fault control.

They let a benchmark or an end-to-end test in another process read the request counters and
steer faults of a fake API server started with ``python -m einfra_spawner.testing serve``.
They are not part of the Kubernetes API and are not counted as API requests.

* ``GET /_harness/stats``: request counts by (verb, resource), object counts, open watches
* ``POST /_harness/stats/reset``
* ``POST /_harness/faults``: ``{"latency_ms", "error_rate", "throttle_rate", "error_status",
  "seed"}`` (any subset)
* ``POST /_harness/faults/inject``: ``{"status", "verb", "resource", "count", "retry_after"}``
* ``POST /_harness/faults/clear``
* ``POST /_harness/watches/drop``: ``{"resource"}`` (optional)
* ``POST /_harness/compact``
* ``POST /_harness/images``: ``{"pull_failures": [...], "crashing": [...]}`` (added)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._server import json_response

if TYPE_CHECKING:  # pragma: no cover
    from ._harness import FakeKubernetes

JsonDict = dict[str, Any]


async def _json_body(request: web.Request) -> JsonDict:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise web.HTTPBadRequest(text=f"invalid JSON: {error}") from error
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


def _faults_json(harness: FakeKubernetes) -> JsonDict:
    faults = harness.faults
    return {
        "latency_ms": faults.latency * 1000,
        "error_rate": faults.error_rate,
        "throttle_rate": faults.throttle_rate,
        "error_status": faults.error_status,
        "pending": [
            {"status": f.status, "verb": f.verb, "resource": f.resource, "count": f.count}
            for f in faults.pending
        ],
        "injected": faults.injected_count,
    }


def control_routes(harness: FakeKubernetes) -> list[web.AbstractRouteDef]:
    async def stats(request: web.Request) -> web.StreamResponse:
        return json_response(harness.stats_json())

    async def reset_stats(request: web.Request) -> web.StreamResponse:
        harness.stats.reset()
        return json_response(harness.stats_json())

    async def get_faults(request: web.Request) -> web.StreamResponse:
        return json_response(_faults_json(harness))

    async def set_faults(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        faults = harness.faults
        try:
            if "latency_ms" in body:
                faults.latency = float(body["latency_ms"]) / 1000
            if "error_rate" in body:
                faults.error_rate = float(body["error_rate"])
            if "throttle_rate" in body:
                faults.throttle_rate = float(body["throttle_rate"])
            if "error_status" in body:
                faults.error_status = int(body["error_status"])
            if "seed" in body:
                faults.reseed(None if body["seed"] is None else int(body["seed"]))
        except (TypeError, ValueError) as error:
            raise web.HTTPBadRequest(text=str(error)) from error
        return json_response(_faults_json(harness))

    async def inject(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        try:
            harness.faults.inject(
                int(body["status"]),
                verb=body.get("verb"),
                resource=body.get("resource"),
                count=int(body.get("count", 1)),
                retry_after=int(body.get("retry_after", 1)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise web.HTTPBadRequest(text=f"bad fault: {error}") from error
        return json_response(_faults_json(harness))

    async def clear(request: web.Request) -> web.StreamResponse:
        harness.faults.clear()
        return json_response(_faults_json(harness))

    async def drop(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        return json_response({"dropped": harness.drop_watches(body.get("resource"))})

    async def compact(request: web.Request) -> web.StreamResponse:
        harness.compact()
        return json_response({"resourceVersion": str(harness.store.resource_version)})

    async def images(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        for image in body.get("pull_failures") or ():
            harness.image_pull_failures.add(str(image))
        for image in body.get("crashing") or ():
            harness.crashing_images.add(str(image))
        return json_response({"ok": True})

    return [
        web.get("/_harness/stats", stats),
        web.post("/_harness/stats/reset", reset_stats),
        web.get("/_harness/faults", get_faults),
        web.post("/_harness/faults", set_faults),
        web.post("/_harness/faults/inject", inject),
        web.post("/_harness/faults/clear", clear),
        web.post("/_harness/watches/drop", drop),
        web.post("/_harness/compact", compact),
        web.post("/_harness/images", images),
    ]
