"""The fake API server's core/v1 semantics, through the real kubernetes_asyncio client."""

from __future__ import annotations

import base64
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from einfra_spawner.testing import FakeKubernetes

from .core_v1 import CoreV1, status_of, unloaded
from .manifests import pod_body, pvc_body, secret_body


async def raw(call: Awaitable[object]) -> tuple[int, Any]:
    """Status and JSON body of a call made with ``_preload_content=False``."""
    response = await unloaded(call)
    try:
        return response.status, await response.json()
    finally:
        response.release()


async def test_objects_deserialise_into_complete_models(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    created = await v1.create_namespaced_pod("default", pod_body("nb", labels={"app": "hub"}))
    assert isinstance(created, client.V1Pod)
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    assert created.metadata.creation_timestamp is not None
    assert created.spec.restart_policy == "Always" and created.status.phase == "Pending"
    await fake_k8s.wait_for_pod_phase("default", "nb", "Running")
    pod = await v1.read_namespaced_pod("nb", "default")
    assert pod.status.pod_ip and pod.status.host_ip
    (container,) = pod.status.container_statuses
    assert container.ready and container.state.running is not None
    assert {c.type for c in pod.status.conditions} >= {
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
    }
    nodes = await v1.list_node()
    gpu = next(n for n in nodes.items if n.metadata.name == "gpu-a40-1")
    assert gpu.status.allocatable["nvidia.com/gpu"] == "4"
    assert gpu.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-A40"
    events = await v1.list_namespaced_event("default", field_selector="involvedObject.name=nb")
    assert [e.reason for e in events.items] == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]
    assert all(e.involved_object.uid == pod.metadata.uid for e in events.items)
    namespaces = await v1.list_namespace()
    assert "default" in {n.metadata.name for n in namespaces.items}


async def test_server_set_metadata_and_generate_name(v1: CoreV1) -> None:
    body = pod_body("")
    body["metadata"] = {"generateName": "jupyter-ada-", "uid": "mine", "resourceVersion": "9"}
    status, pod = await raw(v1.create_namespaced_pod("default", body, _preload_content=False))
    assert status == 201
    assert pod["metadata"]["name"].startswith("jupyter-ada-") and len(pod["metadata"]["name"]) == 17
    assert pod["metadata"]["uid"] != "mine" and pod["metadata"]["namespace"] == "default"
    status, listed = await raw(v1.list_namespaced_pod("default", _preload_content=False))
    assert status == 200 and listed["kind"] == "PodList"
    assert int(listed["metadata"]["resourceVersion"]) >= int(pod["metadata"]["resourceVersion"])
    assert "kind" not in listed["items"][0]  # items of a real list carry no TypeMeta


