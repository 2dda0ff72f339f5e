"""Usage statistics, cost and quotas: the ledger of server runs and what is computed from it.

* :mod:`.cost` and :mod:`.quota` are pure (no clock, no I/O): intervals and a window in, money
  and refusals out.
* :mod:`.schema` (the tables), :mod:`.intervals` (the statements, each a function of a
  connection) and :mod:`.ledger` (one transaction per call) store the intervals through
  SQLAlchemy (blocking I/O); :mod:`.async_ledger` runs them on a worker thread for the hub,
  batching the writes.
* :mod:`.recorder` is one server's side (a collaborator of EInfraSpawner); :mod:`.metrics`
  (prometheus_client) is the other hub-facing edge. :mod:`.report` (pure) formats the
  operators' report of ``einfra-spawner usage``.
"""

from __future__ import annotations

from .async_ledger import AsyncLedger
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
from .intervals import QuotaExceeded
from .ledger import Ledger
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
