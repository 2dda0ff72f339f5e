"""Prometheus metrics of this spawner, served by JupyterHub's own ``/hub/metrics``.

Where it sits in the data flow: the spawner observes spawns and refusals, the GPU capacity it
computes for the form (and the JSON route) sets the GPU gauges, and the ledger's cost of each
stretch of running time (added at every poll and at stop) feeds the cost counter. The metrics
live in prometheus_client's default registry, which is the one JupyterHub's handler renders.
"""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import Counter, Histogram

from .cost import Cost, Interval, Rates, interval_cost

__all__ = [
    "COST",
    "RECONCILE_ACTIONS",
    "SPAWN_DURATION",
    "SPAWN_FAILURES",
    "CostMeter",
    "record_cost",
]

SPAWN_DURATION = Histogram(
    "einfra_spawn_duration_seconds",
    "Time from an admitted request to a started (or failed) server, by profile and outcome",
    ["profile", "outcome"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf")),
)
SPAWN_FAILURES = Counter(
    "einfra_spawn_failures",
    "Starts refused or failed, by reason (options, quota, backend, error)",
    ["reason"],
)
COST = Counter(
    "einfra_cost",
    "Cost accumulated by running servers, by profile, in the instance's currency",
    ["profile", "currency"],
)

RECONCILE_ACTIONS = Counter(
    "einfra_reconcile_actions",
    "What the reconciler did (remove_orphan, close_interval, mark_running), done or failed",
    ["action", "outcome"],
)


@lru_cache(maxsize=256)
def _per_second(
    rates: Rates, cpu_millicores: int, memory_bytes: int, gpu: str | None, gpu_count: int
) -> float:
    """The cost per second of a server of that size at those rates. Computed exactly (fractions)
    once per size: after a hub restart thousands of meters are rebuilt at once, nearly all of a
    few sizes, and the exact sum cost more than a poll."""
    sample = Interval(
        instance="",
        user="",
        server="",
        profile="",
        groups=(),
        cpu_millicores=cpu_millicores,
        memory_bytes=memory_bytes,
        gpu=gpu,
        gpu_count=gpu_count,
        rates=rates,
        started=0.0,
    )
    return float(interval_cost(sample, 0.0, 3600.0).total) / 3600.0


def record_cost(profile: str, cost: Cost) -> None:
    if cost.total > 0:
        COST.labels(profile=profile, currency=cost.currency).inc(float(cost.total))


class CostMeter:
    """The cost counter of one running server, advanced at every poll.

    Its rate is computed exactly once, when the server starts; each poll then costs a
    multiplication (exact sums are the ledger's job, this counter is a float anyway)."""

    __slots__ = ("_counter", "_per_second", "since")

    def __init__(self, running: Interval) -> None:
        self._counter = COST.labels(profile=running.profile, currency=running.rates.currency)
        self._per_second = _per_second(
            running.rates, running.cpu_millicores, running.memory_bytes, running.gpu, running.gpu_count
        )
        #: Until when the counter has counted.
        self.since = running.started

    def advance(self, now: float) -> None:
        """Count the cost from :attr:`since` to ``now`` (never backwards)."""
        if now > self.since:
            if self._per_second > 0:
                self._counter.inc(self._per_second * (now - self.since))
            self.since = now