async def test_label_and_field_selectors(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    fake_k8s.create_namespace("course")
    for name, labels, namespace in (
        ("a", {"app": "hub", "tier": "user"}, "default"),
        ("b", {"app": "hub"}, "default"),
        ("c", {"app": "other", "tier": "user"}, "default"),
        ("d", {"app": "hub"}, "course"),
    ):
        await v1.create_namespaced_pod(namespace, pod_body(name, labels=labels))

    async def names(namespace: str | None = "default", **selectors: str) -> list[str]:
        options: dict[str, Any] = dict(selectors)  # label_selector, field_selector
        if namespace is None:
            result = await v1.list_pod_for_all_namespaces(**options)
        else:
            result = await v1.list_namespaced_pod(namespace, **options)
        return [p.metadata.name for p in result.items]

    assert await names(label_selector="app=hub") == ["a", "b"]
    assert await names(label_selector="app==hub,tier") == ["a"]
    assert await names(label_selector="app!=hub") == ["c"]
    assert await names(label_selector="app in (hub, other),!tier") == ["b"]
    assert await names(label_selector="app notin (hub)") == ["c"]
    assert await names(None, label_selector="app=hub") == ["d", "a", "b"]  # sorted by namespace
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name!=b,metadata.namespace==default") == ["a", "c"]
    await fake_k8s.wait_for_pod_phase("default", "a", "Running")
    node = fake_k8s.get("pods", "default", "a")["spec"]["nodeName"]  # type: ignore[index]
    assert "a" in await names(field_selector=f"spec.nodeName={node}")
    await fake_k8s.wait_for(lambda: all(p["status"]["phase"] == "Running" for p in fake_k8s.objects("pods")))
    assert await names(None, field_selector="status.phase=Running") == ["d", "a", "b", "c"]
    assert await names(field_selector="status.phase=Pending") == []
    with pytest.raises(ApiException) as bad_field:
        await v1.list_namespaced_pod("default", field_selector="spec.image=x")
    assert bad_field.value.status == 400
    assert status_of(bad_field.value)["message"] == "field label not supported: spec.image"
    with pytest.raises(ApiException) as bad_label:
        await v1.list_namespaced_pod("default", label_selector="app in hub")
    assert bad_label.value.status == 400 and status_of(bad_label.value)["reason"] == "BadRequest"


async def test_pagination_with_limit_and_continue(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    for index in range(5):
        await v1.create_namespaced_secret("default", secret_body(f"s{index}", key="v"))
    first = await v1.list_namespaced_secret("default", limit=2)
    assert [s.metadata.name for s in first.items] == ["s0", "s1"]
    assert first.metadata._continue and first.metadata.remaining_item_count == 3
    rest = await v1.list_namespaced_secret("default", limit=10, _continue=first.metadata._continue)
    assert [s.metadata.name for s in rest.items] == ["s2", "s3", "s4"]
    assert rest.metadata._continue is None


async def test_delete_with_grace_period(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespaced_pod("default", pod_body("slow"))
    running = await fake_k8s.wait_for_pod_phase("default", "slow", "Running")
    seen: list[str] = []
    fake_k8s.store.listeners.append(
        lambda change: seen.append(change.type) if change.obj["metadata"].get("name") == "slow" else None
    )
    deleted = await v1.delete_namespaced_pod("slow", "default", grace_period_seconds=20)
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 20
    still = fake_k8s.get("pods", "default", "slow")
    assert still is not None and still["metadata"]["uid"] == running["metadata"]["uid"]
    # 20 s scaled by the default time factor 0.01: gone after about 0.2 s.
    await fake_k8s.wait_for(lambda: fake_k8s.get("pods", "default", "slow") is None, 2)
    assert seen == ["MODIFIED", "DELETED"]

    await v1.create_namespaced_pod("default", pod_body("fast"))
    await fake_k8s.wait_for_pod_phase("default", "fast", "Running")
    await v1.delete_namespaced_pod("fast", "default", body=client.V1DeleteOptions(grace_period_seconds=0))
    assert fake_k8s.get("pods", "default", "fast") is None
    with pytest.raises(ApiException) as gone:
        await v1.read_namespaced_pod("fast", "default")
    assert gone.value.status == 404


async def test_delete_preconditions_and_status_answers(v1: CoreV1) -> None:
    await v1.create_namespaced_secret("default", secret_body("token", token="s3cret"))
    secret = await v1.read_namespaced_secret("token", "default")
    assert secret.type == "Opaque" and secret.to_dict()["string_data"] is None
    assert base64.b64decode(secret.data["token"]) == b"s3cret"
    with pytest.raises(ApiException) as mismatch:
        await v1.delete_namespaced_secret(
            "token",
            "default",
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="not-the-uid")),
        )
    assert mismatch.value.status == 409 and status_of(mismatch.value)["reason"] == "Conflict"
    status, body = await raw(v1.delete_namespaced_secret("token", "default", _preload_content=False))
    assert status == 200
    assert body["kind"] == "Status" and body["status"] == "Success"
    assert body["details"] == {"name": "token", "kind": "secrets", "uid": secret.metadata.uid}


async def test_not_found_and_conflict_statuses(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    status, body = await raw(v1.read_namespaced_pod("ghost", "default", _preload_content=False))
    assert status == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "ghost" not found',
        "reason": "NotFound",
        "details": {"name": "ghost", "kind": "pods"},
        "code": 404,
    }
    await v1.create_namespaced_pod("default", pod_body("twice"))
    with pytest.raises(ApiException) as again:
        await v1.create_namespaced_pod("default", pod_body("twice"))
    assert again.value.status == 409
    assert status_of(again.value)["reason"] == "AlreadyExists"
    assert status_of(again.value)["message"] == 'pods "twice" already exists'
    with pytest.raises(ApiException) as no_namespace:
        await v1.create_namespaced_pod("nowhere", pod_body("lost"))
    assert no_namespace.value.status == 404
    assert status_of(no_namespace.value)["message"] == 'namespaces "nowhere" not found'
    async with aiohttp.ClientSession() as session, session.get(fake_k8s.url + "/api/v1/services") as response:
        assert response.status == 404
        assert (await response.json())["message"] == ("the server could not find the requested resource")


async def test_invalid_objects_get_422_with_causes(v1: CoreV1) -> None:
    body = pod_body("Bad_Name", resources={"requests": {"cpu": "lots", "memory": "1 GB"}})
    body["spec"]["notAField"] = True
    with pytest.raises(ApiException) as caught:
        await v1.create_namespaced_pod("default", body)
    status = status_of(caught.value)
    assert caught.value.status == 422 and status["reason"] == "Invalid"
    assert status["kind"] == "Status" and status["details"]["kind"] == "Pod"
    causes = {cause["field"]: cause for cause in status["details"]["causes"]}
    assert set(causes) == {
        "metadata.name",
        "spec.containers[0].resources.requests[cpu]",
        "spec.containers[0].resources.requests[memory]",
        "spec.notAField",
    }
    assert causes["metadata.name"]["message"].startswith(
        'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain'
    )
    assert "quantities must match" in causes["spec.containers[0].resources.requests[cpu]"]["message"]
    assert causes["spec.notAField"]["message"] == 'unknown field "spec.notAField"'
    assert status["message"].startswith('Pod "Bad_Name" is invalid: [')


@pytest.mark.parametrize(
    ("resources", "field", "fragment"),
    [
        (
            {"requests": {"cpu": "4"}, "limits": {"cpu": "2"}},
            "spec.containers[0].resources.requests",
            "must be less than or equal to cpu limit of 2",
        ),
        (
            {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "1"}},
            "spec.containers[0].resources.requests",
            "must be equal to nvidia.com/gpu limit of 1",
        ),
        (
            {"requests": {"nvidia.com/gpu": "1"}},
            "spec.containers[0].resources.limits",
            "Limit must be set for non overcommitable resources",
        ),
        (
            {"limits": {"nvidia.com/gpu": "500m"}},
            "spec.containers[0].resources.limits[nvidia.com/gpu]",
            "must be an integer",
        ),
        (
            {"limits": {"gpu": "1"}},
            "spec.containers[0].resources.limits[gpu]",
            "must be a standard resource type or fully qualified",
        ),
        (
            {"limits": {"memory": "-1Gi"}},
            "spec.containers[0].resources.limits[memory]",
            "must be greater than or equal to 0",
        ),
    ],
)
async def test_resource_rules(v1: CoreV1, resources: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ApiException) as caught:
        await v1.create_namespaced_pod("default", pod_body("nb", resources=resources))
    # Requests default to limits, so a bad limit may be reported for the request too.
    causes = {c["field"]: c["message"] for c in status_of(caught.value)["details"]["causes"]}
    assert fragment in causes[field]
    assert set(causes) <= {field, field.replace("limits", "requests")}


