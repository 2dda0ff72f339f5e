"""End to end: a real JupyterHub deletes a named server (``DELETE .../servers/NAME`` with
``remove``), so it calls ``Spawner.delete_forever``. On the Kubernetes backend (the fake API
server in process mode) the server's own PersistentVolume and claim go, and its home is kept
(the reference hub says ``homes.on_delete: keep``): the server re-created with that name gets
the very same home back."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from .conftest import Hub, server_path
from .test_kubernetes_hub import harness_url

pytestmark = pytest.mark.e2e


def get(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            found: dict[str, Any] = json.load(response)
            return found
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def items(url: str) -> list[dict[str, Any]]:
    listed = get(url)
    assert listed is not None
    return list(listed["items"])


def servers_objects(url: str, server: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The claims and PersistentVolumes of ada's server ``server`` (by its annotations)."""

    def mine(obj: dict[str, Any]) -> bool:
        annotations = obj["metadata"].get("annotations") or {}
        return (
            annotations.get("einfra-spawner/username") == "ada"
            and annotations.get("einfra-spawner/servername") == server
        )

    claims = [c for c in items(f"{url}/api/v1/namespaces/default/persistentvolumeclaims") if mine(c)]
    volumes = [v for v in items(f"{url}/api/v1/persistentvolumes") if mine(v)]
    return claims, volumes


def test_deleting_a_named_server_removes_its_volume_and_keeps_its_home(k8s_hub: Hub) -> None:
    # ada is in "meta" and registered her sshfs credentials (einfra_spawner/demo/harness.py).
    started = k8s_hub.spawn("ada", "gone", {"mounts": ["metacentrum"]})
    assert started.status in (201, 202), started.text
    url = harness_url(k8s_hub)
    claims, volumes = servers_objects(url, "gone")
    components = sorted(c["metadata"]["labels"]["app.kubernetes.io/component"] for c in claims)
    assert components == ["singleuser-home", "singleuser-volume"]
    assert len(volumes) == 1
    (home,) = [
        c for c in claims if c["metadata"]["labels"]["app.kubernetes.io/component"] == "singleuser-home"
    ]
    k8s_hub.stop_server("ada", "gone")

    removed = k8s_hub.api("DELETE", server_path("ada", "gone"), {"remove": True})
    assert removed.status in (202, 204), removed.text
    k8s_hub.wait_for(lambda: k8s_hub.server("ada", "gone") is None, "ada/gone to be deleted")

    def volume_gone() -> bool:
        claims, volumes = servers_objects(url, "gone")
        return volumes == [] and all(
            c["metadata"]["labels"]["app.kubernetes.io/component"] == "singleuser-home" for c in claims
        )

    k8s_hub.wait_for(volume_gone, "the deleted server's PersistentVolume and claim to go")
    claims, _ = servers_objects(url, "gone")
    assert [c["metadata"]["uid"] for c in claims] == [home["metadata"]["uid"]]  # the home stays
    assert "Deleted" in k8s_hub.log_tail(400) and "its homes are kept" in k8s_hub.log_tail(400)

    # Re-created with the same name (a new spawner: JupyterHub deleted the old one's state), the
    # server finds its home again.
    again = k8s_hub.spawn("ada", "gone", {"mounts": []})
    assert again.status in (201, 202), again.text
    pod_home = [
        v["persistentVolumeClaim"]["claimName"]
        for p in items(f"{url}/api/v1/namespaces/default/pods")
        if p["metadata"]["annotations"].get("einfra-spawner/servername") == "gone"
        and p["metadata"]["annotations"].get("einfra-spawner/username") == "ada"
        for v in p["spec"]["volumes"]
        if v["name"] == "home"
    ]
    assert pod_home == [home["metadata"]["name"]]
    k8s_hub.stop_server("ada", "gone")


def test_on_the_local_backend_a_deleted_servers_home_is_kept(hub: Hub) -> None:
    """The same through JupyterHub on the local backend: the home folder stays (``keep``) and
    the server re-created with that name works in it again."""
    from einfra_spawner.names import ServerNames

    hub.ensure_user("lin")
    started = hub.spawn("lin", "kept", {"cpu": "1"})
    assert started.status in (201, 202), started.text
    home = hub.home_root / ServerNames("lin", "kept").home
    (home / "notes.txt").write_text("mine")
    hub.stop_server("lin", "kept")
    removed = hub.api("DELETE", server_path("lin", "kept"), {"remove": True})
    assert removed.status in (202, 204), removed.text
    hub.wait_for(lambda: hub.server("lin", "kept") is None, "lin/kept to be deleted")
    hub.wait_for(lambda: "its homes are kept" in hub.log_tail(400), "the deletion to be logged")
    assert (home / "notes.txt").read_text() == "mine"
    again = hub.spawn("lin", "kept", {"cpu": "1"})
    assert again.status in (201, 202), again.text
    assert (home / "notes.txt").read_text() == "mine"
    hub.stop_server("lin", "kept")
