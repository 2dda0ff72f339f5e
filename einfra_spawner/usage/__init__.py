"""Usage statistics, cost and quotas: the ledger of server runs and what is computed from it.

* :mod:`.cost` and :mod:`.quota` are pure (no clock, no I/O): intervals and a window in, money
  and refusals out.
* :mod:`.schema` and :mod:`.ledger` store the intervals through SQLAlchemy (blocking I/O, run on
  a worker thread by the spawner).
* :mod:`.recorder` is one server's side (a collaborator of EInfraSpawner); :mod:`.metrics`
  (prometheus_client) is the other hub-facing edge. :mod:`.report` (pure) formats the
  operators' report of ``einfra-spawner usage``.
"""

from __future__ import annotations

from .cost import (
    Cost,
    Interval,
    Rates,
    cost_by_user,
    describe_cost,
    interval_cost,
    money,
    rates_for,
    usage_cost,
    window,
)
from .ledger import AsyncLedger, Ledger, QuotaExceeded
from .quota import QuotaUse, describe_quotas, quota_refusal, quota_use

__all__ = [
    "AsyncLedger",
    "Cost",
    "Interval",
    "Ledger",
    "QuotaExceeded",
    "QuotaUse",
    "Rates",
    "cost_by_user",
    "describe_cost",
    "describe_quotas",
    "interval_cost",
    "money",
    "quota_refusal",
    "quota_use",
    "rates_for",
    "usage_cost",
    "window",
]
