"""The raw-JSON API layer under failure: retries bounded by a deadline, creates whose answer was
lost, and typed errors, through the real kubernetes-asyncio client and the fake API server.

Outages come from the harness's fault injection (every request answered 503 until a timer
ends it). Lost answers and a restarting server come from a relay on loopback between the
client and the fake: it forwards each request, and can drop the connection (or never answer)
after the server has acted, or stop listening and come back on the same port. The tests assert
what the server saw (requests by verb, objects stored), never how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes_asyncio import client

from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes._api import KubeApi
from einfra_spawner_kubernetes._api_errors import (
    ApiError,
    Conflict,
    Gone,
    MaybeCreated,
    NoResponse,
    NotFound,
    TooManyRequests,
    api_error,
)
from einfra_spawner_kubernetes._retry import RetryPolicy

from .conftest import existing

LOG = "test.api-retries"
PODS = "/api/v1/namespaces/default/pods"
#: Short waits, so that a test retries many times in a second or two.
QUICK = RetryPolicy(timeout=1.0, backoff=0.05, max_backoff=0.25)


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"spec-hash": "abc123", **labels}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }


@asynccontextmanager
async def kube_api(url: str, policy: RetryPolicy) -> AsyncIterator[KubeApi]:
    api_client = client.ApiClient(client.Configuration(host=url))
    api = KubeApi(api_client, policy, logging.getLogger(LOG))
    try:
        yield api
    finally:
        await api.close()
        await api_client.close()


class Relay:
    """An HTTP relay on loopback in front of the fake API server.

    ``lose`` holds ``"METHOD path"`` entries: the next request matching one is forwarded and
    carried out by the server, then its answer is lost (each entry once), by dropping the
    connection or, with ``stall``, by never answering (the client times out). ``on_loss`` runs
    when an answer is lost. :meth:`go_down` stops listening (connections are refused, as while
    an API server restarts); :meth:`come_up` listens again on the same port.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lose: list[str] = []
        self.stall = False
        self.on_loss: Callable[[], None] | None = None
        self.lost = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def come_up(self) -> None:
        if self._runner is None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._relay)
            # handler_cancellation: a handler left waiting ends when its client goes away.
            self._runner = web.AppRunner(
                app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
            )
            await self._runner.setup()
            self._session = aiohttp.ClientSession()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        # The bound port, from the runner's one listening site (TCPSite.port is aiohttp >= 3.14).
        self.port = self._runner.addresses[0][1]

    async def go_down(self) -> None:
        assert self._site is not None
        await self._site.stop()
        self._site = None

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {
            key: value
            for key, value in request.headers.items()
            if key.lower() in ("accept", "authorization", "content-type", "user-agent")
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=await request.read(), headers=headers
        ) as answer:
            status, payload = answer.status, await answer.read()
            content_type = answer.headers.get("Content-Type", "application/json")
        wanted = f"{request.method} {request.path}"
        if wanted in self.lose:
            self.lose.remove(wanted)
            self.lost += 1
            if self.on_loss is not None:
                self.on_loss()
            if not self.stall and request.transport is not None:
                request.transport.abort()
            await asyncio.Event().wait()  # cancelled once the client has gone
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})


@pytest_asyncio.fixture
async def relay(cluster: FakeKubernetes) -> AsyncIterator[Relay]:
    relay = Relay(cluster.url)
    await relay.come_up()
    yield relay
    await relay.close()


def outage(cluster: FakeKubernetes, seconds: float) -> asyncio.Event:
    """Answer every request with 503 for ``seconds``; the event is set when the outage ends."""
    ended = asyncio.Event()

    def end() -> None:
        cluster.faults.error_rate = 0.0
        ended.set()

    cluster.faults.error_rate = 1.0
    asyncio.get_running_loop().call_later(seconds, end)
    return ended


# --- outages -----------------------------------------------------------------------------------------


