"""Per-user namespaces: created on first start, one per user, watched by one shared watch; a
prefix that cannot begin a namespace name is refused when the configuration is loaded."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from einfra_spawner import ServerIdentity
from einfra_spawner.names import is_dns1123_label
from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes import KubernetesBackend
from einfra_spawner_kubernetes.backend import USER_NAMESPACE_PREFIX_MAX

from .conftest import BackendFactory, MakeRequest


def namespace_of(backend: KubernetesBackend, user: str) -> str:
    """The namespace of ``user``'s servers (a Kubernetes backend always names one)."""
    namespace = backend.namespace_for(ServerIdentity(user=user))
    assert namespace is not None
    return namespace


async def test_each_user_gets_a_namespace_of_their_own(
    cluster: FakeKubernetes, backend_factory: BackendFactory, make_request: MakeRequest
) -> None:
    backend = backend_factory(user_namespaces=True)
    namespaces = {user: namespace_of(backend, user) for user in ("ada", "Ada", "Čeněk")}
    assert len(set(namespaces.values())) == 3
    assert namespaces["Čeněk"].startswith("jupyter-cenek-")
    started = {}
    for user, namespace in namespaces.items():
        for server in ("", "two"):
            request = make_request(user=user, server=server, namespace=namespace, request={"mounts": []})
            started[(user, server)] = (request, await backend.start(request))
    for user, namespace in namespaces.items():
        assert cluster.get("namespaces", "", namespace) is not None
        owners = [
            p["metadata"]["annotations"]["einfra-spawner/username"]
            for p in cluster.objects("pods", namespace)
        ]
        assert owners == [user, user]  # both servers of this user, and only theirs
    # One namespace creation per user: later starts remember it in their state.
    assert cluster.request_count("create", "namespaces") == 3
    watches = cluster.request_count("watch", "pods")
    assert watches == 1  # one shared watch across every user's namespace
    for request, result in started.values():
        assert await backend.poll(request.identity, result.state) is None
        await backend.stop(request.identity, result.state)
    for namespace in namespaces.values():
        assert cluster.objects("pods", namespace) == []


@pytest.mark.parametrize("prefix", ["jupyter", "jh", "x", "hub-2", "a" * USER_NAMESPACE_PREFIX_MAX])
def test_a_usable_prefix_gives_valid_namespace_names(prefix: str) -> None:
    settings = {"user_namespaces": True, "user_namespace_prefix": prefix}
    backend = KubernetesBackend(config=Config({"KubernetesBackend": settings}))
    for user in ("ada", "Čeněk Šťastný", "x" * 200, "@@@", "a.b_c+d@example.org"):
        namespace = backend.namespace_for(ServerIdentity(user=user))
        assert namespace is not None and is_dns1123_label(namespace), namespace
        assert namespace.startswith(f"{prefix}-")


TOO_LONG = "a" * (USER_NAMESPACE_PREFIX_MAX + 1)
REFUSED = ["", "Jupyter", "jupyter-", "-jupyter", "jupyter_hub", "jupyter.hub", TOO_LONG]


@pytest.mark.parametrize("prefix", REFUSED)
def test_a_prefix_that_cannot_begin_a_namespace_name_is_refused_with_the_rule(prefix: str) -> None:
    # Such a prefix used to give namespace names the API server refuses (or longer than 63).
    with pytest.raises(TraitError) as refused:
        KubernetesBackend(config=Config({"KubernetesBackend": {"user_namespace_prefix": prefix}}))
    message = str(refused.value)
    assert f"user_namespace_prefix = {prefix!r}" in message
    assert f"1 to {USER_NAMESPACE_PREFIX_MAX} lower-case letters, digits or '-'" in message
