"""Removing pods: delete, then wait until the shared pod watch says the pod is gone.

A stop, the reconciler's removal of an orphan, a start that must clear a stale copy of its pod
and a start that failed all end here. Waiting is done on the watch's DELETED event, never by
reading the API again. The pod of a cancelled start is removed in the background, so that the
cancellation is not held up by an API that does not answer; :meth:`PodRemoval.close` cancels
what is left of those (the reconciler removes such pods later: no hub knows them).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ._api import KubeApi
from ._api_errors import ApiError, NotFound
from ._cluster import Cluster
from ._informer import Informer
from ._pace import Gate

if TYPE_CHECKING:
    from .backend import KubernetesBackend

__all__ = ["PodRemoval", "wait_gone"]


async def wait_gone(pods: Informer, key: str) -> None:
    """Return once the pod ``key`` is not in the watch cache (woken by its DELETED event)."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def on_pod(kind: str, _: dict[str, Any]) -> None:
        if kind == "DELETED" and not gone.done():
            gone.set_result(None)

    unsubscribe = pods.subscribe(key, on_pod)
    try:
        if key in pods.cache:
            await gone
    finally:
        unsubscribe()


class PodRemoval:
    """Deletes the backend's pods and waits for them to go."""

    def __init__(self, settings: KubernetesBackend, cluster: Cluster, gate: Gate) -> None:
        self._settings = settings
        self._cluster = cluster
        self._gate = gate
        #: Removals of cancelled starts' pods, still running.
        self._cleanups: set[asyncio.Future[None]] = set()

    async def delete(self, pods: Informer, namespace: str, name: str) -> None:
        """Delete a pod (with ``delete_grace_seconds``; fine if it is gone already) and wait up
        to ``stop_timeout`` until it is gone. The delete request takes a turn at the submission
        gate. Raises :class:`~._api_errors.ApiError` when the API refuses, and :class:`TimeoutError`
        when the pod is still there at the end."""
        api = await self._cluster.api()
        settings = self._settings
        try:
            async with self._gate.held():
                await api.delete(
                    "pods",
                    namespace,
                    name,
                    grace=settings.delete_grace_seconds,
                    deadline=self._cluster.deadline(),
                )
        except NotFound:
            pass
        try:
            await asyncio.wait_for(wait_gone(pods, f"{namespace}/{name}"), settings.stop_timeout)
        except asyncio.TimeoutError:  # the same class as TimeoutError from Python 3.11 on
            raise TimeoutError(f"{namespace}/{name} is still there") from None

    async def ensure_gone(
        self, api: KubeApi, pods: Informer, namespace: str, name: str, deadline: float
    ) -> None:
        """Delete a pod of this server that is in the way of a start, and wait until it is gone."""
        key = f"{namespace}/{name}"
        if key not in pods.cache:
            return
        with contextlib.suppress(NotFound):
            await api.delete(
                "pods", namespace, name, grace=self._settings.delete_grace_seconds, deadline=deadline
            )
        await asyncio.wait_for(wait_gone(pods, key), self._settings.stop_timeout)

    async def remove_quietly(
        self, api: KubeApi, pods: Informer, namespace: str, name: str, deadline: float
    ) -> None:
        """Remove the pod of a start that will not run; if the API does not answer, the
        reconciler removes it later (no hub knows it)."""
        try:
            await api.delete("pods", namespace, name, grace=0, deadline=deadline)
        except NotFound:
            pass
        except ApiError as error:
            self._settings.log.warning(
                "could not remove failed pod %s/%s (%s); the reconciler will", namespace, name, error
            )
            return
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(wait_gone(pods, f"{namespace}/{name}"), self._settings.stop_timeout)

    def remove_later(self, api: KubeApi, pods: Informer, namespace: str, name: str) -> None:
        """Remove the pod of a cancelled start in the background (within ``api_retry_budget``)."""
        removal = self.remove_quietly(api, pods, namespace, name, self._cluster.deadline())
        task = asyncio.ensure_future(removal)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def close(self) -> None:
        """Cancel the removals still running: what is left is the reconciler's."""
        cleanups = list(self._cleanups)
        for task in cleanups:
            task.cancel()
        await asyncio.gather(*cleanups, return_exceptions=True)
