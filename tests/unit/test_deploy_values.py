"""deploy/: the Zero to JupyterHub values, the network policies and the instances they install.

What the chart reads is checked in three ways:

* against the chart's own values schema, per supported chart version, after merging the chart's
  defaults with our values as Helm does (test data: tests/data/z2jh/README.md; those tests skip
  here, where the chart cannot be fetched, and run in scripts/kind-up);
* for agreement with the docs and the renderer: the Python of ``hub.extraConfig`` compiles and,
  run against each instance, configures EInfraSpawner on the Kubernetes backend; the profile
  ConfigMap is mounted where that Python looks; the image is the one the Dockerfile builds;
* for what the network policies let through, by a small evaluator of NetworkPolicy rules below
  (our reading of the Kubernetes rules, not the cluster's): the servers reach DNS, the hub and the
  internet and nothing private; the hub admits the servers, in its namespace and in the per-user
  namespaces the Kubernetes backend creates (their labels read from the fake API server).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from traitlets.config import Config

from einfra_spawner import UserContext, load_profiles, render_manifests, resolve_options, validate_paths
from einfra_spawner.render import ServerIdentity, SingleUser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
WALK_THROUGH = REPO / "docs" / "deploy" / "zero-to-jupyterhub.md"
KIND_PAGE = REPO / "docs" / "deploy" / "kind.md"
CHART_DATA = REPO / "tests" / "data" / "z2jh"

#: The chart versions whose values schema deploy/ is checked against (scripts/kind-up pulls the same).
SUPPORTED_CHARTS = ("4.2.0", "4.4.0")
#: The instances in deploy/ and the repository's reference instance, each a folder the hub can load.
INSTANCES = {
    "minimal": DEPLOY / "minimal" / "profiles",
    "kind": DEPLOY / "kind" / "profiles",
    "hub": REPO / "profiles" / "hub",
}
#: The namespace every file in deploy/ names ("replace jhub with yours").
HUB_NAMESPACE = "jhub"
#: The hub pod's port of the GPU figures service (hub.extraConfig, hub.service, the hub's policy).
GPU_FIGURES_PORT = 8082

# Top-level keys of the chart's values (chart 4.x) these files may set: our own list, a guard
# that runs everywhere; the chart's schema, where it is at hand, is the real check.
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


def read_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), path
    return loaded


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return read_yaml(DEPLOY / "z2jh-values.yaml")


def mount_path(values: dict[str, Any]) -> str:
    (volume,) = values["hub"]["extraVolumes"]
    (mount,) = values["hub"]["extraVolumeMounts"]
    assert mount["name"] == volume["name"]
    assert mount["readOnly"] is True
    return str(mount["mountPath"])


def rendered_pod(folder: Path, user: str = "ada", namespace: str = HUB_NAMESPACE) -> dict[str, Any]:
    profiles = load_profiles(folder)
    options = resolve_options(profiles, UserContext(name=user, groups=frozenset()), {})
    identity = ServerIdentity(user=user, server="", namespace=namespace)
    return render_manifests(options, identity, SingleUser()).pod


# --- the chart's values schema -------------------------------------------------------------------


def chart_files(version: str) -> tuple[Path, Path] | None:
    """The chart's default values and values schema for ``version``, where they can be found."""
    folders = [CHART_DATA / version]
    charts = os.environ.get("EINFRA_Z2JH_CHARTS")
    if charts:
        folders.insert(0, Path(charts) / version / "jupyterhub")
    for folder in folders:
        defaults, schema = folder / "values.yaml", folder / "values.schema.json"
        if defaults.is_file() and schema.is_file():
            return defaults, schema
    return None