async def test_an_outage_longer_than_the_old_retries_is_outlasted_within_the_deadline(
    cluster: FakeKubernetes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    ended = outage(cluster, 3.0)  # the old policy gave up after about 1.5 s
    async with kube_api(cluster.url, QUICK) as api:
        created = await api.create("pods", "default", pod("outlasts"), deadline=time.monotonic() + 10)
        sent = api.counts[("create", "pods")]
    assert ended.is_set()  # only the end of the outage let the create through
    assert created["metadata"]["uid"] == existing(cluster, "pods", "default", "outlasts")["metadata"]["uid"]
    # Every attempt reached the server; all but the last were refused by the outage.
    assert cluster.request_count("create", "pods") == sent
    assert cluster.faults.injected_count == sent - 1 >= 1
    assert cluster.request_count("get", "pods") == 0  # a 503 is an answer: nothing to look up
    # One line sums the call up; the retries themselves are noted far less often than they happen.
    lines = [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno >= logging.INFO]
    summary = re.compile(rf"create pods default/outlasts: succeeded after {sent} attempts in [0-9.]+ s")
    assert len([line for line in lines if summary.fullmatch(line)]) == 1
    assert len(lines) - 1 < sent - 1


@pytest.mark.parametrize("bound", ["deadline", "budget"])
async def test_an_outage_longer_than_the_deadline_ends_with_the_last_error(
    cluster: FakeKubernetes, bound: str
) -> None:
    cluster.faults.error_rate = 1.0  # never ends
    policy = RetryPolicy(timeout=1.0, backoff=0.05, max_backoff=0.25, budget=0.8)
    async with kube_api(cluster.url, policy) as api:
        with pytest.raises(ApiError) as caught:
            if bound == "deadline":
                await api.create("pods", "default", pod("never"), deadline=time.monotonic() + 0.8)
            else:
                await api.create("pods", "default", pod("never"))
        sent = api.counts[("create", "pods")]
    assert caught.value.status == 503 and caught.value.reason == "ServiceUnavailable"
    assert not isinstance(caught.value, MaybeCreated)  # a 503 says the create was not carried out
    assert sent > 1  # it was retried...
    assert cluster.request_count("create", "pods") == cluster.faults.injected_count == sent  # ...in vain
    assert cluster.get("pods", "default", "never") is None


async def test_a_cap_on_attempts_still_bounds_a_call(cluster: FakeKubernetes) -> None:
    cluster.faults.error_rate = 1.0
    async with kube_api(cluster.url, RetryPolicy(attempts=2, backoff=0.01)) as api:
        with pytest.raises(ApiError) as caught:
            await api.get("pods", "default", "anyone")
    assert caught.value.status == 503
    assert cluster.request_count("get", "pods") == 2


async def test_a_deadline_already_passed_sends_nothing(cluster: FakeKubernetes) -> None:
    async with kube_api(cluster.url, QUICK) as api:
        with pytest.raises(NoResponse):
            await api.create("pods", "default", pod("late"), deadline=time.monotonic() - 1)
    assert cluster.request_count() == 0


async def test_an_api_server_restart_is_outlasted_and_refused_connections_are_not_looked_up(
    cluster: FakeKubernetes, relay: Relay
) -> None:
    await relay.go_down()  # connections are refused, as while the API server restarts
    restarted = asyncio.Event()
    async with kube_api(relay.url, QUICK) as api:

        async def restart() -> None:
            # Back once the client has been refused twice (whenever that is, under any load); the
            # client's request counter is the only sign of an attempt, there is no event to await.
            while api.counts.get(("create", "pods"), 0) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await relay.come_up()
            restarted.set()

        task = asyncio.create_task(restart())
        try:
            created = await api.create("pods", "default", pod("restart"), deadline=time.monotonic() + 30)
            tried = api.counts[("create", "pods")]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert restarted.is_set() and created["metadata"]["name"] == "restart"
    assert tried > 2
    # A refused connection never reached the server: one create arrived, and nothing was looked up.
    assert cluster.request_count("create", "pods") == 1
    assert cluster.request_count("get", "pods") == 0


# --- creates whose answer was lost -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["dropped", "timed out"])
async def test_a_create_whose_answer_is_lost_returns_the_object_it_made(
    cluster: FakeKubernetes, relay: Relay, how: str
) -> None:
    relay.lose.append(f"POST {PODS}")
    relay.stall = how == "timed out"
    policy = RetryPolicy(timeout=0.5, backoff=0.05, max_backoff=0.25)
    async with kube_api(relay.url, policy) as api:
        created = await api.create("pods", "default", pod("once"), deadline=time.monotonic() + 10)
    assert relay.lost == 1
    assert created["metadata"]["uid"] == existing(cluster, "pods", "default", "once")["metadata"]["uid"]
    # Looked up once, found, and never sent again.
    assert cluster.request_count("create", "pods") == 1
    assert cluster.request_count("get", "pods") == 1


async def test_a_lost_create_in_an_outage_raises_maybe_created_when_the_deadline_passes(
    cluster: FakeKubernetes, relay: Relay
) -> None:
    relay.lose.append(f"POST {PODS}")
    relay.on_loss = lambda: setattr(cluster.faults, "error_rate", 1.0)  # the server goes down as it answers
    async with kube_api(relay.url, QUICK) as api:
        with pytest.raises(MaybeCreated) as caught:
            await api.create("pods", "default", pod("maybe"), deadline=time.monotonic() + 1.0)
    assert caught.value.namespace == "default" and caught.value.name == "maybe"
    assert isinstance(caught.value, ApiError) and caught.value.status == 503  # the last look-up's
    assert cluster.get("pods", "default", "maybe") is not None  # it does exist: the caller removes it
    # Never sent twice: every attempt after the lost create was a look-up, each refused.
    assert cluster.request_count("create", "pods") == 1
    assert cluster.request_count("get", "pods") == cluster.faults.injected_count >= 1


async def test_a_lost_create_that_meets_another_object_of_its_name_ends_in_conflict(
    cluster: FakeKubernetes, relay: Relay
) -> None:
    cluster.api.create("pods", "default", pod("taken", owner="someone-else"), trusted=True)
    relay.lose.append(f"POST {PODS}")  # the server answers 409, and that answer is lost
    async with kube_api(relay.url, QUICK) as api:
        with pytest.raises(Conflict) as caught:
            await api.create("pods", "default", pod("taken"), deadline=time.monotonic() + 10)
    assert caught.value.status == 409 and caught.value.reason == "AlreadyExists"
    # Looked up, found with other labels (not ours), sent again, refused.
    assert cluster.request_count("get", "pods") == 1
    assert cluster.request_count("create", "pods") == 2
    assert existing(cluster, "pods", "default", "taken")["metadata"]["labels"]["owner"] == "someone-else"


# --- typed errors ------------------------------------------------------------------------------------


async def test_statuses_a_caller_acts_on_are_typed(cluster: FakeKubernetes) -> None:
    async with kube_api(cluster.url, QUICK) as api:
        with pytest.raises(NotFound) as missing:
            await api.get("pods", "default", "nobody")
        await api.create("pods", "default", pod("twice"))
        with pytest.raises(Conflict) as taken:
            await api.create("pods", "default", pod("twice"))
        cluster.inject_fault(429, verb="delete", resource="pods")
    async with kube_api(cluster.url, RetryPolicy(attempts=1)) as api:
        with pytest.raises(TooManyRequests) as throttled:
            await api.delete("pods", "default", "twice")
        invalid = pod("invalid")
        invalid["spec"]["containers"][0]["name"] = "Not A Name"
        with pytest.raises(ApiError) as refused:
            await api.create("pods", "default", invalid)
    assert missing.value.status == 404 and missing.value.reason == "NotFound"
    assert taken.value.status == 409 and taken.value.reason == "AlreadyExists"
    assert throttled.value.status == 429 and throttled.value.retry_after == "1"
    assert refused.value.status == 422 and type(refused.value) is ApiError
    assert cluster.request_count("create", "pods") == 3  # 422 and 409 are answers: not retried
    gone = api_error(410, {"reason": "Expired", "message": "too old resource version"}, "watch pods")
    assert isinstance(gone, Gone) and isinstance(gone, ApiError) and gone.status == 410


def test_waits_grow_with_jitter_and_honour_a_bounded_retry_after() -> None:
    policy = RetryPolicy(backoff=0.1, max_backoff=2.0, max_retry_after=5.0)
    first = [policy.delay(0) for _ in range(200)]
    assert all(0.05 <= d <= 0.1 for d in first) and len(set(first)) > 100  # spread: no lock-step
    assert all(1.0 <= policy.delay(30) <= 2.0 for _ in range(50))  # capped
    assert all(2.0 <= policy.delay(0, "2") <= 2.4 for _ in range(50))
    assert all(5.0 <= policy.delay(0, "3600") <= 6.0 for _ in range(50))  # bounded
    assert 0.05 <= policy.delay(0, "soon") <= 0.1  # not a number of seconds: ignored
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
