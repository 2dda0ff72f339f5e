"""A deleted server's home on the local backend: kept or deleted as the instance says, and only
that server's folders, links removed as links."""

from __future__ import annotations

import os
from pathlib import Path

from einfra_spawner import ServerNames
from einfra_spawner_local._home import remove_homes

from .harness import Harness, options


def folders(*paths: Path) -> list[bool]:
    return [path.is_dir() for path in paths]


async def test_a_deleted_servers_home_is_kept_or_deleted(harness: Harness) -> None:
    backend = harness.backend()
    request = harness.request(server="work")
    started = await harness.start(backend, request)
    await backend.stop(request.identity, started.state)
    home = Path(started.state["home"])
    (home / "notes.txt").write_text("mine")
    # A reset moved an older home aside; another server of the same user has its own home.
    reset = harness.request(server="work", resolved=options({"home": "reset"}), state=started.state)
    again = await harness.start(backend, reset)
    await backend.stop(reset.identity, again.state)
    other = harness.request(server="other")
    other_started = await harness.start(backend, other)
    await backend.stop(other.identity, other_started.state)
    (aside,) = home.parent.glob(f"{home.name}.reset-*")

    await backend.delete_storage(request.identity, "hub", homes=False)
    assert folders(home, aside) == [True, True]  # homes.on_delete: keep

    await backend.delete_storage(request.identity, "hub", homes=True)
    assert folders(home, aside, Path(other_started.state["home"])) == [False, False, True]


def test_removal_touches_only_the_servers_own_entries_and_never_follows_links(tmp_path: Path) -> None:
    root = tmp_path / "homes"
    root.mkdir()
    names = ServerNames("ana", "work")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("not the user's")
    home = root / names.home
    home.mkdir()
    os.symlink(precious, home / "link-inside")
    os.symlink(precious, root / f"{names.home}.reset-20261201T000000Z")  # a link in place of a folder
    neighbour = root / ServerNames("ana", "work2").home
    neighbour.mkdir()
    removed = remove_homes(root, names)
    assert sorted(p.name for p in removed) == sorted([names.home, f"{names.home}.reset-20261201T000000Z"])
    assert (precious / "keep.txt").read_text() == "not the user's"
    assert neighbour.is_dir()
    assert remove_homes(tmp_path / "absent", names) == []
