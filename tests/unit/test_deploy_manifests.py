"""Every Kubernetes manifest in deploy/ (and its subfolders) passes the Kubernetes schema (strict) and
says what it grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: kind's own configuration is no Kubernetes object (test_kind_scripts.py checks it).
NOT_KUBERNETES = {"kind/cluster.yaml"}
MANIFEST_FILES = sorted(
    p
    for p in DEPLOY.rglob("*.yaml")
    if "kind:" in p.read_text() and str(p.relative_to(DEPLOY)) not in NOT_KUBERNETES
)


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_manifest_file_is_found() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in MANIFEST_FILES}
    assert {
        "rbac.yaml",
        "rbac-user-namespaces.yaml",
        "rbac-persistent-volumes.yaml",
        "z2jh-rbac.yaml",
        "z2jh-rbac-homes.yaml",
        "z2jh-rbac-user-namespaces.yaml",
        "z2jh-rbac-capacity-all-namespaces.yaml",
        "netpol-singleuser.yaml",
        "kind/namespaces.yaml",
    } <= names
    assert "z2jh-values.yaml" not in names  # Helm values, checked by test_deploy_values.py
    for path in DEPLOY.rglob("*.yaml"):
        if str(path.relative_to(DEPLOY)) not in NOT_KUBERNETES:
            for document in documents(path):
                assert not str(document.get("apiVersion", "")).endswith("x-k8s.io/v1alpha4"), path


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifests_are_valid(path: Path) -> None:
    for manifest in documents(path):
        kubernetes_validate.validate(manifest, "1.33", strict=True)


def test_the_hub_may_do_what_the_backend_does_and_no_more() -> None:
    (role,) = [d for d in documents(DEPLOY / "rbac.yaml") if d["kind"] == "Role"]
    grants = {resource: set(rule["verbs"]) for rule in role["rules"] for resource in rule["resources"]}
    assert grants["pods"] == {"get", "list", "watch", "create", "delete"}
    assert grants["events"] == {"get", "list", "watch"}
    assert "secrets" not in grants  # per-user secrets are referenced by pods, never read by the hub
    (cluster_role,) = [d for d in documents(DEPLOY / "rbac.yaml") if d["kind"] == "ClusterRole"]
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
    ]


def test_the_chart_hub_gets_the_same_node_read_and_nothing_else() -> None:
    """The chart already grants pods, PVCs and events; z2jh-rbac.yaml adds only the read of nodes,
    with the very ClusterRole of rbac.yaml, bound to the chart's service account ``hub``."""
    z2jh = documents(DEPLOY / "z2jh-rbac.yaml")
    assert sorted(d["kind"] for d in z2jh) == ["ClusterRole", "ClusterRoleBinding"]
    (role,) = [d for d in z2jh if d["kind"] == "ClusterRole"]
    (standalone,) = [d for d in documents(DEPLOY / "rbac.yaml") if d["kind"] == "ClusterRole"]
    assert role == standalone
    (binding,) = [d for d in z2jh if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == ["hub"]


def test_the_singleuser_network_policy_selects_the_rendered_pods() -> None:
    from einfra_spawner import UserContext, load_profiles, render_manifests, resolve_options
    from einfra_spawner.render import ServerIdentity

    (policy,) = documents(DEPLOY / "netpol-singleuser.yaml")
    profiles = load_profiles(DEPLOY.parent / "profiles" / "hub")
    options = resolve_options(profiles, UserContext(name="ada"), {})
    pod = render_manifests(options, ServerIdentity(user="ada", server="")).pod
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_the_optional_grants_are_bound_to_the_charts_hub_and_read_only_where_they_should() -> None:
    """capacity_all_namespaces: list and watch pods everywhere, nothing else. user_namespaces on
    the chart: the ClusterRole of rbac-user-namespaces.yaml, bound to the chart's ``hub``."""
    capacity = documents(DEPLOY / "z2jh-rbac-capacity-all-namespaces.yaml")
    (role,) = [d for d in capacity if d["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    (binding,) = [d for d in capacity if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("ServiceAccount", "hub")]

    (user_role,) = [d for d in documents(DEPLOY / "rbac-user-namespaces.yaml") if d["kind"] == "ClusterRole"]
    (z2jh_binding,) = documents(DEPLOY / "z2jh-rbac-user-namespaces.yaml")
    assert z2jh_binding["kind"] == "ClusterRoleBinding"
    assert z2jh_binding["roleRef"]["name"] == user_role["metadata"]["name"]
    assert [(s["kind"], s["name"]) for s in z2jh_binding["subjects"]] == [("ServiceAccount", "hub")]
    # With user namespaces, the pod read that capacity_all_namespaces needs is already there.
    pods = [rule for rule in user_role["rules"] if "pods" in rule["resources"]]
    assert {"list", "watch"} <= {verb for rule in pods for verb in rule["verbs"]}


def test_persistent_volumes_are_granted_apart_and_only_what_the_backend_does() -> None:
    """Per-server PVs (``pv:`` mounts) need a cluster-wide grant: it lives in a file of its own,
    and allows creating, reading back, listing by label and deleting PVs, nothing more."""
    docs = documents(DEPLOY / "rbac-persistent-volumes.yaml")
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get", "list", "create", "delete"]}
    ]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    for name in ("rbac.yaml", "rbac-user-namespaces.yaml"):
        roles = [d for d in documents(DEPLOY / name) if d["kind"] in ("Role", "ClusterRole")]
        grants = {r for role in roles for rule in role["rules"] for r in rule["resources"]}
        assert "persistentvolumes" not in grants, name
        pvc_verbs = {
            v
            for role in roles
            for rule in role["rules"]
            if "persistentvolumeclaims" in rule["resources"]
            for v in rule["verbs"]
        }
        # update: a reset that keeps the old home relabels it.
        assert pvc_verbs == {"get", "list", "watch", "create", "update", "delete"}, name
