"""GPU availability on the form and in the JSON route's body, from the Kubernetes backend against
the test harness (the fake API server): several GPU types, one of them fully taken by a running
server, one with no node at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest_asyncio
from traitlets.config import Config

from einfra_spawner.runtime import HubRuntime, use_runtime
from einfra_spawner.spawner import EInfraSpawner
from einfra_spawner.testing import FakeKubernetes, FakeNode

from ..backends.kubernetes.conftest import create_site_claims
from ..unit.test_form import RenderedForm
from ..unit.test_spawner import PROFILES


def product(name: str) -> dict[str, str]:
    return {"nvidia.com/gpu.product": name}


NODES = [
    FakeNode("cpu-1", cpu="32", memory="128Gi"),
    FakeNode("a40-1", cpu="64", memory="256Gi", gpus={"nvidia.com/gpu": 2}, labels=product("NVIDIA-A40")),
    FakeNode("a10-1", cpu="32", memory="128Gi", gpus={"nvidia.com/gpu": 2}, labels=product("NVIDIA-A10")),
    FakeNode(
        "h100-1", cpu="96", memory="1Ti", gpus={"nvidia.com/gpu": 1}, labels=product("NVIDIA-H100-PCIe")
    ),
    FakeNode(
        "mig-1", cpu="64", memory="512Gi", gpus={"nvidia.com/mig-1g.10gb": 7, "nvidia.com/mig-2g.20gb": 3}
    ),
]


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[FakeKubernetes]:
    """The harness, and a fresh hub runtime (its backend's watches stopped and its ledgers
    closed before the harness goes away)."""
    runtime = HubRuntime()
    previous = use_runtime(runtime)
    try:
        async with FakeKubernetes(nodes=NODES) as k8s:
            await create_site_claims(k8s)  # the claims the reference hub mounts
            yield k8s
            await runtime.close()
    finally:
        use_runtime(previous)


def spawner_for(cluster: FakeKubernetes, server: str = "", **user_options: Any) -> EInfraSpawner:
    user = SimpleNamespace(
        name="ada", escaped_name="ada", groups=[SimpleNamespace(name="gpu")], admin=False, url="/user/ada/"
    )
    hub = SimpleNamespace(public_host="", api_url="http://127.0.0.1:8081/hub/api/", base_url="/hub/")
    orm_spawner = SimpleNamespace(
        name=server, display_name=server, user_options=dict(user_options), server=None
    )
    c = Config()
    c.EInfraSpawner.profiles_dir = str(PROFILES / "hub")
    c.EInfraSpawner.backend = "kubernetes"
    c.EInfraSpawner.usage_db_url = "sqlite://"
    c.KubernetesBackend.api_url = cluster.url
    c.KubernetesBackend.namespace = "default"
    c.KubernetesBackend.delete_grace_seconds = 1
    c.KubernetesBackend.capacity_cache_seconds = 0
    return EInfraSpawner(
        user=user,
        hub=hub,
        orm_spawner=orm_spawner,
        config=c,
        user_options=dict(user_options),
        oauth_client_id="jupyterhub-user-ada",
    )


async def test_the_form_and_the_route_show_free_and_total_gpus_per_type(cluster: FakeKubernetes) -> None:
    running = spawner_for(cluster, "big", gpu="h100", gpu_count=1)
    await running.run_pre_spawn_hook()
    await running.start()
    try:
        viewer = spawner_for(cluster)
        figures = await viewer.gpu_figures()
        assert figures == {
            "a10": {"free": 2, "total": 2, "note": "2 of 2 free"},
            "a100": {"free": 0, "total": 0, "note": "none on this cluster"},
            "a40": {"free": 2, "total": 2, "note": "2 of 2 free"},
            "h100": {"free": 0, "total": 1, "note": "0 of 1 free"},
            "mig-1g.10gb": {"free": 7, "total": 7, "note": "7 of 7 free"},
            "mig-2g.20gb": {"free": 3, "total": 3, "note": "3 of 3 free"},
        }
        html = await viewer.get_options_form()
        form = RenderedForm(html)
        assert "NVIDIA H100 (0 of 1 free, 120.00 CZK per GPU-hour)" in form.text  # busy: selectable
        assert "NVIDIA A40 (up to 2, 2 of 2 free, 38.00 CZK per GPU-hour)" in form.text
        # The cluster has no A100 at all: shown, disabled, with the reason.
        assert "NVIDIA A100 80GB (none on this cluster, 65.00 CZK per GPU-hour)" in form.text
        assert '<span data-einfra-gpu="h100">0 of 1 free</span>' in html
        assert "You use 1 of your 4 GPUs." in form.text  # the H100 server, from the ledger
    finally:
        await running.stop()
    assert (await spawner_for(cluster).gpu_figures())["h100"]["free"] == 1
