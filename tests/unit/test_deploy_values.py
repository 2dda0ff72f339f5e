"""deploy/z2jh-values.yaml and deploy/hub-image/Dockerfile: what the Zero to JupyterHub chart reads.

No cluster and no Helm here, so the values are checked for the keys the chart expects and for
agreement with each other, the docs and the renderer: the Python of ``hub.extraConfig`` compiles
and, run against the repository's ``profiles/hub``, configures EInfraSpawner on the Kubernetes
backend; the profile ConfigMap is mounted where that Python looks; the network-policy rules are
valid Kubernetes rules that select the pods the renderer makes, on the port they listen on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from traitlets.config import Config

from einfra_spawner import UserContext, load_profiles, render_manifests, resolve_options
from einfra_spawner.render import ServerIdentity, SingleUser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
WALK_THROUGH = REPO / "docs" / "deploy" / "zero-to-jupyterhub.md"

# Top-level keys of the chart's values (chart 4.x) this file may set.
CHART_KEYS = {
    "hub",
    "proxy",
    "singleuser",
    "prePuller",
    "scheduling",
    "cull",
    "rbac",
    "ingress",
    "debug",
    "global",
    "custom",
    "imagePullSecret",
    "imagePullSecrets",
    "fullnameOverride",
    "nameOverride",
}


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "z2jh-values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def mount_path(values: dict[str, Any]) -> str:
    (volume,) = values["hub"]["extraVolumes"]
    (mount,) = values["hub"]["extraVolumeMounts"]
    assert mount["name"] == volume["name"]
    assert mount["readOnly"] is True
    return str(mount["mountPath"])


def test_only_keys_the_chart_knows(values: dict[str, Any]) -> None:
    assert set(values) <= CHART_KEYS
    hub = values["hub"]
    assert set(hub) <= {
        "image",
        "extraVolumes",
        "extraVolumeMounts",
        "extraConfig",
        "networkPolicy",
        "config",
    }
    assert set(hub["image"]) <= {"name", "tag", "pullPolicy", "pullSecrets"}
    assert isinstance(hub["image"]["tag"], str)  # a number-like tag must stay a string
    assert values["prePuller"] == {"hook": {"enabled": False}, "continuous": {"enabled": False}}


def test_the_profiles_come_from_a_config_map_mounted_read_only(values: dict[str, Any]) -> None:
    (volume,) = values["hub"]["extraVolumes"]
    name = volume["configMap"]["name"]
    assert mount_path(values).startswith("/")
    # The walk-through creates the ConfigMap under the same name.
    assert f"kubectl create configmap {name} " in WALK_THROUGH.read_text()


def test_extra_config_compiles(values: dict[str, Any]) -> None:
    extra = values["hub"]["extraConfig"]
    assert extra and all(isinstance(code, str) for code in extra.values())
    for name, code in extra.items():
        compile(code, f"hub.extraConfig.{name}", "exec")


def test_extra_config_configures_the_spawner_from_the_mounted_folder(values: dict[str, Any]) -> None:
    from einfra_spawner.spawner import EInfraSpawner

    folder = mount_path(values)
    (code,) = values["hub"]["extraConfig"].values()
    assert f'"{folder}"' in code
    local = str(REPO / "profiles" / "hub")
    c = Config()
    exec(compile(code.replace(folder, local), "extraConfig", "exec"), {"c": c})
    assert c.JupyterHub.spawner_class is EInfraSpawner
    assert c.EInfraSpawner.profiles_dir == local
    assert c.EInfraSpawner.backend == "kubernetes"
    assert c.JupyterHub.allow_named_servers is True  # profiles/hub: servers_per_user 5
    assert c.EInfraSpawner.start_timeout >= 300


def test_the_image_is_the_one_the_dockerfile_builds(values: dict[str, Any]) -> None:
    import einfra_spawner

    dockerfile = (DEPLOY / "hub-image" / "Dockerfile").read_text()
    (chart,) = re.findall(r"^ARG Z2JH_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert "FROM quay.io/jupyterhub/k8s-hub:${Z2JH_VERSION}" in dockerfile
    assert dockerfile.rstrip().splitlines()[-1] == "USER 1000"  # never run the hub as root
    image = values["hub"]["image"]
    assert image["tag"] == f"{chart}-{einfra_spawner.__version__}"
    assert f"--version {chart} " in (DEPLOY / "z2jh-values.yaml").read_text()


def test_network_policy_rules_admit_the_rendered_pods(values: dict[str, Any]) -> None:
    ingress = values["hub"]["networkPolicy"]["ingress"]
    egress = values["proxy"]["chp"]["networkPolicy"]["egress"]
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "check"},
        "spec": {"podSelector": {}, "ingress": ingress, "egress": egress},
    }
    kubernetes_validate.validate(policy, "1.33", strict=True)

    profiles = load_profiles(REPO / "profiles" / "hub")
    options = resolve_options(profiles, UserContext(name="ada", groups=frozenset(), admin=False), {})
    single_user = SingleUser()
    pod = render_manifests(options, ServerIdentity(user="ada", server=""), single_user).pod
    labels = pod["metadata"]["labels"]
    for rule, peers in ((ingress[0], "from"), (egress[0], "to")):
        (peer,) = rule[peers]
        assert peer["podSelector"]["matchLabels"].items() <= labels.items()
    assert egress[0]["ports"] == [{"port": single_user.port, "protocol": "TCP"}]
    assert ingress[0]["ports"] == [{"port": 8081, "protocol": "TCP"}]


def test_the_kind_overlay_and_instance() -> None:
    """deploy/kind/: the values added on a kind cluster, and the instance it installs."""
    from einfra_spawner import validate_paths

    overlay = yaml.safe_load((DEPLOY / "kind" / "values.yaml").read_text())
    assert set(overlay) <= CHART_KEYS
    assert set(overlay["hub"]) == {"config"}
    assert overlay["hub"]["config"]["JupyterHub"]["authenticator_class"] == "dummy"
    assert validate_paths([DEPLOY / "kind" / "profiles"]) == []
    kind_page = (REPO / "docs" / "deploy" / "kind.md").read_text()
    assert "--from-file=deploy/kind/profiles/" in kind_page
    assert "--values deploy/z2jh-values.yaml --values deploy/kind/values.yaml" in kind_page


def test_the_docs_build_the_image_the_values_name(values: dict[str, Any]) -> None:
    image = f"{values['hub']['image']['name']}:{values['hub']['image']['tag']}"
    kind_page = (REPO / "docs" / "deploy" / "kind.md").read_text()
    assert f"-t {image} dist/" in kind_page
    assert f"kind load docker-image {image} " in kind_page
