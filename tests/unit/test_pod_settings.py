"""Pod settings (issue 13, part 2): validated at load, merged instance < profile < GPU type,
rendered into the pod (valid under the strict Kubernetes schema, restricted Pod Security Standard
kept), and the ``pod_patch``/``container_patch`` escape hatches checked at load."""

from __future__ import annotations

import copy
import json
import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einfra_spawner import (
    OptionsError,
    ProfileError,
    ServerIdentity,
    SingleUser,
    UserContext,
    parse_profile_set,
    render_manifests,
    resolve_options,
)
from einfra_spawner.names import ServerNames
from einfra_spawner.pod_security import merge_patch, pod_security_violations
from einfra_spawner.pod_settings import PodSettings, fill_placeholders, merge_pod_settings
from einfra_spawner.profiles import validate_paths

from .strategies import GROUP_POOL, instance_specs, load_spec
from .test_render import assert_valid

INSTANCE = textwrap.dedent(
    """\
    name: test
    display_name: Test hub
    gpu_types:
      a40: {display_name: NVIDIA A40, resource: nvidia.com/gpu}
    """
)
PROFILE = textwrap.dedent(
    """\
    slug: py
    display_name: Python
    image: quay.io/jupyter/minimal-notebook:2025-03-10
    cpu: [1]
    memory: [2Gi]
    gpu: [none, a40]
    home: {size: 1Gi}
    """
)
ADA = UserContext(name="ada")
SINGLE_USER = SingleUser(env=(("JUPYTERHUB_API_TOKEN", "secret"), ("SHARED", "from-the-hub")))


def files(
    instance_pod: Any = None, profile_pod: Any = None, gpu_pod: Any = None, **instance: Any
) -> dict[str, str]:
    inst = yaml.safe_load(INSTANCE)
    inst.update(instance)
    if instance_pod is not None:
        inst["pod"] = instance_pod
    if gpu_pod is not None:
        inst["gpu_types"]["a40"]["pod"] = gpu_pod
    prof = yaml.safe_load(PROFILE)
    if profile_pod is not None:
        prof["pod"] = profile_pod
    return {"instance.yaml": yaml.safe_dump(inst), "py.yaml": yaml.safe_dump(prof)}


def pod_of(
    request: dict[str, Any] | None = None, user: str = "Ada Lovelace", server: str = "run 1", **kw: Any
) -> Any:
    profiles = parse_profile_set(files(**kw))
    options = resolve_options(profiles, ADA, request or {})
    manifests = render_manifests(options, ServerIdentity(user=user, server=server), SINGLE_USER)
    assert_valid(manifests.pod)
    assert pod_security_violations(manifests.pod) == []
    return manifests


def problems(**kw: Any) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        parse_profile_set(files(**kw))
    return [str(p) for p in caught.value.problems]


def container(pod: dict[str, Any]) -> dict[str, Any]:
    notebooks: list[dict[str, Any]] = [c for c in pod["spec"]["containers"] if c["name"] == "notebook"]
    (found,) = notebooks
    return found


# --- each setting, rendered ----------------------------------------------------------------------


def test_pull_secrets_policy_priority_class_and_service_account() -> None:
    pod = pod_of(
        instance_pod={
            "image_pull_secrets": ["cerit-registry"],
            "image_pull_policy": "Always",
            "priority_class_name": "jupyter-default",
            "service_account_name": "singleuser",
        },
        profile_pod={"image_pull_secrets": ["course-registry", "cerit-registry"]},
    ).pod
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "cerit-registry"}, {"name": "course-registry"}]
    assert container(pod)["imagePullPolicy"] == "Always"
    assert spec["priorityClassName"] == "jupyter-default"
    assert spec["serviceAccountName"] == "singleuser"
    assert spec["automountServiceAccountToken"] is False  # a named account still gets no token


