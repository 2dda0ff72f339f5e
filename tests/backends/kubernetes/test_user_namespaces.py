"""Per-user namespaces: created on first start, one per user, watched by one shared watch."""

from __future__ import annotations

from einfra_spawner import ServerIdentity
from einfra_spawner.testing import FakeKubernetes

from .conftest import BackendFactory, MakeRequest


async def test_each_user_gets_a_namespace_of_their_own(
    cluster: FakeKubernetes, backend_factory: BackendFactory, make_request: MakeRequest
) -> None:
    backend = backend_factory(user_namespaces=True)
    namespaces = {user: backend.namespace_for(ServerIdentity(user=user)) for user in ("ada", "Ada", "Čeněk")}
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
