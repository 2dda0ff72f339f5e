"""The harness in its own process: ``python -m einfra_spawner.testing`` and its Python helper."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from kubernetes_asyncio import client, config, watch

from einfra_spawner.testing import FakeKubernetesProcess, FakeNode, default_nodes, dump_nodes
from einfra_spawner.testing import load_nodes as load_nodes_file

from .core_v1 import CoreV1
from .manifests import gpu_pod


async def test_a_separate_process_serves_and_stops(tmp_path: Path) -> None:
    nodes_file = tmp_path / "nodes.yaml"
    nodes_file.write_text(
        dump_nodes(
            [
                FakeNode("cpu-1"),
                FakeNode(
                    "gpu-1", gpus={"nvidia.com/gpu": 1}, labels={"nvidia.com/gpu.product": "NVIDIA-A40"}
                ),
            ]
        )
    )
    kubeconfig = tmp_path / "kubeconfig"
    async with FakeKubernetesProcess(nodes_file=nodes_file, kubeconfig=kubeconfig, latency_ms=1) as server:
        assert server.url.startswith("http://127.0.0.1:")
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
        )
        assert configuration.host == server.url
        async with client.ApiClient(configuration) as api:
            v1 = CoreV1(api)
            assert [n.metadata.name for n in (await v1.list_node()).items] == ["cpu-1", "gpu-1"]
            await v1.create_namespaced_pod("default", gpu_pod("nb", "NVIDIA-A40"))
            async with watch.Watch() as stream:
                async for event in stream.stream(v1.list_namespaced_pod, "default", timeout_seconds=10):
                    if event["raw_object"]["status"].get("phase") == "Running":
                        assert event["raw_object"]["spec"]["nodeName"] == "gpu-1"
                        break
            stats = await server.stats()
            assert {"verb": "create", "resource": "pods", "count": 1} in stats["requests"]
            assert stats["objects"]["pods"] == 1
            await server.inject_fault(503, verb="get", resource="pods")
            try:
                await v1.read_namespaced_pod("nb", "default")
            except client.ApiException as error:
                assert error.status == 503
            else:
                raise AssertionError("the injected fault was not served")
            assert await server.drop_watches() == 0
            await server.compact()
            assert (await server.reset_stats())["total"] == 0
        pid = server.pid
    assert pid is not None
    await asyncio.sleep(0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError("the server process is still running")


def test_default_nodes_command_prints_loadable_yaml(tmp_path: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "einfra_spawner.testing", "default-nodes"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    path = tmp_path / "nodes.yaml"
    path.write_text(printed)
    assert [n.name for n in load_nodes_file(path)] == [n.name for n in default_nodes()]
    assert load_nodes_file(path)[3].gpus == {"nvidia.com/gpu": 4}
