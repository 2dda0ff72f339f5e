"""The servers one ``LocalBackend`` object knows, and what they hold: GPUs and CPUs.

A server is known once this object has started it (its child process) or adopted it (found by
``poll`` from JupyterHub's state, or by ``inventory`` from the backend's records after a hub
restart). GPUs are counted, not isolated: a start holds its GPUs from the check against
``gpu_inventory`` until its server runs (then the server holds them) or the start fails. CPUs
are chosen among the least used by running servers. No I/O beyond ``/proc`` reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from einfra_spawner import BackendError, ResolvedGpu
from einfra_spawner.backend import GpuCapacity
from einfra_spawner.models import GpuType

from ._launch import choose_cpus, cores_for
from ._records import ServerRef, Tracked

__all__ = ["Servers"]


class Servers:
    """The table of known servers by key (their pod name), and the GPUs held by starts."""

    def __init__(self, boot_id: str) -> None:
        self.boot_id = boot_id
        self.tracked: dict[str, Tracked] = {}
        #: GPUs held by starts in progress: (GPU type id, count) by key.
        self._reserved: dict[str, tuple[str, int]] = {}

    def gpus_held(self, *, besides: str | None = None) -> dict[str, int]:
        """GPUs held by starts and running servers, by GPU type id (``besides`` one key)."""
        held: dict[str, int] = {}
        for key, (gpu_id, count) in self._reserved.items():
            if key != besides:
                held[gpu_id] = held.get(gpu_id, 0) + count
        for key, tracked in self.tracked.items():
            if key != besides and tracked.ref.gpu is not None and tracked.running():
                gpu_id, count = tracked.ref.gpu
                held[gpu_id] = held.get(gpu_id, 0) + count
        return held

    def reserve_gpu(
        self, key: str, gpu: ResolvedGpu | None, inventory: Mapping[str, int]
    ) -> tuple[str, int] | None:
        """Hold GPUs for a start, or refuse when ``inventory`` says too few are free (an empty
        inventory refuses nothing). No await between the check and the hold: two starts cannot
        both take the last GPU. :meth:`release_gpu` ends the hold."""
        if gpu is None:
            return None
        if inventory:
            total = int(inventory.get(gpu.id, 0))
            held = self.gpus_held(besides=key).get(gpu.id, 0)
            if total == 0:
                raise BackendError(f"This machine has no {gpu.display_name}; choose another GPU.")
            if held + gpu.count > total:
                raise BackendError(
                    f"Not enough {gpu.display_name} free on this machine right now: {held} of "
                    f"{total} in use and you asked for {gpu.count}. Choose fewer or another GPU, "
                    "or try again later."
                )
        self._reserved[key] = (gpu.id, gpu.count)
        return (gpu.id, gpu.count)

    def release_gpu(self, key: str) -> None:
        self._reserved.pop(key, None)

    def capacity(
        self, gpu_types: Mapping[str, GpuType], inventory: Mapping[str, int]
    ) -> dict[str, GpuCapacity]:
        """Free and total GPUs of each type: ``inventory`` less what is held."""
        held = self.gpus_held()
        capacity = {}
        for gpu_id in gpu_types:
            total = int(inventory.get(gpu_id, 0))
            capacity[gpu_id] = GpuCapacity(gpu=gpu_id, free=max(0, total - held.get(gpu_id, 0)), total=total)
        return capacity

    def cpus_for(self, cpu_limit: int) -> tuple[int, ...] | None:
        """The CPUs to pin a new server to: the least used by running servers."""
        load: dict[int, int] = {}
        for tracked in self.tracked.values():
            if tracked.ref.cpus and tracked.running():
                for cpu in tracked.ref.cpus:
                    load[cpu] = load.get(cpu, 0) + 1
        return choose_cpus(sorted(os.sched_getaffinity(0)), cores_for(cpu_limit), load)

    def ports(self) -> set[int]:
        """The ports of the running servers (a new one takes another)."""
        return {t.ref.port for t in self.tracked.values() if t.running()}

    def refs(self, key: str, state: Mapping[str, Any], recorded: ServerRef | None = None) -> list[ServerRef]:
        """The processes a server may have on this boot: the one this object knows, the one the
        state names (they differ only when the state is older than our last start), and the one
        the backend's record names (the only one left when a hub died while starting it)."""
        refs: list[ServerRef] = []
        tracked = self.tracked.get(key)
        for ref in (tracked.ref if tracked else None, ServerRef.from_state(state), recorded):
            if ref is not None and not any(ref.same_process(r) for r in refs):
                refs.append(ref)
        return [ref for ref in refs if ref.boot_id == self.boot_id]

    def adopt(self, key: str, ref: ServerRef) -> None:
        """A server found running that this object did not start: its GPUs and CPUs count from
        now on."""
        self.tracked[key] = Tracked(ref, None)

    def forget(self, key: str, ref: ServerRef) -> None:
        """Drop an adopted server that is gone (our own children stay until reaped)."""
        tracked = self.tracked.get(key)
        if tracked is not None and tracked.process is None and tracked.ref.same_process(ref):
            del self.tracked[key]
