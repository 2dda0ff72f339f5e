"""Quotas, pure: refused and granted exactly at the limits, with messages that say the limit and
what is in use; the form's sentences."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from einfra_spawner.models import Quotas
from einfra_spawner.profiles import load_profiles
from einfra_spawner.resolve import ResolvedOptions, UserContext, resolve_options
from einfra_spawner.usage import Cost, Interval, Rates, describe_quotas, quota_refusal, quota_use

HUB = load_profiles(Path(__file__).resolve().parents[2] / "profiles" / "hub")
ADA = UserContext(name="ada", groups=frozenset({"gpu", "lab"}))


def wants(gpus: int) -> ResolvedOptions:
    request: dict[str, object] = {"gpu": "mig-1g.10gb", "gpu_count": gpus} if gpus else {}
    return resolve_options(HUB, ADA, request)


def running(user: str, gpus: int, groups: tuple[str, ...] = ()) -> Interval:
    return Interval(
        user=user,
        profile="jupyterlab",
        cpu_millicores=1000,
        memory_bytes=2**30,
        gpu="a40" if gpus else None,
        gpu_count=gpus,
        rates=Rates(currency="CZK"),
        started=0.0,
        groups=groups,
    )


def test_gpus_per_user_at_the_limit() -> None:
    quotas = Quotas(max_gpus=4)
    held = [running("ada", 2), running("ada", 1), running("ben", 3)]
    assert quota_refusal(quotas, ADA, wants(1), held) is None  # 3 + 1 = 4: granted
    assert quota_refusal(quotas, ADA, wants(2), held) == (
        "You may use at most 4 GPUs at once on this hub; your running servers use 3 and this one asks for 2."
    )
    assert quota_refusal(Quotas(max_gpus=0), ADA, wants(0), held) is None  # no GPU asked: no GPU limit


def test_servers_per_user_at_the_limit() -> None:
    quotas = Quotas(max_servers=2)
    assert quota_refusal(quotas, ADA, wants(0), [running("ada", 0), running("ben", 0)]) is None
    message = quota_refusal(quotas, ADA, wants(0), [running("ada", 0), running("ada", 0)])
    assert message == "You may run at most 2 server(s) at once on this hub; 2 are running. Stop one first."


def test_a_groups_gpus_count_every_member() -> None:
    quotas = Quotas(group_max_gpus={"lab": 3, "other": 0})
    held = [running("ben", 2, ("lab",)), running("cleo", 5, ("elsewhere",))]
    assert quota_refusal(quotas, ADA, wants(1), held) is None
    assert quota_refusal(quotas, ADA, wants(2), held) == (
        "The members of group 'lab' may use at most 3 GPUs at once; "
        "they use 2 now and this server asks for 2."
    )
    outsider = UserContext(name="dan", groups=frozenset({"gpu"}))
    assert quota_use(quotas, outsider, held).group_gpus == ()


@pytest.mark.parametrize(("spent", "refused"), [("99.99", False), ("100", True), ("150", True)])
def test_a_budget_refuses_once_spent(spent: str, refused: bool) -> None:
    quotas = Quotas(budget=Decimal(100))
    costs = {"CZK": Cost("CZK", cpu=Fraction(spent))}
    message = quota_refusal(quotas, ADA, wants(0), [], costs, "CZK")
    assert (message is not None) == refused
    if refused:
        assert message is not None and "budget of 100 CZK is spent" in message


def test_the_forms_sentences() -> None:
    quotas = Quotas(max_servers=5, max_gpus=4, group_max_gpus={"lab": 8}, budget=Decimal(500))
    held = [running("ada", 2, ("lab",)), running("ben", 1, ("lab",))]
    lines = describe_quotas(quotas, ADA, held, {"CZK": Cost("CZK", gpu=Fraction("123.456"))}, "CZK")
    assert lines == (
        "You run 1 of your 5 servers.",
        "You use 2 of your 4 GPUs.",
        "Group lab uses 3 of its 8 GPUs.",
        "You used 123.46 of your 500 CZK budget.",
    )
    assert describe_quotas(Quotas(), ADA, held) == ()
