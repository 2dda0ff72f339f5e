"""The spawner's part of JupyterHub's saved state (``einfra_spawner.spawner_state``): what is
written reads back the same, only keys with something to say are written, and a value of the
wrong shape reads as "not known" instead of failing a hub restart."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from einfra_spawner.spawner_state import SavedState

_values = st.one_of(st.integers(), st.text(max_size=8), st.booleans(), st.none())
_mappings = st.dictionaries(st.text(min_size=1, max_size=8), _values, max_size=4)


@st.composite
def saved_states(draw: st.DrawFn) -> SavedState:
    server = draw(_mappings)
    return SavedState(
        server=server,
        # The backend's name is written only beside a server's state.
        backend=draw(st.text(min_size=1, max_size=10)) if server else None,
        usage_interval=draw(st.none() | st.integers(min_value=1)),
        granted_options=draw(st.none() | _mappings.filter(bool)),
        home_generation=draw(st.none() | st.integers(min_value=0)),
    )


OURS = frozenset({"server", "backend", "usage_interval", "granted_options", "home_generation"})


@given(saved_states(), _mappings.filter(lambda keys: not OURS & set(keys)))
def test_what_is_written_reads_back_the_same(saved: SavedState, hubs_own: dict[str, Any]) -> None:
    # JupyterHub's own keys sit beside ours in the same mapping, and are not ours to read.
    assert SavedState.from_state({**hubs_own, **saved.as_state()}) == saved


def test_only_what_is_known_is_written() -> None:
    assert SavedState().as_state() == {}
    assert SavedState(backend="local", granted_options={}).as_state() == {}  # no server, nothing granted
    assert SavedState(home_generation=0).as_state() == {"home_generation": 0}
    assert SavedState(server={"pid": 7}, backend="local", usage_interval=3).as_state() == {
        "backend": "local",
        "server": {"pid": 7},
        "usage_interval": 3,
    }


def test_the_record_does_not_share_the_callers_mappings() -> None:
    server = {"pid": 7}
    state = SavedState(server=server, backend="local").as_state()
    state["server"]["pid"] = 8
    assert server == {"pid": 7}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"server": "pod-1"}, SavedState(backend=None)),
        ({"server": ["pod-1"], "backend": "kubernetes"}, SavedState(backend="kubernetes")),
        ({"usage_interval": "12"}, SavedState()),
        ({"granted_options": ["cpu", "4"]}, SavedState()),
        ({"home_generation": -1}, SavedState()),
        ({"home_generation": True}, SavedState()),  # a bool is no generation
        ({"home_generation": "2"}, SavedState()),
        ({"home_generation": 2.0}, SavedState()),
        ({"home_generation": 2}, SavedState(home_generation=2)),
        ({}, SavedState()),
    ],
)
def test_a_value_of_the_wrong_shape_reads_as_not_known(state: dict[str, Any], expected: SavedState) -> None:
    assert SavedState.from_state(state) == expected
