"""Pod settings end to end on the harness: a spawn through the Kubernetes backend creates a pod
that carries every setting (and the fake API server, which validates each pod against the strict
Kubernetes schema, accepts it); changed settings replace the old pod instead of adopting it."""

from __future__ import annotations

import textwrap
from typing import Any

from einfra_spawner import (
    ServerIdentity,
    SingleUser,
    UserContext,
    parse_profile_set,
    render_manifests,
    resolve_options,
)
from einfra_spawner.backend import StartRequest
from einfra_spawner.pod_security import pod_security_violations
from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes import KubernetesBackend

INSTANCE = textwrap.dedent(
    """\
    name: settings
    display_name: Pod settings hub
    gpu_types:
      a40:
        display_name: NVIDIA A40
        resource: nvidia.com/gpu
        node_selector: {nvidia.com/gpu.product: NVIDIA-A40}
        pod:
          priority_class_name: gpu-jobs
          env: {GPU_NOTE: "a40 for {user}"}
          affinity:
            nodeAffinity:
              preferredDuringSchedulingIgnoredDuringExecution:
                - weight: 5
                  preference:
                    matchExpressions: [{key: example.org/cooling, operator: In, values: [liquid]}]
    pod:
      image_pull_secrets: [cerit-registry]
      priority_class_name: jupyter-default
      labels: {example.org/team: research}
      annotations: {example.org/contact: "ops@example.org"}
      service_account_name: singleuser
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 10
              podAffinityTerm:
                labelSelector: {matchLabels: {app.kubernetes.io/name: jupyterhub-singleuser}}
                topologyKey: kubernetes.io/hostname
      env: {SCRATCH: "/scratch/{user}/{server}"}
    """
)
PROFILE = textwrap.dedent(
    """\
    slug: lab
    display_name: Lab
    image: quay.io/jupyter/minimal-notebook:2025-03-10
    cpu: [1]
    memory: [2Gi]
    gpu: [none, a40]
    home: {size: 1Gi}
    pod:
      image_pull_policy: Always
      image_pull_secrets: [lab-registry]
      working_dir: "/home/jovyan/{server}"
      init_containers:
        - {name: seed, image: "cerit.io/hubs/seed:1", command: [cp, -rn, /seed/., /home/jovyan],
           mount_home: true, cpu: 100m, memory: 64Mi}
      lifecycle:
        post_start: {exec: [sh, -c, "mkdir -p /home/jovyan/work"]}
        pre_stop: {exec: [sh, -c, "jupyter server stop || true"]}
      pod_patch: {spec: {terminationGracePeriodSeconds: 7}}
      container_patch: {stdin: true}
    """
)


def start_request(request: dict[str, Any], profile: str = PROFILE, server: str = "run-1") -> StartRequest:
    profiles = parse_profile_set({"instance.yaml": INSTANCE, "lab.yaml": profile})
    options = resolve_options(profiles, UserContext(name="ada"), request)
    identity = ServerIdentity(user="ada", server=server, namespace="default")
    single_user = SingleUser(env=(("JUPYTERHUB_API_TOKEN", "t0ken"),))
    return StartRequest(
        identity=identity,
        options=options,
        manifests=render_manifests(options, identity, single_user),
        single_user=single_user,
        state={},
    )


async def test_the_created_pod_carries_every_setting(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    request = start_request({"gpu": "a40"})
    names = request.manifests.names
    started = await backend.start(request)
    pod = cluster.get("pods", "default", names.pod)
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] == "gpu-a40-1"
    metadata, spec = pod["metadata"], pod["spec"]
    assert metadata["labels"]["example.org/team"] == "research"
    assert metadata["labels"]["einfra-spawner/spec-hash"] == request.manifests.spec_hash
    assert metadata["annotations"]["example.org/contact"] == "ops@example.org"
    assert spec["imagePullSecrets"] == [{"name": "cerit-registry"}, {"name": "lab-registry"}]
    assert spec["priorityClassName"] == "gpu-jobs"  # the GPU type's, over the instance's
    assert spec["serviceAccountName"] == "singleuser"
    assert spec["automountServiceAccountToken"] is False
    assert (
        spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"]
        == 10
    )
    (preferred,) = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["preference"]["matchExpressions"][0]["values"] == ["liquid"]
    assert spec["terminationGracePeriodSeconds"] == 7
    (init,) = spec["initContainers"]
    (notebook,) = spec["containers"]
    assert init["name"] == "seed" and init["securityContext"] == notebook["securityContext"]
    assert init["resources"]["limits"] == {"cpu": "100m", "memory": "64Mi"}
    assert init["volumeMounts"] == [{"name": "home", "mountPath": "/home/jovyan"}]
    assert notebook["imagePullPolicy"] == "Always"
    assert notebook["workingDir"] == f"/home/jovyan/{names.server_label}"
    assert notebook["stdin"] is True
    assert notebook["lifecycle"] == {
        "postStart": {"exec": {"command": ["sh", "-c", "mkdir -p /home/jovyan/work"]}},
        "preStop": {"exec": {"command": ["sh", "-c", "jupyter server stop || true"]}},
    }
    env = {e["name"]: e["value"] for e in notebook["env"]}
    assert env["SCRATCH"] == f"/scratch/{names.user_label}/{names.server_label}"
    assert env["GPU_NOTE"] == f"a40 for {names.user_label}"
    assert env["JUPYTERHUB_API_TOKEN"] == "t0ken"
    assert pod_security_violations(pod) == []
    await backend.stop(request.identity, started.state)
    assert cluster.get("pods", "default", names.pod) is None


async def test_without_the_gpu_the_gpu_types_settings_are_absent(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    request = start_request({})
    started = await backend.start(request)
    pod = cluster.get("pods", "default", request.manifests.names.pod)
    assert pod is not None
    assert pod["spec"]["priorityClassName"] == "jupyter-default"
    assert "GPU_NOTE" not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    await backend.stop(request.identity, started.state)


async def test_the_token_is_mounted_when_the_profile_asks(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    request = start_request({}, profile=PROFILE + "  automount_service_account_token: true\n")
    started = await backend.start(request)
    pod = cluster.get("pods", "default", request.manifests.names.pod)
    assert pod is not None
    assert pod["spec"]["serviceAccountName"] == "singleuser"
    assert pod["spec"]["automountServiceAccountToken"] is True
    await backend.stop(request.identity, started.state)


async def test_changed_settings_replace_the_running_pod(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    """The operator changes the pod settings while a server's pod exists (a hub restarted with new
    files): the next start must not adopt the old pod, whose spec hash differs, but replace it."""
    old = start_request({})
    await backend.start(old)
    changed = start_request(
        {}, profile=PROFILE.replace("terminationGracePeriodSeconds: 7", "terminationGracePeriodSeconds: 9")
    )
    assert changed.manifests.spec_hash != old.manifests.spec_hash
    new = await backend.start(changed)
    (pod,) = cluster.objects("pods", "default")
    assert pod["spec"]["terminationGracePeriodSeconds"] == 9
    assert pod["metadata"]["labels"]["einfra-spawner/spec-hash"] == changed.manifests.spec_hash
    await backend.stop(changed.identity, new.state)
    assert cluster.objects("pods", "default") == []