def test_the_token_is_mounted_only_when_asked() -> None:
    pod = pod_of(instance_pod={"service_account_name": "sa", "automount_service_account_token": True}).pod
    assert pod["spec"]["automountServiceAccountToken"] is True
    # A more specific level that says no wins.
    pod = pod_of(
        instance_pod={"automount_service_account_token": True},
        profile_pod={"automount_service_account_token": False},
    ).pod
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_labels_and_annotations_never_override_ours() -> None:
    manifests = pod_of(
        instance_pod={"labels": {"team": "a", "cost-center": "x"}, "annotations": {"example.org/note": "hi"}},
        profile_pod={"labels": {"team": "b"}},
    )
    metadata = manifests.pod["metadata"]
    assert metadata["labels"]["team"] == "b" and metadata["labels"]["cost-center"] == "x"
    assert metadata["labels"]["einfra-spawner/user"] == manifests.names.user_label
    assert metadata["labels"]["einfra-spawner/spec-hash"] == manifests.spec_hash
    assert metadata["annotations"]["example.org/note"] == "hi"
    assert metadata["annotations"]["einfra-spawner/username"] == "Ada Lovelace"
    for key in ("einfra-spawner/user", "einfra-spawner/anything", "app.kubernetes.io/managed-by"):
        found = problems(instance_pod={"labels": {key: "x"}})
        assert any("pod.labels" in p and "set by einfra-spawner itself" in p for p in found), found
    found = problems(profile_pod={"annotations": {"einfra-spawner/username": "eve"}})
    assert any("py.yaml: pod.annotations" in p for p in found), found


def test_affinity_renders_as_written_and_is_valid() -> None:
    node = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["brno"]}]}
            ]
        },
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 10,
                "preference": {"matchExpressions": [{"key": "cpu-gen", "operator": "Gt", "values": ["3"]}]},
            }
        ],
    }
    anti = {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 50,
                "podAffinityTerm": {
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "jupyterhub-singleuser"}},
                    "topologyKey": "kubernetes.io/hostname",
                },
            }
        ]
    }
    pod = pod_of(
        instance_pod={"affinity": {"podAntiAffinity": anti}},
        gpu_pod={"affinity": {"nodeAffinity": node}},
        request={"gpu": "a40"},
    ).pod
    assert pod["spec"]["affinity"] == {"nodeAffinity": node, "podAntiAffinity": anti}


@pytest.mark.parametrize(
    ("affinity", "expected"),
    [
        (
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
            "at least 1",
        ),
        (
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}},
            "needs matchExpressions or matchFields",
        ),
        (
            {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}]}},
            "topologyKey",
        ),
        (
            {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "topologyKey": "k",
                            "labelSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
                        }
                    ]
                }
            },
            "needs at least one value",
        ),
        (
            {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "topologyKey": "k",
                            "labelSelector": {
                                "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                            },
                        }
                    ]
                }
            },
            "takes no values",
        ),
        (
            {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 101,
                            "preference": {
                                "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]
                            },
                        }
                    ]
                }
            },
            "less than or equal to 100",
        ),
        (
            {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 1,
                            "preference": {
                                "matchExpressions": [{"key": "a", "operator": "Lt", "values": ["x"]}]
                            },
                        }
                    ]
                }
            },
            "exactly one integer",
        ),
        ({"nodeaffinity": {}}, "unknown key"),
        (
            {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "bad key!"}]
                }
            },
            "qualified name",
        ),
    ],
)
def test_affinity_is_checked_at_load(affinity: dict[str, Any], expected: str) -> None:
    found = problems(instance_pod={"affinity": affinity})
    assert any(p.startswith("instance.yaml: pod.affinity") and expected in p for p in found), found


def test_init_containers_run_restricted_with_resources() -> None:
    init = {
        "name": "fetch",
        "image": "cerit.io/hubs/fetch:1",
        "command": ["sh", "-c", "cp -rn /seed/. $HOME_DIR"],
        "env": {"HOME_DIR": "/home/jovyan/{user}"},
        "cpu": "250m",
        "memory": "64Mi",
        "mount_home": True,
    }
    manifests = pod_of(instance_pod={"init_containers": [init]})
    (rendered,) = manifests.pod["spec"]["initContainers"]
    assert rendered == {
        "name": "fetch",
        "image": "cerit.io/hubs/fetch:1",
        "command": ["sh", "-c", "cp -rn /seed/. $HOME_DIR"],
        "env": [{"name": "HOME_DIR", "value": f"/home/jovyan/{manifests.names.user_label}"}],
        "resources": {
            "requests": {"cpu": "250m", "memory": "64Mi"},
            "limits": {"cpu": "250m", "memory": "64Mi"},
        },
        "securityContext": container(manifests.pod)["securityContext"],
        "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}],
    }
    # No key of an init container can loosen its security context.
    assert any(
        "unknown key" in p
        for p in problems(instance_pod={"init_containers": [{**init, "securityContext": {}}]})
    )
    assert any(
        "notebook" in p for p in problems(instance_pod={"init_containers": [{**init, "name": "notebook"}]})
    )
    assert any("given twice" in p for p in problems(instance_pod={"init_containers": [init, init]}))
    for key, value in (("cpu", "0"), ("memory", "lots"), ("cpu", True)):
        found = problems(instance_pod={"init_containers": [{**init, key: value}]})
        assert any(f"init_containers[0].{key}: must be" in p for p in found), found
    assert any(
        "image" in p for p in problems(instance_pod={"init_containers": [{**init, "image": "Bad Image"}]})
    )


