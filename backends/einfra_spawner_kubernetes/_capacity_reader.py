"""GPU capacity as the backend serves it: figures read from the shared watches, reused a while.

The hub (for the form and the GPU figures) and a start that failed for want of a GPU ask
:class:`~.backend.KubernetesBackend` for free and total GPUs of each type; it hands the
question to the :class:`CapacityReader` here. The reader takes nodes and pods from the
:class:`~._cluster.Cluster`'s caches (never an API read per question), counts with the pure
:func:`~._capacity.gpu_capacity`, and keeps the result for ``capacity_cache_seconds``, so that a
burst of form loads counts once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from einfra_spawner.backend import GpuCapacity
from einfra_spawner.models import GpuType
from einfra_spawner.resolve import ResolvedGpu

from ._capacity import gpu_capacity

if TYPE_CHECKING:
    from ._cluster import Cluster
    from .backend import KubernetesBackend

__all__ = ["CapacityReader"]


class CapacityReader:
    """The GPU figures of one backend, from its cluster's node and pod watches."""

    def __init__(self, settings: KubernetesBackend, cluster: Cluster) -> None:
        # The backend's traits are read at each question, not copied: they stay the one source.
        self._settings = settings
        self._cluster = cluster
        #: (when, figures) of the last count; None until the first, or to force a new count.
        self.cached: tuple[float, dict[str, GpuCapacity]] | None = None

    async def figures(self, gpu_types: Mapping[str, GpuType]) -> dict[str, GpuCapacity]:
        """Free and total GPUs of each of ``gpu_types``, reused while the last count is fresh
        and covers them all. With ``capacity_all_namespaces`` the pods of every namespace count."""
        if not gpu_types:
            return {}
        now = time.monotonic()
        if self.cached is not None and now - self.cached[0] < self._settings.capacity_cache_seconds:
            cached = self.cached[1]
            if set(cached) >= set(gpu_types):
                return {k: cached[k] for k in gpu_types}
        nodes = await self._cluster.informer("nodes", None)
        if self._settings.capacity_all_namespaces:
            pod_informer = await self._cluster.informer("pods", None, managed_only=False)
        else:
            pod_informer = await self._cluster.informer("pods", self._cluster.scope())
        figures = gpu_capacity(gpu_types, nodes.cache.values(), pod_informer.cache.values())
        self.cached = (now, figures)
        return figures

    async def of(self, gpu: ResolvedGpu) -> GpuCapacity | None:
        """The capacity of one granted GPU type, for a failure message (``None`` if unreadable)."""
        gpu_type = GpuType(
            display_name=gpu.display_name, resource=gpu.resource, node_selector=dict(gpu.node_selector)
        )
        try:
            nodes = await asyncio.wait_for(self._cluster.informer("nodes", None), 2.0)
            pods = await self._cluster.informer("pods", self._cluster.scope())
        except Exception:  # capacity only improves a message; never fail a failure on it
            return None
        return gpu_capacity({gpu.id: gpu_type}, nodes.cache.values(), pods.cache.values())[gpu.id]
