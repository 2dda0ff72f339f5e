"""The real kubernetes_asyncio ``CoreV1Api``, typed for what the harness tests send and read.

The tests send manifests as plain JSON dicts, as the backend renders them, and invalid ones too
(bad names, quantities a model class would refuse before the server saw them). The client
serialises a ``dict`` body as it is (``ApiClient.sanitize_for_serialization``), but its type
stubs name only the model classes: :class:`CoreV1`'s create methods say what the client really
takes and change nothing else. A call made with ``_preload_content=False`` answers with the raw
``aiohttp`` response, which the stubs also type as the model: :func:`unloaded` checks it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

Manifest = dict[str, Any]
Model = TypeVar("Model")


def _as_sent(body: Model | Manifest) -> Model:
    """``body`` for a parameter the stubs type as a model class: the client sends a dict as
    JSON unchanged, so a manifest is as good as the model there."""
    return cast(Model, body)


class CoreV1(client.CoreV1Api):
    """``CoreV1Api`` whose create methods also take a manifest (a JSON dict)."""

    def create_namespace(
        self, body: client.V1Namespace | Manifest, **options: Any
    ) -> Awaitable[client.V1Namespace]:
        return super().create_namespace(_as_sent(body), **options)

    def create_namespaced_pod(
        self, namespace: str, body: client.V1Pod | Manifest, **options: Any
    ) -> Awaitable[client.V1Pod]:
        return super().create_namespaced_pod(namespace, _as_sent(body), **options)

    def create_namespaced_secret(
        self, namespace: str, body: client.V1Secret | Manifest, **options: Any
    ) -> Awaitable[client.V1Secret]:
        return super().create_namespaced_secret(namespace, _as_sent(body), **options)

    def create_namespaced_persistent_volume_claim(
        self, namespace: str, body: client.V1PersistentVolumeClaim | Manifest, **options: Any
    ) -> Awaitable[client.V1PersistentVolumeClaim]:
        return super().create_namespaced_persistent_volume_claim(namespace, _as_sent(body), **options)

    def create_persistent_volume(
        self, body: client.V1PersistentVolume | Manifest, **options: Any
    ) -> Awaitable[client.V1PersistentVolume]:
        return super().create_persistent_volume(_as_sent(body), **options)


async def unloaded(call: Awaitable[object]) -> aiohttp.ClientResponse:
    """The response of a call made with ``_preload_content=False`` (the body left unread)."""
    response = await call
    assert isinstance(response, aiohttp.ClientResponse), type(response)
    return response


def status_of(error: ApiException) -> dict[str, Any]:
    """The Status object the server answered a refused request with."""
    assert error.body is not None, f"HTTP {error.status} without a body"
    body: dict[str, Any] = json.loads(error.body)
    return body
