"""Quotas: whether one more server fits, and what the form says about it. Pure.

Where it sits in the data flow: at a start, the spawner resolves the request, then the ledger
hands this module the instance's open intervals (everything running or starting, the new
server's own earlier run excluded) and, where a budget is set, the cost over the window; a
refusal message here stops the start before the backend is called. The same figures make the
form's "You use 2 of your 4 GPUs". Concurrency is counted from the ledger, not from JupyterHub's
memory, so it survives restarts and holds across hub processes sharing one database.

``group_max_gpus`` limits the GPUs held at once by all members of a group together; a member's
interval counts for the groups the user was in when it started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from ..models import Quotas
from ..options import ResolvedOptions, UserContext
from .cost import Cost, Interval, money

__all__ = ["QuotaUse", "describe_quotas", "quota_refusal", "quota_use"]


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaUse:
    """What a user (and each of their limited groups) holds right now."""

    servers: int
    gpus: int
    group_gpus: tuple[tuple[str, int], ...] = ()


def quota_use(quotas: Quotas, user: UserContext, open_intervals: Iterable[Interval]) -> QuotaUse:
    """Count the user's running servers and GPUs, and the GPUs of each limited group they are in."""
    limited = sorted(group for group in quotas.group_max_gpus if group in user.groups)
    servers = gpus = 0
    group_gpus = dict.fromkeys(limited, 0)
    for interval in open_intervals:
        if interval.user == user.name:
            servers += 1
            gpus += interval.gpus
        for group in interval.groups:
            if group in group_gpus:
                group_gpus[group] += interval.gpus
    return QuotaUse(servers=servers, gpus=gpus, group_gpus=tuple(group_gpus.items()))


def _gpus(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


def quota_refusal(
    quotas: Quotas,
    user: UserContext,
    options: ResolvedOptions,
    open_intervals: Sequence[Interval],
    spent: Mapping[str, Cost] | None = None,
    currency: str = "",
) -> str | None:
    """Why starting ``options`` would exceed a quota (the limit and what is in use), or ``None``."""
    use = quota_use(quotas, user, open_intervals)
    if quotas.max_servers is not None and use.servers + 1 > quotas.max_servers:
        return (
            f"You may run at most {quotas.max_servers} server(s) at once on this hub; "
            f"{use.servers} are running. Stop one first."
        )
    wanted = options.gpu.count if options.gpu is not None else 0
    if wanted and quotas.max_gpus is not None and use.gpus + wanted > quotas.max_gpus:
        return (
            f"You may use at most {_gpus(quotas.max_gpus)} at once on this hub; your running "
            f"servers use {use.gpus} and this one asks for {wanted}."
        )
    for group, held in use.group_gpus:
        limit = quotas.group_max_gpus[group]
        if wanted and held + wanted > limit:
            return (
                f"The members of group {group!r} may use at most {_gpus(limit)} at once; "
                f"they use {held} now and this server asks for {wanted}."
            )
    if quotas.budget is not None and spent is not None:
        cost = spent.get(currency)
        used = cost.total if cost is not None else Fraction(0)
        if used >= Fraction(quotas.budget):
            return (
                f"Your usage budget of {quotas.budget} {currency} is spent: you used "
                f"{money(used)} {currency} in the usage window."
            )
    return None


def describe_quotas(
    quotas: Quotas,
    user: UserContext,
    open_intervals: Iterable[Interval],
    spent: Mapping[str, Cost] | None = None,
    currency: str = "",
    *,
    gpus_offered: bool = True,
) -> tuple[str, ...]:
    """The form's lines about the user's limits: "You use 2 of your 4 GPUs." and so on.

    ``gpus_offered`` false (the user's groups grant no GPU type): no GPU lines, which would
    only tell them of a quota they cannot use."""
    use = quota_use(quotas, user, open_intervals)
    lines: list[str] = []
    if quotas.max_servers is not None:
        lines.append(f"You run {use.servers} of your {quotas.max_servers} servers.")
    if quotas.max_gpus is not None and gpus_offered:
        lines.append(f"You use {use.gpus} of your {_gpus(quotas.max_gpus)}.")
    for group, held in use.group_gpus if gpus_offered else ():
        lines.append(f"Group {group} uses {held} of its {_gpus(quotas.group_max_gpus[group])}.")
    if quotas.budget is not None and spent is not None:
        cost = spent.get(currency)
        used = money(cost.total if cost is not None else Fraction(0))
        lines.append(f"You used {used} of your {quotas.budget} {currency} budget.")
    return tuple(lines)
