"""What a request asks for itself, read as the JupyterHub that runs reads it (5.3 or 6.x).

Three readings must agree on both JupyterHub versions: the options JupyterHub hands the spawner
(``options_from_query``, the REST ``user_options``), what :mod:`einfra_spawner.asked` reads from
the raw HTTP request to decide whether *this* request asks for a home reset, and the message a
refused request shows the user. Where JupyterHub's own code can run outside a hub (JupyterHub 6's
``SpawnHandler._get_user_options``), the tests call it rather than a copy of its rule.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import jupyterhub
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jupyterhub.handlers.pages import SpawnHandler
from tornado import web

from einfra_spawner.asked import as_stored, asks_for_reset, options_in_body, query_options
from einfra_spawner.form import field_name, request_from_query
from einfra_spawner.options import UserContext
from einfra_spawner.profiles import load_profiles
from einfra_spawner.refusals import refusal
from einfra_spawner.spawner import EInfraSpawner

HUB = load_profiles(Path(__file__).resolve().parents[2] / "profiles" / "hub")
ANA = UserContext(name="ana")
JUPYTERHUB_6 = jupyterhub.version_info >= (6,)


def passed_by_jupyterhub(query: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The query arguments of ``GET /hub/spawn`` as this JupyterHub hands them to
    ``options_from_query``: 5.3 drops ``next`` only; 6 drops ``next`` and ``display_name``, then
    applies ``SpawnHandler._get_user_options`` (its own code, run here)."""
    arguments = {key: list(values) for key, values in query.items() if key != "next"}
    if not JUPYTERHUB_6:
        return arguments
    arguments.pop("display_name", None)
    handler = SimpleNamespace(log=logging.getLogger("test_asked"))
    passed: dict[str, list[str]] = SpawnHandler._get_user_options(handler, arguments)
    return passed


def get(query: str) -> SimpleNamespace:
    """A ``GET /hub/spawn?<query>`` as tornado parses it (only what asks_for_reset reads)."""
    arguments: dict[str, list[bytes]] = {}
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        arguments.setdefault(key, []).append(value.encode())
    return SimpleNamespace(method="GET", body=b"", body_arguments={}, query_arguments=arguments)


def post(body: bytes = b"", form: Mapping[str, list[str]] | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        method="POST",
        body=body,
        body_arguments={key: [v.encode() for v in values] for key, values in (form or {}).items()},
        query_arguments={},
    )


# --- /hub/spawn?... : one rule on both versions ----------------------------------------------------


def spawner_request(query: Mapping[str, Sequence[str]]) -> dict[str, object]:
    """What ``EInfraSpawner.options_from_query`` (its own code) makes of ``query`` as this
    JupyterHub passes it (resolution left out: the resolver's tests cover it)."""
    # A stand-in for the spawner: options_from_query reads nothing of it but ``resolve``.
    resolving = cast(EInfraSpawner, SimpleNamespace(resolve=lambda request: None))
    request: dict[str, object] = EInfraSpawner.options_from_query(resolving, passed_by_jupyterhub(query))
    return request


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"opt-profile": ["rstudio"], "opt-cpu": ["4"]}, {"profile": "rstudio", "cpu": "4"}),
        ({"profile": ["rstudio"], "cpu": ["4"]}, {"profile": "rstudio", "cpu": "4"}),
        # Any opt- key: the plain ones are not options (JupyterHub 6 ignores them too).
        ({"opt-cpu": ["4"], "home": ["reset"]}, {"cpu": "4"}),
        # JupyterHub's own arguments are never options.
        ({"next": ["/hub/home"], "display_name": ["Mine"], "opt-cpu": ["2"]}, {"cpu": "2"}),
        ({"next": ["/hub/home"], "display_name": ["Mine"], "cpu": ["2"]}, {"cpu": "2"}),
        ({"opt-mounts": ["projects", ""], "opt-home": ["reset"]}, {"mounts": ["projects"], "home": "reset"}),
        ({"next": ["/hub/home"]}, {}),
    ],
)
def test_query_options_are_read_by_one_rule(query: dict[str, list[str]], expected: dict[str, object]) -> None:
    assert request_from_query(query_options(query)) == expected
    # What the spawner makes of the query JupyterHub hands it comes to the same request.
    assert spawner_request(query) == expected


_NAMES = st.sampled_from(["profile", "cpu", "home", "mounts", "next", "display_name", "gpu", "opt-home"])
_KEYS = st.builds(lambda prefix, name: prefix + name, st.sampled_from(["", "opt-"]), _NAMES)
_QUERIES = st.dictionaries(
    _KEYS, st.lists(st.sampled_from(["reset", "keep", "4", "", "x"]), min_size=1, max_size=2)
)


