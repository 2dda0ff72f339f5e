"""Pod settings end to end: a real JupyterHub and proxy spawn through the Kubernetes backend into
the fake API server (process mode); the pod it creates carries the instance's, the profile's and
the GPU type's settings, and the server still answers through the proxy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import yaml

from .conftest import REPOSITORY, Hub
from .test_kubernetes_hub import harness_url, pods

pytestmark = pytest.mark.e2e

INSTANCE_POD = {
    "labels": {"example.org/team": "research"},
    "annotations": {"example.org/contact": "ops@example.org"},
    "service_account_name": "singleuser",
    "env": {"SCRATCH": "/scratch/{user}/{server}"},
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
            ]
        }
    },
}
PROFILE_POD = {
    "image_pull_policy": "Always",
    "init_containers": [{"name": "seed", "image": "cerit.io/hubs/seed:1", "command": ["true"]}],
    "lifecycle": {"pre_stop": {"exec": ["sh", "-c", "true"]}},
    "pod_patch": {"spec": {"terminationGracePeriodSeconds": 5}},
    "container_patch": {"stdin": True},
}


@pytest.fixture(scope="module")
def settings_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("pod-settings-hub")
    profiles = root / "profiles"
    shutil.copytree(REPOSITORY / "profiles" / "hub", profiles)
    instance = yaml.safe_load((profiles / "instance.yaml").read_text())
    instance["pod"] = {**instance.get("pod", {}), **INSTANCE_POD}
    (profiles / "instance.yaml").write_text(yaml.safe_dump(instance))
    lab = yaml.safe_load((profiles / "jupyterlab.yaml").read_text())
    lab["pod"] = PROFILE_POD
    (profiles / "jupyterlab.yaml").write_text(yaml.safe_dump(lab))
    running = Hub(root=root, backend="kubernetes", profiles=profiles)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def test_a_hub_spawn_creates_a_pod_with_the_settings(settings_hub: Hub) -> None:
    response = settings_hub.spawn("ben", "", {"profile": "jupyterlab", "gpu": "none"})
    assert response.status in (201, 202), response.text
    url = harness_url(settings_hub)
    (pod,) = [p for p in pods(url) if p["metadata"]["annotations"]["einfra-spawner/username"] == "ben"]
    metadata, spec = pod["metadata"], pod["spec"]
    assert pod["status"]["phase"] == "Running"
    assert metadata["labels"]["example.org/team"] == "research"
    assert metadata["annotations"]["example.org/contact"] == "ops@example.org"
    # From the reference instance itself: a pull secret and a priority class.
    assert spec["imagePullSecrets"] == [{"name": "cerit-registry"}]
    assert spec["priorityClassName"] == "jupyter-singleuser"
    assert spec["serviceAccountName"] == "singleuser" and spec["automountServiceAccountToken"] is False
    assert spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spec["terminationGracePeriodSeconds"] == 5
    (init,) = spec["initContainers"]
    (notebook,) = spec["containers"]
    assert init["securityContext"] == notebook["securityContext"]
    assert notebook["imagePullPolicy"] == "Always" and notebook["stdin"] is True
    assert notebook["lifecycle"] == {"preStop": {"exec": {"command": ["sh", "-c", "true"]}}}
    env = {e["name"]: e["value"] for e in notebook["env"]}
    user_label = metadata["labels"]["einfra-spawner/user"]
    assert env["SCRATCH"].startswith(f"/scratch/{user_label}/s-")
    status = settings_hub.request("GET", "/user/ben/api/status")
    assert status.status == 200, status.text
    settings_hub.stop_server("ben")
    assert [p for p in pods(url) if p["metadata"]["annotations"]["einfra-spawner/username"] == "ben"] == []