def test_init_containers_append_and_replace_by_name() -> None:
    first = {"name": "a", "image": "reg.example/a:1"}
    second = {"name": "b", "image": "reg.example/b:1"}
    pod = pod_of(
        instance_pod={"init_containers": [first, second]},
        profile_pod={
            "init_containers": [
                {"name": "a", "image": "reg.example/a:2"},
                {"name": "c", "image": "reg.example/c:1"},
            ]
        },
    ).pod
    assert [(c["name"], c["image"]) for c in pod["spec"]["initContainers"]] == [
        ("a", "reg.example/a:2"),
        ("b", "reg.example/b:1"),
        ("c", "reg.example/c:1"),
    ]


def test_lifecycle_hooks_merge_per_hook() -> None:
    pod = pod_of(
        instance_pod={
            "lifecycle": {"post_start": {"exec": ["sh", "-c", "echo up"]}, "pre_stop": {"exec": ["true"]}}
        },
        profile_pod={"lifecycle": {"pre_stop": {"http_get": {"path": "/api/shutdown", "port": 8888}}}},
    ).pod
    assert container(pod)["lifecycle"] == {
        "postStart": {"exec": {"command": ["sh", "-c", "echo up"]}},
        "preStop": {"httpGet": {"path": "/api/shutdown", "port": 8888, "scheme": "HTTP"}},
    }
    found = problems(instance_pod={"lifecycle": {"post_start": {}}})
    assert any("exactly one of exec or http_get" in p for p in found), found


def test_env_and_working_dir_take_plain_text_placeholders() -> None:
    manifests = pod_of(
        instance_pod={"env": {"SCRATCH": "/scratch/{user}/{server}", "SHARED": "mine", "A": "1"}},
        profile_pod={"env": {"A": "2"}, "working_dir": "/home/jovyan/{server}"},
        user="Ada {server}",
        server="{user}",
    )
    names = manifests.names
    env = {e["name"]: e["value"] for e in container(manifests.pod)["env"]}
    # A name that contains a placeholder is never expanded twice: labels are DNS-safe.
    assert env["SCRATCH"] == f"/scratch/{names.user_label}/{names.server_label}"
    assert "{" not in names.user_label + names.server_label
    assert env["A"] == "2"
    assert env["SHARED"] == "from-the-hub"  # the hub's own variables win
    assert env["JUPYTERHUB_API_TOKEN"] == "secret"
    assert container(manifests.pod)["workingDir"] == f"/home/jovyan/{names.server_label}"
    for bad in ("{user.name}", "{0}", "${HOME}", "{{user}}", "}"):
        found = problems(profile_pod={"env": {"X": bad}})
        assert any("only {user} and {server}" in p for p in found), (bad, found)
    assert any("only {user}" in p for p in problems(profile_pod={"working_dir": "/home/{home}"}))
    assert any("absolute path" in p for p in problems(profile_pod={"working_dir": "home"}))
    assert any("environment variable name" in p for p in problems(profile_pod={"env": {"1X": "a"}}))


