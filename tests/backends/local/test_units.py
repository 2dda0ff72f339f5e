"""The local backend's pure parts, and its configuration reference (the traits' help)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from traitlets import TraitType
from traitlets.config import Config

from einfra_spawner import ServerIdentity, SingleUser
from einfra_spawner.backend import Backend, load_backend_class
from einfra_spawner_local import (
    LocalBackend,
    choose_cpus,
    needs_allow_root,
    server_argv,
    server_env,
    service_url,
)
from einfra_spawner_local._procfs import listens, read_stat
from einfra_spawner_local._records import ServerRef, server_state

from .harness import hub_env, options


def test_allow_root_decision() -> None:
    assert needs_allow_root(0, None)
    assert needs_allow_root(0, "")
    assert not needs_allow_root(0, "jovyan")
    assert not needs_allow_root(1000, None)
    assert not needs_allow_root(1000, "jovyan")


def test_allow_root_is_added_once() -> None:
    single_user = SingleUser(cmd=("jupyterhub-singleuser",), args=("--debug",))
    assert server_argv(single_user, allow_root=False) == ["jupyterhub-singleuser", "--debug"]
    assert server_argv(single_user, allow_root=True)[-1] == "--allow-root"
    already = SingleUser(args=("--allow-root",))
    assert server_argv(already, allow_root=True).count("--allow-root") == 1


def test_service_url_keeps_the_hub_path() -> None:
    assert service_url("http://10.0.0.1:8888/user/ana/", None, 5) == "http://127.0.0.1:5/user/ana/"
    assert service_url(None, "/user/ana/gpu/", 5) == "http://127.0.0.1:5/user/ana/gpu/"
    assert service_url("", None, 5) == "http://127.0.0.1:5/"


def test_environment_precedence() -> None:
    identity = ServerIdentity(user="ana")
    resolved = dataclasses.replace(
        options({"cpu": "2", "memory": "8Gi"}),
        env=(("CPU_LIMIT", "99"), ("JUPYTERHUB_USER", "mallory"), ("COURSE", "r")),
    )
    env = server_env(
        resolved,
        SingleUser(env=hub_env(identity)),
        port=4321,
        home="/homes/ana",
        marker="m",
        fallback_path=None,
    )
    assert env["CPU_LIMIT"] == "2.0" and env["MEM_LIMIT"] == str(8 * 1024**3)
    assert env["JUPYTERHUB_USER"] == "ana" and env["COURSE"] == "r"
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:4321/user/ana/"
    assert env["HOME"] == "/homes/ana" and env["EINFRA_LOCAL_SERVER"] == "m"


def test_path_falls_back_to_the_hub_s() -> None:
    env = server_env(options(), SingleUser(), port=1, home="/h", marker="m", fallback_path="/usr/bin")
    assert env["PATH"] == "/usr/bin"


@given(
    st.lists(st.integers(0, 255), min_size=1, max_size=32, unique=True),
    st.integers(1, 40),
    st.dictionaries(st.integers(0, 255), st.integers(0, 5)),
)
def test_choose_cpus(available: list[int], wanted: int, load: dict[int, int]) -> None:
    chosen = choose_cpus(available, wanted, load)
    if wanted >= len(available):
        assert chosen is None
        return
    assert chosen is not None and len(chosen) == wanted and set(chosen) <= set(available)
    assert list(chosen) == sorted(chosen)
    # Never a busier CPU while a less busy one is left out.
    left_out = set(available) - set(chosen)
    assert max(load.get(c, 0) for c in chosen) <= min(load.get(c, 0) for c in left_out)


def test_read_stat_with_an_odd_command_name() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nopen('/proc/self/comm', 'w').write('a) (b c')\n"
            "print('named', flush=True)\ntime.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"named\n"
        stat = read_stat(child.pid)
        assert stat is not None and stat.ppid == os.getpid() and stat.alive
    finally:
        child.kill()
        child.communicate()
    assert read_stat(child.pid) is None


def test_listens() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listens([os.getpid()], port) is True
        assert listens([os.getppid()], port) is False
    assert listens([os.getpid()], port) is False


def test_state_round_trip_and_foreign_states() -> None:
    ref = ServerRef(1, 2, "boot", 3, "m", ("a40", 1), (0, 1))
    state = json.loads(json.dumps(server_state(ref, home=Path("/h"), log=Path("/l"))))
    assert ServerRef.from_state(state) == ref
    for foreign in ({}, {"pid": 1}, {**state, "pid": "1"}, {**state, "marker": None}):
        assert ServerRef.from_state(foreign) is None


def test_every_trait_is_documented() -> None:
    traits: dict[str, TraitType] = LocalBackend.class_traits(config=True)  # type: ignore[type-arg]
    assert {"home_root", "gpu_inventory", "start_timeout", "http_timeout", "run_as_user"} <= set(traits)
    assert {"enforce_limits", "stop_timeout", "log_root"} <= set(traits)
    for name, trait in traits.items():
        summary = (trait.help or "").strip().splitlines()
        assert summary and len(summary[0]) > 20, name
        assert "Default" in trait.help, name


def test_images_do_not_apply() -> None:
    assert LocalBackend.features.supports_images is False
    assert LocalBackend.features.description == "local processes"


def test_found_by_entry_point_and_built_like_a_backend() -> None:
    factory = load_backend_class("local")
    assert factory is LocalBackend
    backend = factory(
        config=Config({"LocalBackend": {"home_root": "/srv/homes"}}), log=logging.getLogger("x")
    )
    assert isinstance(backend, Backend)
    assert isinstance(backend, LocalBackend) and backend.home_root == "/srv/homes"
