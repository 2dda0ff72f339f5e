"""The shared list+watch (``_informer.Informer``) with a scripted API: 410 Gone means list again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from einfra_spawner_kubernetes._api import KubeApi
from einfra_spawner_kubernetes._api_errors import ApiError, Gone, api_error
from einfra_spawner_kubernetes._informer import Informer

EXPIRED = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version: 1 (9)"}


class ScriptedApi:
    """``list`` and ``watch`` as an Informer calls them; the first watch ends with 410 Gone,
    in the stream (an ERROR event) or as the watch request's answer."""

    def __init__(self, gone_in_stream: bool) -> None:
        self.gone_in_stream = gone_in_stream
        self.lists = 0
        self.watched_from: list[str] = []
        self.relisted = asyncio.Event()

    async def list(self, resource: str, namespace: str | None, **selectors: str) -> dict[str, Any]:
        self.lists += 1
        if self.lists == 2:
            self.relisted.set()
        pod = {"metadata": {"name": "p", "namespace": "default", "resourceVersion": str(self.lists)}}
        return {"items": [pod], "metadata": {"resourceVersion": str(self.lists * 10)}}

    async def watch(
        self, resource: str, namespace: str | None, resource_version: str, timeout: int, **selectors: str
    ) -> AsyncIterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        if len(self.watched_from) == 1:
            if not self.gone_in_stream:
                raise api_error(410, EXPIRED, f"watch {resource}")
            yield {"type": "ERROR", "object": EXPIRED}
        await asyncio.Event().wait()  # a quiet watch, until the informer is closed


def test_an_error_event_raises_its_typed_error() -> None:
    informer = Informer(cast(KubeApi, None), "pods", "default", logging.getLogger("test"))
    with pytest.raises(Gone):
        informer._apply({"type": "ERROR", "object": EXPIRED})
    with pytest.raises(ApiError) as failed:
        informer._apply({"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}})
    assert failed.value.status == 500 and not isinstance(failed.value, Gone)


@pytest.mark.parametrize("gone_in_stream", [True, False], ids=["error-event", "http-410"])
async def test_gone_makes_the_informer_list_again_and_watch_from_there(gone_in_stream: bool) -> None:
    api = ScriptedApi(gone_in_stream)
    informer = Informer(cast(KubeApi, api), "pods", "default", logging.getLogger("test"))
    informer.start()
    try:
        await asyncio.wait_for(api.relisted.wait(), 10)
        for _ in range(5):
            await asyncio.sleep(0)
        assert api.lists == 2
        assert api.watched_from == ["10", "20"]  # resumed from the new list's resourceVersion
        assert informer.cache["default/p"]["metadata"]["resourceVersion"] == "2"
    finally:
        await informer.close()
