"""The spawner's side of homes: which home is current (its generation), and deleted servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from einfra_spawner import BackendError, ServerIdentity
from einfra_spawner.runtime import HubRuntime
from einfra_spawner.storage import home_claim_name

from .test_spawner import FakeBackend, handled, make_spawner
from .test_spawner import runtime as runtime  # the autouse fixture

RESET = {"profile": "jupyterlab", "home": "reset", "cpu": 4}


class HomesBackend(FakeBackend):
    """Also answers which home is current, and records deleted servers' storage."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.generation: int | None = None
        self.asked: list[tuple[ServerIdentity, str]] = []
        self.deleted: list[tuple[ServerIdentity, str, bool]] = []
        self.delete_fails: str | None = None

    async def current_home(self, identity: ServerIdentity, instance: str) -> int | None:
        self.asked.append((identity, instance))
        return self.generation

    async def delete_storage(self, identity: ServerIdentity, instance: str, *, homes: bool) -> None:
        if self.delete_fails:
            raise BackendError(self.delete_fails)
        self.deleted.append((identity, instance, homes))


@pytest.fixture
def backend(runtime: HubRuntime) -> Iterator[HomesBackend]:
    fake = HomesBackend()
    runtime.set_backend("fake", fake)
    yield fake


async def test_a_new_server_asks_the_backend_which_home_is_current(backend: HomesBackend) -> None:
    backend.generation = 3  # e.g. a server re-created after a delete that kept its homes
    spawner = make_spawner(server="work")
    await spawner.start()
    assert backend.asked == [(ServerIdentity(user="alice", server="work"), "hub")]
    manifests = backend.started[0].manifests
    assert manifests.home is not None
    assert manifests.home["metadata"]["name"] == home_claim_name(manifests.names, "alice", "work", 3)
    assert spawner.get_state()["home_generation"] == 3
    # Known from now on: a restarted hub reads it from the state and asks nothing.
    restarted = make_spawner(server="work")
    restarted.load_state(spawner.get_state())
    await restarted.stop()
    restarted.clear_state()
    await restarted.start()
    assert len(backend.asked) == 1
    assert backend.started[1].identity.home_generation == 3


async def test_a_server_without_a_home_asks_nothing(backend: HomesBackend) -> None:
    await make_spawner(folder="course").start()  # the course hub's home is ephemeral
    assert backend.asked == []


async def test_a_reset_that_keeps_the_old_home_moves_the_server_on(backend: HomesBackend) -> None:
    spawner = make_spawner(user_options=RESET)
    handled(spawner, body=RESET)
    await spawner.start()
    request = backend.started[0]
    assert request.manifests.retired_home == request.manifests.names.home
    assert request.manifests.home_generation == 1
    assert spawner.get_state()["home_generation"] == 1


async def test_a_reset_that_fails_keeps_the_generation_it_had(backend: HomesBackend) -> None:
    spawner = make_spawner(user_options=RESET)
    spawner.load_state({"home_generation": 2})
    handled(spawner, body=RESET)
    backend.fail = "the cluster said no"
    with pytest.raises(Exception, match="the cluster said no"):
        await spawner.start()
    # The backend makes the old home current again at the next start (see _storage.ensure_home).
    assert spawner.get_state()["home_generation"] == 2


@pytest.mark.parametrize("stored", [-1, "3", True, None, 2.5])
def test_a_garbled_generation_is_ignored(backend: HomesBackend, stored: Any) -> None:
    spawner = make_spawner()
    spawner.load_state({"home_generation": stored})
    assert "home_generation" not in spawner.get_state()


async def test_delete_forever_keeps_homes_as_the_instance_says(backend: HomesBackend) -> None:
    spawner = make_spawner(server="work")
    await spawner.start()
    await spawner.stop()
    spawner.clear_state()
    await spawner.delete_forever()
    # The reference hub says homes.on_delete: keep.
    assert backend.deleted == [(ServerIdentity(user="alice", server="work"), "hub", False)]
    assert "home_generation" not in spawner.get_state()


async def test_delete_forever_deletes_homes_when_the_instance_says(
    backend: HomesBackend, tmp_path: Any
) -> None:
    import shutil

    from .test_spawner import PROFILES

    folder = tmp_path / "hub"
    shutil.copytree(PROFILES / "hub", folder)
    instance_file = folder / "instance.yaml"
    instance_file.write_text(instance_file.read_text().replace("on_delete: keep", "on_delete: delete"))
    spawner = make_spawner(server="work", profiles_dir=str(folder))
    await spawner.delete_forever()
    assert backend.deleted == [(ServerIdentity(user="alice", server="work"), "hub", True)]


async def test_a_failed_delete_is_raised_for_jupyterhub_to_log(backend: HomesBackend) -> None:
    backend.delete_fails = "refused"
    spawner = make_spawner(server="work")
    with pytest.raises(BackendError, match="refused"):
        await spawner.delete_forever()
