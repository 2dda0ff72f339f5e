"""Tests of the example backend against the harness (run: pytest docs/backends/example)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simple_pods import SimplePodsBackend
from traitlets.config import Config

from einfra_spawner import (
    ServerIdentity,
    SingleUser,
    UserContext,
    load_profiles,
    render_manifests,
    resolve_options,
)
from einfra_spawner.backend import Backend, StartRequest
from einfra_spawner.testing import FakeKubernetes

# Any instance folder will do; this is the repository's reference hub.
PROFILES = load_profiles(Path(__file__).resolve().parents[3] / "profiles" / "hub")


def start_request(user: str, request: dict[str, Any]) -> StartRequest:
    options = resolve_options(PROFILES, UserContext(name=user, groups=frozenset({"gpu"})), request)
    identity = ServerIdentity(user=user, namespace="default")
    single_user = SingleUser(env=(("JUPYTERHUB_USER", user),))
    return StartRequest(
        identity=identity,
        options=options,
        manifests=render_manifests(options, identity, single_user),
        single_user=single_user,
    )


def backend_for(fake_k8s: FakeKubernetes) -> SimplePodsBackend:
    config = Config()
    config.SimplePodsBackend.api_url = fake_k8s.url
    config.SimplePodsBackend.start_timeout = 10
    return SimplePodsBackend(config=config)


async def test_is_a_backend(fake_k8s: FakeKubernetes) -> None:
    assert isinstance(backend_for(fake_k8s), Backend)


async def test_start_poll_stop(fake_k8s: FakeKubernetes) -> None:
    backend = backend_for(fake_k8s)
    # No optional mounts: this example creates pods only (the shared scratch is a site's claim).
    started = await backend.start(start_request("ada", {"gpu": "a40", "mounts": []}))
    pod = fake_k8s.get("pods", "default", started.state["pod"])
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A40"}
    assert await backend.poll(ServerIdentity(user="ada"), started.state) is None
    await backend.stop(ServerIdentity(user="ada"), started.state)
    assert await backend.poll(ServerIdentity(user="ada"), started.state) == 0