def test_fill_placeholders_is_plain_text() -> None:
    assert fill_placeholders("{user}-{server}-{user}", "u-a", "s-b") == "u-a-s-b-u-a"
    assert fill_placeholders("{server}", "{server}", "x") == "x"  # one pass


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        ({"image_pull_secrets": ["Not_A_Name"]}, "DNS-1123 subdomain"),
        ({"priority_class_name": "x" * 254}, "DNS-1123 subdomain"),
        ({"service_account_name": "UPPER"}, "DNS-1123 subdomain"),
        ({"image_pull_policy": "Sometimes"}, "'Always', 'IfNotPresent' or 'Never'"),
        ({"labels": {"team": "not a value"}}, "label value"),
        ({"labels": {"-bad": "x"}}, "qualified name"),
        ({"unknown": 1}, "unknown key"),
    ],
)
def test_names_and_enums_are_checked_at_load(pod: dict[str, Any], expected: str) -> None:
    found = problems(profile_pod=pod)
    assert any(p.startswith("py.yaml: pod.") and expected in p for p in found), found


# --- merging -------------------------------------------------------------------------------------


def test_the_more_specific_level_wins() -> None:
    instance = PodSettings.model_validate(
        {
            "image_pull_policy": "Always",
            "priority_class_name": "low",
            "env": {"A": "i", "B": "i"},
            "working_dir": "/i",
        }
    )
    profile = PodSettings.model_validate({"priority_class_name": "mid", "env": {"B": "p"}})
    gpu = PodSettings.model_validate({"priority_class_name": "high", "env": {"C": "g"}})
    merged = merge_pod_settings([instance, profile, gpu])
    assert merged.image_pull_policy == "Always"
    assert merged.priority_class_name == "high"
    assert merged.env == (("A", "i"), ("B", "p"), ("C", "g"))
    assert merged.working_dir == "/i"
    assert merge_pod_settings([]) == merge_pod_settings([PodSettings()])


def test_gpu_type_settings_apply_only_with_that_gpu() -> None:
    kw: dict[str, Any] = {"gpu_pod": {"priority_class_name": "gpu-jobs", "labels": {"gpu": "yes"}}}
    without = pod_of(**kw).pod
    with_gpu = pod_of(request={"gpu": "a40"}, **kw).pod
    assert "priorityClassName" not in without["spec"] and "gpu" not in without["metadata"]["labels"]
    assert with_gpu["spec"]["priorityClassName"] == "gpu-jobs"
    assert with_gpu["metadata"]["labels"]["gpu"] == "yes"


def test_the_spec_hash_covers_the_settings() -> None:
    plain = pod_of()
    labelled = pod_of(instance_pod={"labels": {"team": "a"}})
    patched = pod_of(instance_pod={"pod_patch": {"spec": {"terminationGracePeriodSeconds": 5}}})
    assert len({plain.spec_hash, labelled.spec_hash, patched.spec_hash}) == 3


# --- the escape hatches --------------------------------------------------------------------------


