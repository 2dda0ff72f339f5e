"""Every Kubernetes manifest in deploy/ passes the Kubernetes schema (strict) and says what it grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFEST_FILES = sorted(p for p in DEPLOY.glob("*.yaml") if "kind:" in p.read_text())


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
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
