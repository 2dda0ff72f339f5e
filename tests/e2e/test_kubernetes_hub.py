"""End to end on the Kubernetes backend: a real JupyterHub and proxy, EInfraSpawner, the
Kubernetes backend through kubernetes-asyncio, and the fake API server in process mode (each pod
runs jupyterhub-singleuser as a local process on its own 127.0.0.N address).
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from .conftest import Hub

pytestmark = pytest.mark.e2e


def harness_url(hub: Hub) -> str:
    """The fake API server's address, from the hub's log (the config starts it)."""
    log = hub.log_path.read_text(errors="replace")
    found: list[str] = re.findall(r"Kubernetes API at (http://127\.0\.0\.1:\d+)", log)
    if found:
        return found[-1]
    raise AssertionError("the hub did not log the fake API server's address")


def pods(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/namespaces/default/pods", timeout=10) as response:
        items: list[dict[str, Any]] = json.load(response)["items"]
    return items


def test_a_pod_answers_through_the_proxy_then_goes(k8s_hub: Hub) -> None:
    response = k8s_hub.spawn("ben", "", {"profile": "jupyterlab", "cpu": "2", "gpu": "none"})
    assert response.status in (201, 202), response.text
    url = harness_url(k8s_hub)  # logged once the backend first talks to the API
    (pod,) = [p for p in pods(url) if p["metadata"]["annotations"]["einfra-spawner/username"] == "ben"]
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIP"].startswith("127.0.0.")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    status = k8s_hub.request("GET", "/user/ben/api/status")
    assert status.status == 200, status.text
    k8s_hub.stop_server("ben")
    assert [p for p in pods(url) if p["metadata"]["annotations"]["einfra-spawner/username"] == "ben"] == []


def test_a_gpu_that_is_not_free_fails_fast_with_the_reason(k8s_hub: Hub) -> None:
    # grace may choose an H100; the harness's cluster has two, so the third is refused plainly.
    first = k8s_hub.spawn("grace", "h1", {"gpu": "h100"})
    second = k8s_hub.spawn("grace", "h2", {"gpu": "h100"})
    assert first.status in (201, 202) and second.status in (201, 202), (first.text, second.text)
    third = k8s_hub.ask_start("grace", "h3", {"gpu": "h100"})
    assert third.status == 503, third.text
    assert third.body["message"] == (
        "No NVIDIA H100 is free right now (0 of 2); choose another GPU type or try later."
    )
    for name in ("h1", "h2"):
        k8s_hub.stop_server("grace", name)
    owners = [p["metadata"]["annotations"]["einfra-spawner/username"] for p in pods(harness_url(k8s_hub))]
    assert "grace" not in owners


def test_registered_storage_credentials_are_mounted(k8s_hub: Hub) -> None:
    # The demo registered sshfs credentials (a per-user secret) for ada, who is in "meta".
    response = k8s_hub.spawn("ada", "meta", {"mounts": ["metacentrum"]})
    assert response.status in (201, 202), response.text
    url = harness_url(k8s_hub)
    (pod,) = [p for p in pods(url) if p["metadata"]["name"].startswith("jupyter-ada-meta-")]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "mount-metacentrum"]
    # The seed's sshfs storage is a PersistentVolume of the server's own, bound to its claim, and
    # the driver finds the key in privateKey (<namespace>/<secret>).
    claim = volume["persistentVolumeClaim"]["claimName"]
    with urllib.request.urlopen(f"{url}/api/v1/persistentvolumes/{claim}", timeout=10) as response:
        pv = json.load(response)
    assert pv["spec"]["csi"]["volumeAttributes"]["privateKey"].startswith("default/sshfs-u-ada-")
    assert pv["spec"]["claimRef"]["name"] == claim
    k8s_hub.stop_server("ada", "meta")