def merge_values(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of values: maps merge key by key, anything else replaces, ``null`` removes."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_merge_values_follows_helm() -> None:
    defaults = {"hub": {"image": {"name": "a", "tag": "1"}, "extraVolumes": [1, 2]}, "cull": {"on": True}}
    overrides = {"hub": {"image": {"tag": "2"}, "extraVolumes": [3]}, "cull": None}
    assert merge_values(defaults, overrides) == {
        "hub": {"image": {"name": "a", "tag": "2"}, "extraVolumes": [3]}
    }


def schema_errors(defaults_path: Path, schema_path: Path, overlays: tuple[Path, ...]) -> list[str]:
    """What the chart's schema refuses in its defaults merged with ``overlays``, one line each."""
    import jsonschema  # type: ignore[import-untyped]  # jsonschema ships no type hints

    merged = read_yaml(defaults_path)
    for overlay in overlays:
        merged = merge_values(merged, read_yaml(overlay))
    schema = json.loads(schema_path.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(merged), key=lambda e: list(map(str, e.path)))
    return [f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors]


@pytest.mark.parametrize("overlays", [("z2jh-values.yaml",), ("z2jh-values.yaml", "kind/values.yaml")])
@pytest.mark.parametrize("version", SUPPORTED_CHARTS)
def test_the_merged_values_pass_the_charts_schema(version: str, overlays: tuple[str, ...]) -> None:
    found = chart_files(version)
    if found is None:
        if os.environ.get("EINFRA_Z2JH_CHARTS"):
            pytest.fail(f"chart {version} is not in $EINFRA_Z2JH_CHARTS/{version}/jupyterhub/")
        pytest.skip(f"the values schema of chart {version} is not here: see tests/data/z2jh/README.md")
    errors = schema_errors(*found, tuple(DEPLOY / overlay for overlay in overlays))
    assert not errors, "\n".join(errors)


def test_the_schema_check_finds_what_a_schema_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machinery of the test above, on a made-up schema (not the chart's): it finds the files
    where scripts/kind-up puts them and reports each refused key with its path."""
    chart = tmp_path / "9.9.9" / "jupyterhub"
    chart.mkdir(parents=True)
    (chart / "values.yaml").write_text("hub: {image: {name: x, tag: '1'}}\ncull: {enabled: true}\n")
    (chart / "values.schema.json").write_text(
        json.dumps(
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "hub": {"type": "object", "properties": {"image": {"type": "object"}}},
                    "cull": {"type": "object"},
                },
            }
        )
    )
    monkeypatch.setenv("EINFRA_Z2JH_CHARTS", str(tmp_path))
    found = chart_files("9.9.9")
    assert found == (chart / "values.yaml", chart / "values.schema.json")
    overlay = tmp_path / "ours.yaml"
    overlay.write_text("hub: {image: {tag: '2'}}\nproxy: {chp: {}}\ncull: null\n")
    assert schema_errors(*found, (overlay,)) == [
        "(top): Additional properties are not allowed ('proxy' was unexpected)"
    ]


# --- the values, the image, the docs -------------------------------------------------------------


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
        "service",
    }
    assert set(hub.get("service", {})) <= {"extraPorts"}  # the chart's Service otherwise as it is
    assert set(hub["image"]) <= {"name", "tag", "pullPolicy", "pullSecrets"}
    assert isinstance(hub["image"]["tag"], str)  # a number-like tag must stay a string
    assert set(hub["networkPolicy"]) == {"ingress"}  # added to the chart's rules, none replaced
    assert set(values["proxy"]["chp"]["networkPolicy"]) == {"egress"}
    assert values["prePuller"] == {"hook": {"enabled": False}, "continuous": {"enabled": False}}


def test_the_profiles_come_from_a_config_map_mounted_read_only(values: dict[str, Any]) -> None:
    (volume,) = values["hub"]["extraVolumes"]
    name = volume["configMap"]["name"]
    assert mount_path(values).startswith("/")
    # The walk-through creates the ConfigMap under the same name, from the minimal instance.
    assert (
        f"kubectl create configmap {name} --namespace {HUB_NAMESPACE} --from-file=deploy/minimal/profiles/"
        in WALK_THROUGH.read_text()
    )


def test_extra_config_compiles(values: dict[str, Any]) -> None:
    extra = values["hub"]["extraConfig"]
    assert extra and all(isinstance(code, str) for code in extra.values())
    for name, code in extra.items():
        compile(code, f"hub.extraConfig.{name}", "exec")


@pytest.mark.parametrize("instance", sorted(INSTANCES))
def test_extra_config_configures_the_spawner_from_the_mounted_folder(
    values: dict[str, Any], instance: str
) -> None:
    from einfra_spawner.spawner import EInfraSpawner

    folder = mount_path(values)
    (code,) = values["hub"]["extraConfig"].values()
    assert f'"{folder}"' in code
    local = str(INSTANCES[instance])
    c = Config()
    exec(compile(code.replace(folder, local), "extraConfig", "exec"), {"c": c})
    assert c.JupyterHub.spawner_class is EInfraSpawner
    assert c.EInfraSpawner.profiles_dir == local
    assert c.EInfraSpawner.backend == "kubernetes"
    servers = load_profiles(local).instance.servers_per_user
    assert bool(c.JupyterHub.get("allow_named_servers", False)) is (servers > 1)
    assert c.EInfraSpawner.start_timeout >= 300
    # The GPU figures service, where the proxy reaches it through the hub's Service.
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "gpus"]
    assert service["url"] == f"http://hub:{GPU_FIGURES_PORT}"
    assert {"name": "user", "scopes": ["self", "access:services!service=gpus"]} in c.JupyterHub.load_roles


def test_the_image_is_the_one_the_dockerfile_builds(values: dict[str, Any]) -> None:
    import einfra_spawner

    dockerfile = (DEPLOY / "hub-image" / "Dockerfile").read_text()
    (chart,) = re.findall(r"^ARG Z2JH_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert chart in SUPPORTED_CHARTS
    assert "FROM quay.io/jupyterhub/k8s-hub:${Z2JH_VERSION}" in dockerfile
    assert dockerfile.rstrip().splitlines()[-1] == "USER 1000"  # never run the hub as root
    image = values["hub"]["image"]
    assert image["tag"] == f"{chart}-{einfra_spawner.__version__}"
    assert f"--version {chart} " in (DEPLOY / "z2jh-values.yaml").read_text()
    assert f"-t registry.example.org/jupyter/k8s-hub:{image['tag']} dist/" in WALK_THROUGH.read_text()


def test_the_instances_in_deploy_are_valid_and_need_nothing_from_a_site() -> None:
    """The minimal instance runs on any cluster: the default storage class, ReadWriteOnce, a
    public image, no GPU, no mount, no group. The kind instance asks only for what kind-up makes."""
    assert validate_paths([INSTANCES["minimal"], INSTANCES["kind"]]) == []
    minimal = load_profiles(INSTANCES["minimal"])
    assert minimal.instance.gpu_types == {}
    for profile in minimal.profiles:
        assert profile.groups == ()
        assert profile.mounts == ()
        assert profile.node_selector == {} and profile.tolerations == ()
        assert profile.home is not None
        assert profile.home.storage_class is None
        assert profile.home.access_modes == ("ReadWriteOnce",)
        assert all(choice.image.startswith("quay.io/jupyter/") for choice in profile.image.choices)
    kind = load_profiles(INSTANCES["kind"])
    for profile in kind.profiles:
        assert profile.home is not None
        assert (profile.home.storage_class, profile.home.access_modes) == ("standard", ("ReadWriteOnce",))


def test_the_walk_through_lists_what_the_reference_hub_needs_from_a_site() -> None:
    """Everything profiles/hub takes from the cluster is named on the page: storage classes, CSI
    drivers, per-user secrets, existing claims, pull secrets, priority classes, service accounts,
    image registries, node labels, GPU resources, and the groups that gate choices."""
    page = WALK_THROUGH.read_text()
    hub = load_profiles(INSTANCES["hub"])
    needs: set[str] = set()
    for profile in hub.profiles:
        if profile.home is not None and profile.home.storage_class:
            needs.add(profile.home.storage_class)
            needs.update(profile.home.access_modes)
        for mount in profile.mounts:
            if mount.csi is not None:
                needs.add(mount.csi.driver)
                if mount.csi.secret:
                    needs.add(mount.csi.secret)
            if mount.pv is not None:
                needs.add(mount.pv.driver)
                if mount.pv.storage_class:
                    needs.add(mount.pv.storage_class)
                if mount.pv.secret:
                    needs.add(mount.pv.secret)
            if mount.pvc is not None:
                needs.add(mount.pvc.claim_name)
            needs.update(mount.groups)
        for choice in profile.image.choices:
            needs.add(choice.image.split("/", 1)[0])
            needs.update(choice.groups)
        for gpu_choice in profile.gpu.choices:
            needs.update(gpu_choice.groups)
        needs.update(profile.groups)
    pods = [hub.instance.pod, *(p.pod for p in hub.profiles)]
    pods += [gpu.pod for gpu in hub.instance.gpu_types.values()]
    for pod in pods:
        needs.update(pod.image_pull_secrets)
        if pod.priority_class_name:
            needs.add(pod.priority_class_name)
        if pod.service_account_name:
            needs.add(pod.service_account_name)
    for gpu in hub.instance.gpu_types.values():
        needs.add(gpu.resource)
        needs.update(f"{key}={value}" for key, value in gpu.node_selector.items())
    missing = sorted(need for need in needs if f"`{need}`" not in page)
    assert not missing, f"docs/deploy/zero-to-jupyterhub.md does not name: {missing}"


def test_the_walk_through_applies_the_single_user_network_policy() -> None:
    page = WALK_THROUGH.read_text()
    assert "kubectl apply -f deploy/netpol-singleuser.yaml" in page
    assert "deploy/z2jh-rbac-capacity-all-namespaces.yaml" in page
    assert "capacity_all_namespaces" in page


def test_the_kind_overlay() -> None:
    overlay = read_yaml(DEPLOY / "kind" / "values.yaml")
    assert set(overlay) <= CHART_KEYS
    assert set(overlay["hub"]) == {"config"}
    assert overlay["hub"]["config"]["JupyterHub"]["authenticator_class"] == "dummy"
    assert "scripts/kind-up" in KIND_PAGE.read_text()


# --- network policies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One end of a connection: an address and, for a pod, its namespace and labels."""

    ip: str
    namespace: str | None = None  # None: not a pod (an address outside the cluster's pods)
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)


def namespace_labels(name: str, **extra: str) -> dict[str, str]:
    """The labels of a namespace: the one Kubernetes gives every namespace, and ``extra``."""
    return {"kubernetes.io/metadata.name": name, **extra}


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, allowed = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if (
            (operator == "In" and labels.get(key) not in allowed)
            or (operator == "NotIn" and present and labels[key] in allowed)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def peer_matches(rule_peer: Mapping[str, Any], peer: Peer, policy_namespace: str) -> bool:
    block = rule_peer.get("ipBlock")
    if block is not None:
        # Whether an ipBlock also matches pod addresses depends on the network plugin: count it
        # as matching, so that a "denied" below holds on every plugin.
        address = ipaddress.ip_address(peer.ip)
        excluded = any(address in ipaddress.ip_network(cidr) for cidr in block.get("except") or [])
        return address in ipaddress.ip_network(block["cidr"]) and not excluded
    if peer.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        if not selects(rule_peer["namespaceSelector"], peer.namespace_labels):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return selects(rule_peer.get("podSelector") or {}, peer.labels)


def admits(
    rules: list[dict[str, Any]],
    peers_key: str,
    peer: Peer,
    port: int,
    protocol: str = "TCP",
    policy_namespace: str = HUB_NAMESPACE,
) -> bool:
    """Whether one of ``rules`` (ingress with "from", egress with "to") lets ``peer`` through."""
    for rule in rules:
        ports = rule.get("ports")
        port_ok = not ports or any(
            p.get("port", port) == port and p.get("protocol", "TCP") == protocol for p in ports
        )
        peers = rule.get(peers_key)
        peer_ok = not peers or any(peer_matches(p, peer, policy_namespace) for p in peers)
        if port_ok and peer_ok:
            return True
    return False


def test_the_policy_evaluator_reads_rules_as_kubernetes_does() -> None:
    rules = [{"from": [{"podSelector": {"matchLabels": {"a": "1"}}}], "ports": [{"port": 80}]}]
    same = Peer("10.0.0.1", HUB_NAMESPACE, {"a": "1"}, namespace_labels(HUB_NAMESPACE))
    other = Peer("10.0.0.2", "other", {"a": "1"}, namespace_labels("other"))
    assert admits(rules, "from", same, 80)
    assert not admits(rules, "from", same, 81)
    assert not admits(rules, "from", other, 80)  # a bare podSelector means: in the policy's namespace
    assert not admits(rules, "from", Peer("10.0.0.1"), 80)
    blocks = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]
    assert admits(blocks, "to", Peer("8.8.8.8"), 53, "UDP")
    assert not admits(blocks, "to", Peer("10.1.1.1"), 443)
    assert admits([{}], "to", Peer("10.1.1.1"), 1)  # an empty rule admits everything
    assert not admits([], "to", Peer("10.1.1.1"), 1)


# The chart's pods, with the labels its templates give them (chart 4.x, read in its source).
HUB_POD = Peer(
    "10.244.1.10",
    HUB_NAMESPACE,
    {
        "component": "hub",
        "app": "jupyterhub",
        "release": "jhub",
        "hub.jupyter.org/network-access-proxy-api": "true",
        "hub.jupyter.org/network-access-proxy-http": "true",
        "hub.jupyter.org/network-access-singleuser": "true",
    },
    namespace_labels(HUB_NAMESPACE),
)
PROXY_POD = Peer(
    "10.244.1.11",
    HUB_NAMESPACE,
    {
        "component": "proxy",
        "app": "jupyterhub",
        "release": "jhub",
        "hub.jupyter.org/network-access-hub": "true",
        "hub.jupyter.org/network-access-singleuser": "true",
    },
    namespace_labels(HUB_NAMESPACE),
)
DNS_POD = Peer("10.244.0.3", "kube-system", {"k8s-app": "kube-dns"}, namespace_labels("kube-system"))


@pytest.fixture(scope="module")
def singleuser_policy() -> dict[str, Any]:
    policy = read_yaml(DEPLOY / "netpol-singleuser.yaml")
    kubernetes_validate.validate(policy, "1.33", strict=True)
    assert policy["metadata"]["namespace"] == HUB_NAMESPACE
    return policy


@pytest.mark.parametrize("instance", sorted(INSTANCES))
def test_the_single_user_policy_selects_every_instances_servers(
    singleuser_policy: dict[str, Any], instance: str
) -> None:
    pod = rendered_pod(INSTANCES[instance])
    assert selects(singleuser_policy["spec"]["podSelector"], pod["metadata"]["labels"])
    assert set(singleuser_policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_only_the_hub_and_the_proxy_reach_a_server(singleuser_policy: dict[str, Any]) -> None:
    ingress = singleuser_policy["spec"]["ingress"]
    port = SingleUser().port
    assert admits(ingress, "from", HUB_POD, port)
    assert admits(ingress, "from", PROXY_POD, port)
    assert not admits(ingress, "from", HUB_POD, 22)
    # Another server, any other pod of the hub's namespace, the same labels elsewhere, the outside.
    server = rendered_pod(INSTANCES["minimal"], user="eve")
    assert not admits(ingress, "from", Peer("10.244.2.5", HUB_NAMESPACE, server["metadata"]["labels"]), port)
    elsewhere = Peer("10.244.2.6", "other", dict(HUB_POD.labels), namespace_labels("other"))
    assert not admits(ingress, "from", elsewhere, port)
    assert not admits(ingress, "from", Peer("203.0.113.7"), port)


def test_a_server_reaches_dns_the_hub_and_the_internet(singleuser_policy: dict[str, Any]) -> None:
    egress = singleuser_policy["spec"]["egress"]
    for protocol in ("UDP", "TCP"):
        assert admits(egress, "to", DNS_POD, 53, protocol)
        assert admits(egress, "to", Peer("10.96.0.10"), 53, protocol)  # a resolver at a private address
    assert admits(egress, "to", HUB_POD, 8081)
    assert admits(egress, "to", Peer("151.101.0.223"), 443)  # a package index
    assert admits(egress, "to", Peer("140.82.121.4"), 22)  # a git host


def test_a_server_reaches_nothing_private(singleuser_policy: dict[str, Any]) -> None:
    egress = singleuser_policy["spec"]["egress"]
    (internet,) = [rule for rule in egress if not rule.get("ports")]
    (block,) = internet["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert set(block["ipBlock"]["except"]) == {
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
    }
    for address, port in [
        ("169.254.169.254", 80),  # the cloud metadata server
        ("169.254.169.254", 443),
        ("10.96.0.1", 443),  # the Kubernetes API's service address
        ("10.0.0.5", 5432),  # a database of the site
        ("172.16.3.4", 80),
        ("192.168.1.1", 80),
        ("100.64.0.1", 80),
        ("169.254.20.10", 80),
    ]:
        assert not admits(egress, "to", Peer(address), port), address
    assert not admits(egress, "to", HUB_POD, 8000)  # the hub's API only
    assert not admits(egress, "to", PROXY_POD, 8001)  # not the proxy's API
    other = rendered_pod(INSTANCES["minimal"], user="eve")
    assert not admits(egress, "to", Peer("10.244.2.5", HUB_NAMESPACE, other["metadata"]["labels"]), 8888)


async def user_namespace_labels() -> tuple[str, dict[str, str], dict[str, str]]:
    """A server started by the Kubernetes backend with ``user_namespaces`` on (against the fake
    API server): its namespace, that namespace's labels and the pod's labels."""
    import logging

    from einfra_spawner.backend import StartRequest
    from einfra_spawner.testing import FakeKubernetes, FakeNode
    from einfra_spawner_kubernetes import KubernetesBackend

    async with FakeKubernetes(nodes=[FakeNode("node-1", cpu="8", memory="32Gi")]) as cluster:
        config = Config()
        config.KubernetesBackend.api_url = cluster.url
        config.KubernetesBackend.user_namespaces = True
        config.KubernetesBackend.delete_grace_seconds = 0
        backend = KubernetesBackend(config=config, log=logging.getLogger("test.deploy"))
        try:
            profiles = load_profiles(INSTANCES["minimal"])
            options = resolve_options(profiles, UserContext(name="ada", groups=frozenset()), {})
            namespace = str(backend.namespace_for(ServerIdentity(user="ada")))
            identity = ServerIdentity(user="ada", namespace=namespace)
            single_user = SingleUser()
            manifests = render_manifests(options, identity, single_user)
            request = StartRequest(
                identity=identity, options=options, manifests=manifests, single_user=single_user
            )
            started = await backend.start(request)
            made = cluster.get("namespaces", "", namespace)
            assert made is not None
            (pod,) = cluster.objects("pods", namespace)
            await backend.stop(identity, started.state)
        finally:
            await backend.close()
    return namespace, dict(made["metadata"]["labels"]), dict(pod["metadata"]["labels"])


async def test_the_hub_admits_servers_of_its_namespace_and_of_user_namespaces(
    values: dict[str, Any],
) -> None:
    ingress = values["hub"]["networkPolicy"]["ingress"]
    kubernetes_validate.validate(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "hub"},
            "spec": {"podSelector": {}, "ingress": ingress},
        },
        "1.33",
        strict=True,
    )
    hub_port = 8081
    own = rendered_pod(INSTANCES["minimal"])["metadata"]["labels"]
    in_hub_namespace = Peer("10.244.2.5", HUB_NAMESPACE, own, namespace_labels(HUB_NAMESPACE))
    assert admits(ingress, "from", in_hub_namespace, hub_port)
    assert not admits(ingress, "from", in_hub_namespace, 8000)

    namespace, ns_labels, pod_labels = await user_namespace_labels()
    assert namespace != HUB_NAMESPACE
    in_user_namespace = Peer("10.244.3.5", namespace, pod_labels, ns_labels)
    assert admits(ingress, "from", in_user_namespace, hub_port)
    # The same pod labels in a namespace the hub did not make are not enough.
    stranger = Peer("10.244.4.5", "other", pod_labels, namespace_labels("other"))
    assert not admits(ingress, "from", stranger, hub_port)
    # A pod of the hub's namespace that is no server gets nothing from these rules.
    assert not admits(ingress, "from", Peer("10.244.2.6", HUB_NAMESPACE, {"app": "x"}), hub_port)

    # The proxy may forward to the servers, in either place, on their port only.
    egress = values["proxy"]["chp"]["networkPolicy"]["egress"]
    port = SingleUser().port
    assert admits(egress, "to", in_hub_namespace, port)
    assert admits(egress, "to", in_user_namespace, port)
    assert not admits(egress, "to", stranger, port)
    assert not admits(egress, "to", in_hub_namespace, 22)


def test_only_the_proxy_reaches_the_gpu_figures_service(values: dict[str, Any]) -> None:
    (port,) = values["hub"]["service"]["extraPorts"]
    assert port["port"] == port["targetPort"] == GPU_FIGURES_PORT
    (code,) = values["hub"]["extraConfig"].values()
    assert f'GpuService(ip="0.0.0.0", port={GPU_FIGURES_PORT}, url="http://hub:{GPU_FIGURES_PORT}")' in code
    ingress = values["hub"]["networkPolicy"]["ingress"]
    assert admits(ingress, "from", PROXY_POD, GPU_FIGURES_PORT)
    server = Peer("10.244.2.5", HUB_NAMESPACE, rendered_pod(INSTANCES["minimal"])["metadata"]["labels"])
    assert not admits(ingress, "from", server, GPU_FIGURES_PORT)
    elsewhere = Peer("10.244.9.9", "other", dict(PROXY_POD.labels), namespace_labels("other"))
    assert not admits(ingress, "from", elsewhere, GPU_FIGURES_PORT)  # a podSelector alone: this namespace
