"""Home folders: one per (user, server), kept across starts, reset only when asked, and a reset
moves the old folder aside instead of deleting it."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from einfra_spawner import BackendError, ResolvedOptions, ServerNames
from einfra_spawner_local._home import home_folder, prepare_home

from .harness import Harness, http_get, listing, options


async def _start_and_stop(harness: Harness, resolved: ResolvedOptions | None = None) -> dict[str, Any]:
    """One start and stop, as a fresh hub would do them."""
    backend = harness.backend()
    request = harness.request(resolved=resolved)
    started = await harness.start(backend, request)
    await backend.stop(request.identity, started.state)
    await backend.close()
    return started.state


async def test_home_is_kept_without_a_reset(harness: Harness) -> None:
    state = await _start_and_stop(harness)
    home = Path(state["home"])
    (home / "notebook.ipynb").write_text("{}")
    again = await _start_and_stop(harness, options({"home": "keep"}))
    assert again["home"] == str(home)
    assert (home / "notebook.ipynb").read_text() == "{}"
    assert not list(home.parent.glob(f"{home.name}.reset-*"))


async def test_reset_moves_the_old_home_aside(harness: Harness) -> None:
    state = await _start_and_stop(harness)
    home = Path(state["home"])
    (home / "results").mkdir()
    (home / "results" / "table.csv").write_text("a,b\n1,2\n")

    backend = harness.backend()
    request = harness.request(resolved=options({"home": "reset"}), state=state)
    started = await harness.start(backend, request)
    assert started.state["home"] == str(home)
    assert listing(home) == []
    (moved,) = home.parent.glob(f"{home.name}.reset-*")
    assert (moved / "results" / "table.csv").read_text() == "a,b\n1,2\n"
    # The server really works in the fresh folder.
    _, seen = await http_get(started.endpoint.port, "/user/ana/env")
    assert seen["cwd"] == str(home)


async def test_reset_waits_for_the_earlier_server_to_be_gone(harness: Harness) -> None:
    backend = harness.backend()
    first = await harness.start(backend, harness.request())
    # The hub lost track of the first server (no stop), then a reset was asked for.
    second = await harness.start(
        backend, harness.request(resolved=options({"home": "reset"}), state=first.state)
    )
    assert await backend.poll(harness.started[0][0], first.state) is not None
    assert second.state["pid"] != first.state["pid"]


async def test_an_ephemeral_home_is_fresh_at_every_start(harness: Harness) -> None:
    course = options(instance="course")
    assert course.home is not None and course.home.ephemeral
    state = await _start_and_stop(harness, course)
    home = Path(state["home"])
    (home / "exercise.R").write_text("1 + 1\n")
    again = await _start_and_stop(harness, course)
    assert again["home"] == str(home)
    assert listing(home) == []
    (moved,) = home.parent.glob(f"{home.name}.reset-*")
    assert (moved / "exercise.R").exists()
    # An empty home has nothing to keep: it is not moved aside again.
    await _start_and_stop(harness, course)
    assert len(list(home.parent.glob(f"{home.name}.reset-*"))) == 1


async def test_a_profile_without_a_home_gets_a_scratch_folder(harness: Harness) -> None:
    state = await _start_and_stop(harness, dataclasses.replace(options(), home=None))
    scratch = Path(state["home"])
    assert scratch.parent == harness.root / "homes" / "scratch"
    assert listing(scratch) == []


def test_two_resets_in_one_second_do_not_collide(tmp_path: Path) -> None:
    home = home_folder(tmp_path, ServerNames("ana", ""), persistent=True)
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
    prepare_home(home, reset=False, owner=None, now=now)
    for n in range(3):
        (home / f"file{n}").write_text(str(n))
        moved = prepare_home(home, reset=True, owner=None, now=now).moved_to
        assert moved is not None and (moved / f"file{n}").read_text() == str(n)
    names = sorted(p.name for p in tmp_path.glob(f"{home.name}.reset-*"))
    assert names == [
        f"{home.name}.reset-20261125T120000Z",
        f"{home.name}.reset-20261125T120000Z-2",
        f"{home.name}.reset-20261125T120000Z-3",
    ]


def test_a_home_that_is_a_link_is_refused(tmp_path: Path) -> None:
    home = home_folder(tmp_path, ServerNames("ana", ""), persistent=True)
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(target, home)
    with pytest.raises(BackendError, match="is a link"):
        prepare_home(home, reset=True, owner=None, now=datetime.now(timezone.utc))
    assert target.is_dir()
