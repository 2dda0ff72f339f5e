"""Names derived from user and server names: valid DNS-1123 labels, and never shared."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from einfra_spawner.names import ServerNames, dns_label, is_dns1123_label, is_label_value

from .strategies import hub_names


def test_readable_and_distinct() -> None:
    names = ServerNames("Lukáš", "gpu run")
    assert names.pod.startswith("jupyter-lukas-gpu-run-")
    assert names.home.startswith("home-lukas-gpu-run-")
    # Case, accents and punctuation fold to the same readable part; the digest keeps them apart.
    pods = {ServerNames(user, "").pod for user in ("ana", "Ana", "aña", "a-na", "a.na", "ana ")}
    assert len(pods) == 6


def test_long_and_empty_names_fit() -> None:
    assert is_dns1123_label(dns_label("jupyter", "x" * 500, "y" * 500))
    assert is_dns1123_label(dns_label("jupyter", "", ""))
    assert is_dns1123_label(dns_label("jupyter", "😀", "---"))


@given(hub_names(), hub_names())
def test_every_name_is_valid(user: str, server: str) -> None:
    names = ServerNames(user, server)
    for name in (names.pod, names.home):
        assert is_dns1123_label(name), name
    for value in (names.user_label, names.server_label):
        assert is_label_value(value), value
        assert is_dns1123_label(value), value


@settings(max_examples=300)
@given(st.lists(st.tuples(hub_names(), hub_names()), min_size=2, max_size=30, unique=True))
def test_names_are_injective(pairs: list[tuple[str, str]]) -> None:
    made = [ServerNames(user, server) for user, server in pairs]
    assert len({n.pod for n in made}) == len(pairs)
    assert len({n.home for n in made}) == len(pairs)
    assert len({n.server_label for n in made}) == len(pairs)
    users = {user for user, _ in pairs}
    assert len({ServerNames(user, "").user_label for user in users}) == len(users)


@given(hub_names(), hub_names(), hub_names())
def test_user_label_ignores_the_server(user: str, server_a: str, server_b: str) -> None:
    assert ServerNames(user, server_a).user_label == ServerNames(user, server_b).user_label
