"""Rendering: restricted pods, resources, GPUs, volumes, labels; all valid for Kubernetes."""

from __future__ import annotations

import itertools
import json
import random
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einfra_spawner import (
    OptionsError,
    ProfileSet,
    ResolvedOptions,
    ServerIdentity,
    SingleUser,
    UserContext,
    render_manifests,
    resolve_options,
)
from einfra_spawner.models import NO_GPU, CpuOption, MemoryOption, Profile
from einfra_spawner.names import is_dns1123_label, is_label_value
from einfra_spawner.pod_security import Level, pod_security_violations
from einfra_spawner.quantities import format_cpu, format_memory, parse_quantity

from .strategies import INSTANCES, KNOWN_GROUPS, hub_names, instance, requests, users

K8S_VERSION = "1.33"
HUB = instance("hub")
EVERYONE = UserContext(name="ada", groups=frozenset(KNOWN_GROUPS))
SINGLE_USER = SingleUser(
    args=("--debug",),
    env=(("JUPYTERHUB_API_TOKEN", "secret"), ("JUPYTERHUB_USER", "ada"), ("CPU_LIMIT", "hub")),
)


@cache
def _validate_cached(text: str) -> None:
    kubernetes_validate.validate(json.loads(text), K8S_VERSION, strict=True)


def assert_valid(manifest: dict[str, Any], level: Level = "restricted") -> None:
    """The Kubernetes schema (strict), plus what it does not check: names and quantities."""
    _validate_cached(json.dumps(manifest, sort_keys=True))
    metadata = manifest["metadata"]
    assert is_dns1123_label(metadata["name"])
    for key, value in metadata["labels"].items():
        assert is_label_value(value), (key, value)
    if manifest["kind"] == "Pod":
        # The instance's Pod Security Standard (restricted unless it says baseline on purpose).
        violations = pod_security_violations(manifest, level)
        assert violations == [], violations
        for container in [*manifest["spec"].get("initContainers", []), *manifest["spec"]["containers"]]:
            resources = container["resources"]
            for name, limit in resources["limits"].items():
                request = resources["requests"][name]
                assert parse_quantity(request) <= parse_quantity(limit), name
                if "/" in name:
                    assert request == limit  # extended resources: no overcommit
        for volume in manifest["spec"]["volumes"]:
            assert is_dns1123_label(volume["name"])
    elif manifest["kind"] == "PersistentVolume":
        assert parse_quantity(manifest["spec"]["capacity"]["storage"]) > 0
    else:
        assert parse_quantity(manifest["spec"]["resources"]["requests"]["storage"]) > 0


def render(options: ResolvedOptions, user: str = "ada", server: str = "") -> Any:
    return render_manifests(
        options, ServerIdentity(user=user, server=server, namespace="hub-ns"), SINGLE_USER
    )


def test_the_pod_runs_restricted() -> None:
    pod = render(resolve_options(HUB, EVERYONE, {})).pod
    spec = pod["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
        "fsGroup": 100,
    }
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert_valid(pod)