def test_patches_apply_after_rendering_in_level_order() -> None:
    pod = pod_of(
        instance_pod={"pod_patch": {"spec": {"terminationGracePeriodSeconds": 5, "dnsPolicy": "Default"}}},
        profile_pod={
            "pod_patch": {"spec": {"terminationGracePeriodSeconds": 30, "enableServiceLinks": None}},
            "container_patch": {"stdin": True, "readinessProbe": {"httpGet": {"path": "/api", "port": 8888}}},
        },
    ).pod
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30
    assert pod["spec"]["dnsPolicy"] == "Default"
    assert "enableServiceLinks" not in pod["spec"]
    assert container(pod)["stdin"] is True
    assert container(pod)["readinessProbe"] == {"httpGet": {"path": "/api", "port": 8888}}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"pod_patch": {"metadata": {"name": "other"}}}, "may not change metadata.name"),
        ({"pod_patch": {"metadata": {"namespace": "kube-system"}}}, "may not change metadata.namespace"),
        ({"pod_patch": {"metadata": None}}, "may not change metadata.name"),
        ({"pod_patch": {"metadata": {"labels": {"einfra-spawner/user": "u-eve"}}}}, "set by einfra-spawner"),
        ({"pod_patch": {"metadata": {"labels": None}}}, "may not replace metadata.labels"),
        ({"pod_patch": {"spec": {"containers": []}}}, "may not change spec.containers"),
        ({"pod_patch": {"spec": {"volumes": []}}}, "may not change spec.volumes"),
        ({"pod_patch": {"spec": {"tolerations": []}}}, "may not change spec.tolerations"),
        ({"pod_patch": {"spec": {"imagePullSecrets": None}}}, "may not change spec.imagePullSecrets"),
        ({"pod_patch": {"spec": None}}, "may not change spec."),
        ({"pod_patch": {"kind": "Deployment"}}, "may not change kind"),
        (
            {"pod_patch": {"metadata": {"finalizers": ["example.org/hold"]}}},
            "may not change metadata.finalizers",
        ),
        ({"pod_patch": {"spec": {"restartPolicy": "Always"}}}, "may not change spec.restartPolicy"),
        ({"pod_patch": {"spec": {"x": float("nan")}}}, "not finite"),
        ({"container_patch": {"name": "x"}}, "may not change name"),
        ({"container_patch": {"image": "evil.example/x:1"}}, "may not change image"),
        ({"container_patch": {"resources": {}}}, "may not change resources"),
        ({"container_patch": {"env": []}}, "may not change env"),
    ],
)
def test_patches_may_not_touch_what_is_ours(patch: dict[str, Any], expected: str) -> None:
    found = problems(profile_pod=patch)
    assert any(p.startswith("py.yaml: pod.") and expected in p for p in found), found


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"pod_patch": {"spec": {"hostNetwork": True}}}, "spec.hostNetwork must be unset or false"),
        ({"container_patch": {"securityContext": {"runAsNonRoot": False}}}, "runAsNonRoot must be true"),
        (
            {"pod_patch": {"spec": {"securityContext": {"runAsNonRoot": False}}}},
            "runAsNonRoot must not be false",
        ),
        ({"pod_patch": {"spec": {"securityContext": {"runAsUser": 0}}}}, "runAsUser must not be 0"),
        (
            {"container_patch": {"securityContext": {"allowPrivilegeEscalation": True}}},
            "allowPrivilegeEscalation",
        ),
        (
            {"container_patch": {"securityContext": {"capabilities": {"add": ["CHOWN"]}}}},
            "only NET_BIND_SERVICE",
        ),
        ({"container_patch": {"securityContext": {"capabilities": None}}}, "drop must include ALL"),
        ({"container_patch": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}, "Unconfined"),
        ({"container_patch": {"securityContext": {"privileged": True}}}, "privileged must be unset"),
    ],
)
def test_a_patch_that_breaks_restricted_is_refused_at_load(patch: dict[str, Any], expected: str) -> None:
    found = problems(profile_pod=patch)
    assert any(p.startswith("py.yaml: pod: ") and expected in p and "restricted" in p for p in found), found


def test_baseline_on_purpose_allows_what_baseline_allows() -> None:
    chown = {"container_patch": {"securityContext": {"capabilities": {"add": ["CHOWN"]}}}}
    profiles = parse_profile_set(files(profile_pod=chown, pod_security="baseline"))
    assert profiles.instance.pod_security.level == "baseline"
    options = resolve_options(profiles, ADA, {})
    pod = render_manifests(options, ServerIdentity(user="ada")).pod
    assert container(pod)["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert pod_security_violations(pod, "baseline") == []
    # Baseline still refuses what it forbids.
    found = problems(
        profile_pod={"pod_patch": {"spec": {"hostPID": True}}}, pod_security={"level": "baseline"}
    )
    assert any("spec.hostPID" in p and "baseline" in p for p in found), found


def test_a_patch_is_checked_with_each_gpu_type() -> None:
    """The GPU type's patch alone looks harmless on the instance; with the GPU it is not."""
    found = problems(gpu_pod={"pod_patch": {"spec": {"hostIPC": True}}})
    assert any(p.startswith("instance.yaml: gpu_types.a40.pod") and "hostIPC" in p for p in found), found


# --- the JSON merge patch and the checker on their own -------------------------------------------

# RFC 7386, appendix A: (target, patch, result).
RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7386)
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == result
    assert target == before  # never changed in place