@given(_QUERIES)
def test_the_spawner_and_the_reset_check_read_a_query_alike(query: dict[str, list[str]]) -> None:
    """Whatever the query, the request the spawner resolves is the one asks_for_reset reads in
    the raw query arguments, so a reset in the query acts exactly when the options carry it."""
    requested = spawner_request(query)
    assert requested == request_from_query(query_options(query))
    raw = "&".join(f"{key}={value}" for key, values in query.items() for value in values)
    assert asks_for_reset(get(raw), HUB, ANA) == (requested.get("home") == "reset")


@pytest.mark.parametrize(
    ("query", "asked"),
    [
        ("opt-home=reset", True),
        ("home=reset", True),  # plain keys: JupyterHub 6 passes them on, 5 passes everything
        ("next=%2Fhub%2Fhome&opt-home=reset", True),
        ("opt-cpu=2&home=reset", False),  # an opt- key makes the plain ones no options
        ("opt-home=keep", False),
        ("display_name=reset", False),
        ("", False),
    ],
)
def test_a_reset_in_the_query_is_read_on_both_versions(query: str, asked: bool) -> None:
    assert asks_for_reset(get(query), HUB, ANA) is asked


# --- the REST body ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "options"),
    [
        ({"home": "reset", "cpu": "2"}, {"home": "reset", "cpu": "2"}),  # flat: both versions
        ({"user_options": {"home": "reset"}}, {"home": "reset"}),  # JupyterHub 6
        ({"display_name": "Mine", "user_options": {"home": "reset"}}, {"home": "reset"}),
        # JupyterHub 6: beside display_name, "home" is no option (user_options is None: the
        # stored options are used); JupyterHub 5 refuses the body ("display_name" is no key).
        ({"display_name": "Mine", "home": "reset"}, None),
        ({"user_options": None, "home": "reset"}, None),
        ({}, {}),
        ([], []),
    ],
)
def test_the_options_of_a_rest_body(body: object, options: object) -> None:
    assert options_in_body(body) == options


@pytest.mark.parametrize(
    ("body", "asked"),
    [
        (b'{"home": "reset"}', True),
        (b'{"user_options": {"home": "reset"}}', True),
        (b'{"display_name": "Mine", "home": "reset"}', False),
        (b'{"display_name": "Mine", "user_options": {"home": "reset", "cpu": "2"}}', True),
        (b'{"user_options": {"home": "keep"}}', False),
        (b"", False),
        (b"{", False),
        (b'"reset"', False),
    ],
)
def test_a_reset_in_a_rest_body(body: bytes, asked: bool) -> None:
    assert asks_for_reset(post(body), HUB, ANA) is asked


def test_a_reset_on_the_form() -> None:
    form = {"profile": ["jupyterlab"], field_name("jupyterlab", "home"): ["reset"]}
    assert asks_for_reset(post(form=form), HUB, ANA)
    form[field_name("jupyterlab", "home")] = ["keep"]
    assert not asks_for_reset(post(form=form), HUB, ANA)


def test_no_request_asks_for_nothing() -> None:
    assert not asks_for_reset(None, HUB, ANA)


def test_a_reset_is_never_stored() -> None:
    assert as_stored({"home": "reset", "cpu": "2"}) == {"cpu": "2"}
    assert as_stored({"home": "keep"}) == {"home": "keep"}
    assert as_stored(None) == {}


# --- what a refused request shows --------------------------------------------------------------------


def shown_on_the_form(error: web.HTTPError) -> str:
    """The error message JupyterHub's spawn page renders for ``error`` raised by the spawner:
    JupyterHub 6 through ``format_exception``, 5 as ``str(error)``."""
    if JUPYTERHUB_6:
        from jupyterhub.utils import format_exception

        message: str = format_exception(error)[0]
        return message
    return str(error)


def written_by_the_api(error: web.HTTPError) -> str:
    """The ``message`` of the REST API's JSON error for ``error``: JupyterHub 6 reads
    ``jupyterhub_message``, 5 formats ``log_message`` with the error's arguments."""
    if JUPYTERHUB_6:
        message: str = error.jupyterhub_message  # type: ignore[attr-defined]
        return message
    assert error.log_message is not None
    return error.log_message % error.args


@pytest.mark.parametrize("status", [400, 403, 503])
def test_a_refusal_shows_its_message_alone(status: int) -> None:
    message = "cpu: '64%' is not allowed; allowed: 1, 2, 4, 8, 16, 32"
    error: Any = refusal(message, reason="options", status=status)
    assert isinstance(error, web.HTTPError)
    assert error.status_code == status
    assert shown_on_the_form(error) == message
    assert written_by_the_api(error) == message
