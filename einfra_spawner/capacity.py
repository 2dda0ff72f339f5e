"""GPU availability while choosing: free and total GPUs of the types a user may see.

Where it sits: the options form (and the GPU figures service, :mod:`einfra_spawner.gpu_service`,
through the user's spawner) asks the backend for the capacity of the GPU types the user's groups
grant (the form's rule, :func:`~einfra_spawner.form_gpu.capacity_types`), bounded by a time-out: a
slow or failing backend gives a form without figures, never no form. The figures are also Prometheus gauges in
``/hub/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from prometheus_client import Gauge

from .backend import Backend, GpuCapacity
from .form_gpu import capacity_types
from .options import UserContext
from .profiles import ProfileSet

__all__ = ["GPUS_FREE", "GPUS_TOTAL", "capacity_for", "record_capacity"]

GPUS_FREE = Gauge("einfra_gpus_free", "Free GPUs (or slices) of each type, when last computed", ["gpu"])
GPUS_TOTAL = Gauge("einfra_gpus_total", "All GPUs (or slices) of each type, when last computed", ["gpu"])


def record_capacity(capacity: Mapping[str, GpuCapacity]) -> None:
    for gpu, figures in capacity.items():
        GPUS_FREE.labels(gpu=gpu).set(figures.free)
        GPUS_TOTAL.labels(gpu=gpu).set(figures.total)


async def capacity_for(
    backend: Backend, profiles: ProfileSet, user: UserContext, timeout: float, log: logging.Logger
) -> dict[str, GpuCapacity]:
    """Free/total GPUs of the types ``user`` can see; ``{}`` when none, when the backend takes
    longer than ``timeout`` seconds (0: never asked), or when it fails."""
    wanted = capacity_types(profiles, user)
    if not wanted or timeout <= 0:
        return {}
    types = {name: profiles.instance.gpu_types[name] for name in wanted}
    try:
        capacity = await asyncio.wait_for(backend.gpu_capacity(types), timeout=timeout)
    except asyncio.TimeoutError:
        log.warning("GPU capacity took longer than %.1f s; showing the form without it", timeout)
        return {}
    except Exception:  # a form without figures beats no form at all
        log.exception("GPU capacity failed; showing the form without it")
        return {}
    record_capacity(capacity)
    return capacity