def test_resources_env_and_command() -> None:
    options = resolve_options(HUB, EVERYONE, {"cpu": "8", "memory": "64Gi"})
    (container,) = render(options).pod["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "4Gi"},
        "limits": {"cpu": "8", "memory": "64Gi"},
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MEM_LIMIT"] == str(64 * 2**30) and env["MEM_GUARANTEE"] == str(4 * 2**30)
    assert env["CPU_GUARANTEE"] == "1.0"
    assert env["CPU_LIMIT"] == "hub"  # the hub's own variables are never overridden
    assert env["JUPYTERHUB_API_TOKEN"] == "secret"
    assert container["args"] == ["jupyterhub-singleuser", "--debug"]
    assert container["image"] == "quay.io/jupyter/scipy-notebook:2025-03-10"


def test_gpus_are_extended_resources_with_placement() -> None:
    options = resolve_options(HUB, EVERYONE, {"gpu": "a100", "gpu_count": 2})
    pod = render(options).pod
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe"}
    assert pod["metadata"]["labels"]["einfra-spawner/gpu"] == "a100"
    mig = render(resolve_options(HUB, EVERYONE, {"gpu": "mig-1g.10gb", "gpu_count": 3})).pod
    assert mig["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "3"
    assert "nodeSelector" not in mig["spec"]
    h100 = render(resolve_options(instance("ai"), EVERYONE, {"gpu": "h100"})).pod
    assert h100["spec"]["tolerations"] == [
        {"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"}
    ]
    for manifest in (pod, mig, h100):
        assert_valid(manifest)


def test_persistent_home_and_mounts() -> None:
    options = resolve_options(HUB, EVERYONE, {"mounts": ["metacentrum", "projects"]})
    manifests = render(options, user="Lukáš", server="big run")
    pvc = manifests.home
    assert pvc is not None
    assert pvc["metadata"]["name"] == manifests.names.home
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "storageClassName": "nfs-csi",
        "resources": {"requests": {"storage": "20Gi"}},
    }
    assert pvc["metadata"]["labels"]["einfra-spawner/user"] == manifests.names.user_label
    assert pvc["metadata"]["annotations"]["einfra-spawner/username"] == "Lukáš"
    volumes = {v["name"]: v for v in manifests.pod["spec"]["volumes"]}
    assert volumes["home"] == {
        "name": "home",
        "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]},
    }
    # The MetaCentrum storage is a per-server PersistentVolume (see test_storage.py).
    (volume,) = manifests.user_volumes
    assert volumes["mount-metacentrum"]["persistentVolumeClaim"] == {
        "claimName": volume.claim["metadata"]["name"],
        "readOnly": False,
    }
    assert volume.secret == f"sshfs-{manifests.names.user_label}"
    assert volumes["mount-projects"]["persistentVolumeClaim"] == {
        "claimName": "projects",
        "readOnly": False,
    }
    assert manifests.objects() == [manifests.pod, pvc, volume.pv, volume.claim]
    for manifest in manifests.objects():
        assert_valid(manifest)


def test_a_course_home_is_ephemeral() -> None:
    manifests = render(resolve_options(instance("course"), EVERYONE, {}))
    assert manifests.home is None
    (home,) = [v for v in manifests.pod["spec"]["volumes"] if v["name"] == "home"]
    template = home["ephemeral"]["volumeClaimTemplate"]
    assert template["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert manifests.pod["spec"]["containers"][0]["workingDir"] == "/home/jovyan"
    assert_valid(manifests.pod)


def test_rendering_is_deterministic_and_hashes_the_spec() -> None:
    options = resolve_options(HUB, EVERYONE, {"gpu": "a40"})
    first, second = render(options), render(options)
    assert json.dumps(first.objects()) == json.dumps(second.objects())
    other = render(resolve_options(HUB, EVERYONE, {"gpu": "a10"}))
    assert first.spec_hash != other.spec_hash
    assert first.pod["metadata"]["labels"]["einfra-spawner/spec-hash"] == first.spec_hash


# --- properties and exhaustive coverage ---------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), hub_names(), hub_names())
def test_every_rendered_manifest_is_valid(data: st.DataObject, user_name: str, server: str) -> None:
    profiles = instance(data.draw(st.sampled_from(INSTANCES)))
    user = data.draw(users())
    try:
        options = resolve_options(profiles, user, data.draw(requests(profiles)))
    except OptionsError:
        return
    manifests = render(options, user=user_name, server=server)
    for manifest in manifests.objects():
        assert_valid(manifest)
    assert json.dumps(render(options, user_name, server).objects()) == json.dumps(manifests.objects())


def _all_requests(profile: Profile) -> list[dict[str, Any]]:
    """Every choice combination of a profile (as requests an all-groups user may make)."""
    gpu_axis: list[tuple[str, int, Any]] = []
    for gpu in profile.gpu.choices:
        counts = [0] if gpu.id == NO_GPU else range(1, gpu.max_count + 1)
        gpu_axis += [(gpu.id, n, gpu) for n in counts]
    axes: list[list[dict[str, Any]]] = [
        [{"image": c.id} for c in profile.image.choices],
        [
            {"home": h}
            for h in (
                {"never": ["keep"], "allowed": ["keep", "reset"], "always": ["reset"]}[profile.home.reset]
                if profile.home
                else [None]
            )
        ],
        [
            {"mounts": list(ids)}
            for r in range(len(profile.mounts) + 1)
            for ids in itertools.combinations([m.id for m in profile.mounts], r)
        ],
    ]
    combos: list[dict[str, Any]] = []
    for gpu_id, count, gpu in gpu_axis:
        cpus = [format_cpu(v) for v in _values(gpu.cpu or profile.cpu)]
        memories = [format_memory(v) for v in _values(gpu.memory or profile.memory)]
        for cpu, memory, *rest in itertools.product(cpus, memories, *axes):
            request: dict[str, Any] = {
                "profile": profile.slug,
                "gpu": gpu_id,
                "gpu_count": count,
                "cpu": cpu,
                "memory": memory,
            }
            for part in rest:
                request.update({k: v for k, v in part.items() if v is not None})
            combos.append(request)
    return combos


def _values(option: CpuOption | MemoryOption) -> list[int]:
    """The choices, or a range's min, default and max."""
    if option.choices:
        return [c.value for c in option.choices]
    assert option.min is not None and option.max is not None
    return sorted({option.min, option.default_value(), option.max})


def _sample(profiles: ProfileSet) -> list[dict[str, Any]]:
    """All combinations where there are few, else a fixed random sample of 250 of them."""
    combos = [r for p in profiles.profiles for r in _all_requests(p)]
    return combos if len(combos) <= 250 else random.Random(1).sample(combos, 250)


@pytest.mark.parametrize("name", INSTANCES)
def test_every_choice_combination_renders_valid_manifests(name: str) -> None:
    profiles = instance(name)
    combos = _sample(profiles)
    assert combos
    seen_values: set[tuple[str, str]] = set()
    for request in combos:
        options = resolve_options(profiles, EVERYONE, request)
        assert options.user_options()["cpu"] == request["cpu"]
        for manifest in render(options).objects():
            assert_valid(manifest)
        seen_values |= {(k, str(v)) for k, v in request.items() if k != "mounts"}
    if name != "hub":
        assert len(combos) == sum(len(_all_requests(p)) for p in profiles.profiles)
    # The sample still reaches every GPU type of the instance.
    gpu_ids = {c.id for p in profiles.profiles for c in p.gpu.choices}
    assert gpu_ids <= {v for k, v in seen_values if k == "gpu"}