def test_the_checker_sees_each_restricted_control() -> None:
    pod = render_manifests(
        resolve_options(parse_profile_set(files()), ADA, {}), ServerIdentity(user="ada")
    ).pod
    assert pod_security_violations(pod) == []
    cases = {
        "hostPath": {"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}},
        "volume type": {"spec": {"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]}},
        "hostPort": {
            "spec": {"containers": [{**container(pod), "ports": [{"containerPort": 1, "hostPort": 80}]}]}
        },
        "safe sysctl": {"spec": {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}},
        "procMount": {
            "spec": {
                "containers": [
                    {
                        **container(pod),
                        "securityContext": {**container(pod)["securityContext"], "procMount": "Unmasked"},
                    }
                ]
            }
        },
        "seLinuxOptions.type": {"spec": {"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}},
        "localhost/*": {
            "metadata": {
                "annotations": {"container.apparmor.security.beta.kubernetes.io/notebook": "unconfined"}
            }
        },
        "hostProcess": {"spec": {"securityContext": {"windowsOptions": {"hostProcess": True}}}},
    }
    for expected, patch in cases.items():
        found = pod_security_violations(merge_patch(pod, patch))
        assert any(expected in v for v in found), (expected, found)


# --- properties ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance_specs(), st.data())
def test_generated_instances_with_pod_settings_render_valid_restricted_pods(
    spec: Any, data: st.DataObject
) -> None:
    """Generated instances carry pod settings at every level (``strategies._pod_settings``); any
    pod they render is valid under the strict schema and meets the instance's standard: restricted,
    or baseline where the instance uses inline NFS volumes (which the loader refuses otherwise)."""
    profiles = load_spec(spec)
    user = UserContext(name="member", groups=frozenset(GROUP_POOL))
    for profile in profiles.profiles:
        for gpu in profile.gpu.choices:
            try:
                options = resolve_options(profiles, user, {"profile": profile.slug, "gpu": gpu.id})
            except OptionsError:  # a GPU choice with a count the default does not allow
                continue
            name = data.draw(st.sampled_from(["ada", "Ana María", "{user}", "x" * 70]), label="user")
            manifests = render_manifests(options, ServerIdentity(user=name, server="s"), SINGLE_USER)
            level = profiles.instance.pod_security.level
            assert_valid(manifests.pod, level)
            # Baseline only where the instance asks for it (inline NFS mounts need it).
            assert level == "restricted" or any(m.nfs for p in profiles.profiles for m in p.mounts)
            assert pod_security_violations(manifests.pod, level) == []
            expected = merge_pod_settings(
                [profiles.instance.pod, profile.pod]
                + ([profiles.instance.gpu_types[gpu.id].pod] if gpu.id in profiles.instance.gpu_types else [])
            )
            assert options.pod == expected
            labels = manifests.pod["metadata"]["labels"]
            assert labels["einfra-spawner/user"] == ServerNames(name, "s").user_label
            for key, value in expected.labels:
                assert labels[key] == value
            assert (
                manifests.pod["spec"]["automountServiceAccountToken"]
                is expected.automount_service_account_token
            )
            assert json.dumps(manifests.pod) == json.dumps(
                render_manifests(options, ServerIdentity(user=name, server="s"), SINGLE_USER).pod
            )


def test_resolved_settings_hash_like_the_rest_of_the_options() -> None:
    """ResolvedOptions is a frozen value: it must hash, settings with mappings included."""
    kw = {
        "instance_pod": {
            "init_containers": [{"name": "a", "image": "reg.example/a:1", "env": {"X": "1"}}],
            "affinity": {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"a": "b"}},
                        }
                    ]
                }
            },
        }
    }
    first = resolve_options(parse_profile_set(files(**kw)), ADA, {})
    second = resolve_options(parse_profile_set(files(**kw)), ADA, {})
    assert first == second and hash(first) == hash(second)
    assert len({first, second}) == 1


def test_validate_names_the_file_and_key_of_a_breaking_patch(tmp_path: Any) -> None:
    """The operator's check before deploying reports the patch, and a folder with one bad patch
    does not load at all (no hub starts with the other profiles and a hole in the rules)."""
    for name, text in files(gpu_pod={"container_patch": {"securityContext": {"runAsUser": 0}}}).items():
        (tmp_path / name).write_text(text)
    found = [str(p) for p in validate_paths([tmp_path])]
    assert found == [
        f"{tmp_path / 'instance.yaml'}: gpu_types.a40.pod: the patched pod of profile 'py' with GPU type "
        "'a40' breaks the restricted Pod Security Standard: spec.containers[0].securityContext.runAsUser "
        "must not be 0 (pod_security: baseline allows less strict pods)"
    ]