async def test_other_kinds_are_validated(v1: CoreV1) -> None:
    with pytest.raises(ApiException) as pvc:
        await v1.create_namespaced_persistent_volume_claim("default", pvc_body("home", "ten"))
    assert [c["field"] for c in status_of(pvc.value)["details"]["causes"]] == ["spec.resources[storage]"]
    with pytest.raises(ApiException) as secret:
        await v1.create_namespaced_secret("default", {"metadata": {"name": "s"}, "data": {"bad key": "eA=="}})
    assert status_of(secret.value)["details"]["causes"][0]["field"] == "data[bad key]"
    with pytest.raises(ApiException) as namespace:
        await v1.create_namespace({"metadata": {"name": "has.dots"}})
    assert namespace.value.status == 422
    mount = pod_body("m", volumeMounts=[{"name": "nope", "mountPath": "/x"}])
    with pytest.raises(ApiException) as volume:
        await v1.create_namespaced_pod("default", mount)
    assert status_of(volume.value)["details"]["causes"][0]["message"] == 'Not found: "nope"'


async def test_validation_can_be_switched_off(fake_k8s_factory: Any) -> None:
    fake = await fake_k8s_factory(validate=False)
    async with fake.api_client() as api:
        pod = await CoreV1(api).create_namespaced_pod(
            "default", pod_body("anything", resources={"requests": {"cpu": "lots"}})
        )
    assert pod.metadata.name == "anything"


async def test_merge_patch_of_labels_and_annotations(v1: CoreV1) -> None:
    created = await v1.create_namespaced_pod("default", pod_body("p", labels={"a": "1"}))
    patched = await v1.patch_namespaced_pod(
        "p", "default", {"metadata": {"labels": {"a": None, "b": "2"}, "annotations": {"note": "x"}}}
    )
    assert patched.metadata.labels == {"b": "2"}
    assert patched.metadata.annotations == {"note": "x"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as spec_change:
        await v1.patch_namespaced_pod("p", "default", {"spec": {"restartPolicy": "Never"}})
    assert spec_change.value.status == 422
    with pytest.raises(ApiException) as bad_label:
        await v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"b": "no way"}}})
    assert bad_label.value.status == 422
    patched = await v1.patch_namespaced_pod(
        "p", "default", [{"op": "add", "path": "/metadata/labels/c", "value": "3"}]
    )
    assert patched.metadata.labels == {"b": "2", "c": "3"}


async def test_namespace_lifecycle(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespace({"metadata": {"name": "course"}})
    await v1.create_namespaced_pod("course", pod_body("nb"))
    await v1.create_namespaced_persistent_volume_claim("course", pvc_body("home"))
    status, namespace = await raw(v1.delete_namespace("course", _preload_content=False))
    assert status == 200 and namespace["status"]["phase"] == "Terminating"
    assert fake_k8s.objects("pods", "course") == []
    assert fake_k8s.objects("persistentvolumeclaims", "course") == []
    with pytest.raises(ApiException) as gone:
        await v1.read_namespace("course")
    assert gone.value.status == 404


async def test_discovery_and_kubeconfig(fake_k8s: FakeKubernetes, tmp_path: Path) -> None:
    path = fake_k8s.write_kubeconfig(tmp_path / "kubeconfig")
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(path), client_configuration=configuration, persist_config=False
    )
    assert configuration.host == fake_k8s.url
    async with client.ApiClient(configuration) as api:
        version = await client.VersionApi(api).get_code()
        assert version.major == "1" and version.git_version.endswith("einfra-fake")
        resources = await CoreV1(api).get_api_resources()
        assert {"pods", "nodes", "events"} <= {r.name for r in resources.resources}
        versions = await client.CoreApi(api).get_api_versions()
        assert versions.versions == ["v1"]
