"""The pytest fixtures, and the pure pieces (quantities, selectors) behind them."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_asyncio import client

from einfra_spawner.testing import FakeKubernetes, QuantityError, parse_quantity
from einfra_spawner.testing._selectors import parse_field_selector, parse_label_selector
from einfra_spawner.testing._status import ApiError
from einfra_spawner.testing.pytest_plugin import KubeTarget

from .core_v1 import CoreV1


async def test_default_nodes(fake_k8s: FakeKubernetes) -> None:
    products = {
        node["metadata"]["labels"].get("nvidia.com/gpu.product") for node in fake_k8s.objects("nodes")
    }
    assert {"NVIDIA-A10", "NVIDIA-A40", "NVIDIA-A100-80GB-PCIe", "NVIDIA-H100-PCIe", None} <= products
    allocatable: dict[str, int] = {}
    for node in fake_k8s.objects("nodes"):
        for name, value in node["status"]["allocatable"].items():
            if name.startswith("nvidia.com/"):
                allocatable[name] = allocatable.get(name, 0) + int(value)
    assert allocatable["nvidia.com/mig-1g.10gb"] > 0 and allocatable["nvidia.com/mig-2g.20gb"] > 0


@pytest.mark.fake_k8s(namespaces=["course"], validate=False)
async def test_the_marker_passes_options(fake_k8s: FakeKubernetes, k8s_api_client: client.ApiClient) -> None:
    assert fake_k8s.api.validator is None
    namespaces = await CoreV1(k8s_api_client).list_namespace()
    assert "course" in {n.metadata.name for n in namespaces.items}


@pytest.fixture
def without_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EINFRA_TEST_KUBECONFIG", raising=False)


async def test_k8s_target_is_the_fake_without_a_kubeconfig(
    without_cluster: None, k8s_target: KubeTarget
) -> None:
    assert k8s_target.is_fake and k8s_target.fake is not None
    assert k8s_target.configuration.host == k8s_target.fake.url


@pytest.fixture
def cluster_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """EINFRA_TEST_KUBECONFIG naming a "real" cluster (here: any URL; nothing connects)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://cluster.example:6443'}}]\n"
        "users: [{name: u, user: {token: not-a-real-token}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    monkeypatch.setenv("EINFRA_TEST_KUBECONFIG", str(path))
    monkeypatch.setenv("EINFRA_TEST_NAMESPACE", "e2e")
    yield path


async def test_k8s_target_uses_the_given_kubeconfig(cluster_kubeconfig: Path, k8s_target: KubeTarget) -> None:
    assert not k8s_target.is_fake
    assert k8s_target.configuration.host == "https://cluster.example:6443"
    assert k8s_target.namespace == "e2e"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Fraction(1, 10)),
        ("2", Fraction(2)),
        ("1.5Gi", Fraction(3 * 2**29)),
        ("1e3", Fraction(1000)),
        ("1E", Fraction(10**18)),
        ("64Mi", Fraction(64 * 2**20)),
        (".5", Fraction(1, 2)),
        (4, Fraction(4)),
        (0.25, Fraction(1, 4)),
    ],
)
def test_quantities(text: Any, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "1 GB", "1GB", "1Kb", "", "1.2.3", "Gi", True, None])
def test_not_quantities(text: Any) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti"]),
)
def test_every_integer_with_a_suffix_is_a_quantity(number: int, suffix: str) -> None:
    assert parse_quantity(f"{number}{suffix}") >= number * (Fraction(1, 1000) if suffix == "m" else 1)


@given(st.text(alphabet="abcxyz019-._/ =!(),", max_size=30))
def test_label_selectors_parse_or_refuse_with_400(text: str) -> None:
    try:
        selector = parse_label_selector(text)
    except ApiError as error:
        assert error.code == 400
    else:
        selector.matches({"metadata": {"labels": {"a": "b"}}})


def test_selector_semantics() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "hub", "n": "5"}},
        "status": {"phase": "Running"},
        "spec": {},
    }
    assert parse_label_selector("app=hub,n>3,!missing").matches(pod)
    assert not parse_label_selector("app notin (hub,x)").matches(pod)
    assert parse_label_selector("missing!=x").matches(pod)
    assert parse_field_selector("pods", "status.phase=Running,spec.nodeName=").matches(pod)
    with pytest.raises(ApiError):
        parse_field_selector("secrets", "status.phase=Running")
