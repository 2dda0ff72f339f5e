"""Loading profile folders: the reference instances, broken files and their messages, the schema."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]  # jsonschema ships no type hints
import pytest
import yaml

from einfra_spawner import ProfileError, load_profiles, parse_profile_set, profile_schema
from einfra_spawner.profiles import validate_paths
from einfra_spawner.schema import profile_schema_json

from .strategies import INSTANCES, PROFILES_DIR

INSTANCE = textwrap.dedent(
    """\
    name: test
    display_name: Test hub
    gpu_types:
      a40: {display_name: NVIDIA A40, resource: nvidia.com/gpu,
            node_selector: {nvidia.com/gpu.product: NVIDIA-A40}}
    prices: {currency: CZK, cpu_hour: 1, gpu_hour: {a40: 10}}
    """
)
PROFILE = textwrap.dedent(
    """\
    slug: py
    display_name: Python
    image: quay.io/jupyter/minimal-notebook:2025-03-10
    cpu: {choices: [1, 2], guarantee: 0.5}
    memory: [2Gi, 4Gi]
    gpu: [none, {id: a40, groups: [gpu]}]
    """
)


def problems_of(files: dict[str, str]) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        parse_profile_set(files)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("name", INSTANCES)
def test_reference_instances_load(name: str) -> None:
    profiles = load_profiles(PROFILES_DIR / name)
    assert profiles.instance.name == name
    assert profiles.profiles
    assert profiles.default_profile in profiles.profiles


def test_the_general_hub_is_as_described() -> None:
    hub = load_profiles(PROFILES_DIR / "hub")
    assert hub.instance.servers_per_user > 1
    assert hub.instance.prices is not None and hub.instance.prices.currency == "CZK"
    assert hub.instance.usage_window_days == 90
    lab = hub.profile("jupyterlab")
    assert lab is not None
    gpu_ids = [c.id for c in lab.gpu.choices]
    assert gpu_ids == ["none", "mig-1g.10gb", "mig-2g.20gb", "a10", "a40", "a100", "h100"]
    assert all(c.groups == ("gpu",) for c in lab.gpu.choices if c.id != "none")
    assert {c.id: c.max_count for c in lab.gpu.choices}["mig-1g.10gb"] == 4
    assert hub.instance.gpu_types["a40"].resource == "nvidia.com/gpu"
    assert hub.instance.gpu_types["mig-2g.20gb"].resource == "nvidia.com/mig-2g.20gb"
    # The seed's ranges: 1 to 96 CPUs, 4 to 1024 GiB.
    assert (lab.cpu.min, lab.cpu.max, lab.cpu.step, lab.cpu.guarantee) == (1000, 96000, 1000, 1000)
    assert lab.memory.guarantee == 4 * 2**30 and lab.memory.choices == ()
    assert (lab.memory.min, lab.memory.max, lab.memory.step) == (4 * 2**30, 1024 * 2**30, 2**30)
    assert lab.image.custom is not None and lab.image.custom.matches("cerit.io/a/b:1")
    assert not lab.image.custom.matches("docker.io/cerit.io/a:1")
    assert lab.home is not None and lab.home.reset == "allowed"
    assert {m.id: m.groups for m in lab.mounts} == {
        "metacentrum": ("meta",),
        "scratch": (),
        "projects": ("projects",),
    }
    # The seed's storage: sshfs through a per-server PersistentVolume, a shared NFS with a folder
    # per user, and /dev/shm as large as the memory chosen.
    mounts = {m.id: m for m in lab.mounts}
    assert mounts["metacentrum"].pv is not None and mounts["metacentrum"].pv.driver == "csi-sshfs"
    assert mounts["scratch"].sub_path == "users/{user}"
    assert lab.shm is not None and lab.shm.size == "memory"


def test_the_course_hub_has_nothing_to_choose() -> None:
    course = load_profiles(PROFILES_DIR / "course")
    assert course.instance.servers_per_user == 1
    (profile,) = course.profiles
    assert profile.image.fixed and profile.cpu.fixed and profile.memory.fixed and profile.gpu.fixed
    assert profile.home is not None and profile.home.reset == "always"


def test_the_ai_hub_ties_resources_to_the_gpu() -> None:
    ai = load_profiles(PROFILES_DIR / "ai")
    (profile,) = ai.profiles
    assert all(c.cpu is not None and c.memory is not None for c in profile.gpu.choices)


def test_minimal_folder_loads() -> None:
    profiles = parse_profile_set({"instance.yaml": INSTANCE, "py.yaml": PROFILE})
    (profile,) = profiles.profiles
    assert profile.image.fixed
    assert [c.value for c in profile.memory.choices] == [2 * 2**30, 4 * 2**30]
    assert profile.cpu.default_choice().value == 1000


def test_every_problem_is_reported_with_file_path_and_value() -> None:
    broken = textwrap.dedent(
        """\
        slug: Py
        display_name: Python
        image: {choices: [{id: a, image: "UPPER/x"}], colour: red}
        cpu: lots
        memory: {choices: [4Gi, "1 GB"]}
        home: {size: 10Gi, reset: sometimes}
        """
    )
    problems = problems_of({"instance.yaml": INSTANCE, "py.yaml": broken})
    assert "py.yaml: slug: must be a lower-case DNS label" in problems[0]
    assert "(found 'Py')" in problems[0]
    assert any(
        "py.yaml: image.colour: unknown key; allowed keys: choices, custom, default" in p for p in problems
    )
    assert any("image.choices[0].image: must be a container image reference" in p for p in problems)
    assert any("cpu.choices[0].value: must be a CPU count" in p and "'lots'" in p for p in problems)
    assert any("memory.choices[1].value: must be a size" in p and "'1 GB'" in p for p in problems)
    assert any("home.reset: Input should be 'never', 'allowed' or 'always'" in p for p in problems)
    assert len(problems) == 6


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (
            "gpu: [none, h100]",
            "gpu.choices[1].id: not a GPU type of this instance; allowed: none, a40",
        ),
        (
            "gpu: {choices: [none, a40], default: a40x}",
            "default 'a40x' is not one of the gpu choices",
        ),
        (
            "gpu: {choices: [{id: a40, groups: [gpu]}, none]}",
            "the default gpu 'a40' is limited to groups ['gpu']",
        ),
        ("cpu: {choices: [1, 2], guarantee: 4}", "the cpu guarantee is larger than the smallest"),
        ("memory: {choices: [2Gi, 2048Mi]}", "memory id '2147483648' is given twice"),
        (
            "home: {size: 1Gi, mount_path: /data}\n"
            "mounts: [{id: d, mount_path: /data, pvc: {claim_name: d}}]",
            "two volumes are mounted at '/data'",
        ),
        ("mounts: [{id: d, mount_path: /d}]", "a mount needs exactly one of pvc, nfs, csi or pv"),
        (
            "mounts: [{id: d, mount_path: /d, csi: {driver: x.io, secret: 'Bad Name {user}'}}]",
            "must be a secret name",
        ),
        (
            "image: {choices: [{id: a, image: x}], custom: {pattern: '('}}",
            "not a valid regular expression",
        ),
        ("env: {'1BAD': x}", "must be an environment variable name"),
        # A slash needs a prefix before it (the one rule of label keys, as for pod labels).
        ("node_selector: {/gpu: a40}", "label key prefix '' is not a DNS subdomain"),
        ("tolerations: [{key: /gpu, operator: Exists}]", "label key prefix '' is not a DNS subdomain"),
    ],
)
def test_profile_rules(profile: str, expected: str) -> None:
    base = yaml.safe_load(PROFILE)
    base.update(yaml.safe_load(profile))
    problems = problems_of({"instance.yaml": INSTANCE, "py.yaml": yaml.safe_dump(base)})
    assert any(expected in p for p in problems), problems


def test_cross_file_checks() -> None:
    instance = INSTANCE.replace("gpu_hour: {a40: 10}", "gpu_hour: {}") + "default_profile: nope\n"
    problems = problems_of({"instance.yaml": instance, "a.yaml": PROFILE, "b.yaml": PROFILE})
    assert any("b.yaml: slug: slug is used by a.yaml too" in p for p in problems)
    assert any("prices.gpu_hour: no price for GPU type 'a40'" in p for p in problems)
    assert any("default_profile: not the slug of a profile; allowed: py" in p for p in problems)


#: One profile with three planted errors: an unknown key, a bad CPU value, a GPU choice naming no
#: GPU type of the instance (issue 12, item 7).
THREE_ERRORS = PROFILE.replace("cpu: {choices: [1, 2], guarantee: 0.5}", "cpu: {choices: [1, lots]}").replace(
    "gpu: [none, {id: a40, groups: [gpu]}]", "gpu: [none, {id: a40, groups: [gpu]}, h100]\ncolour: red"
)


def test_every_planted_error_is_reported_and_only_those() -> None:
    problems = problems_of({"instance.yaml": INSTANCE + "default_profile: py\n", "py.yaml": THREE_ERRORS})
    assert sorted(problems) == [
        "py.yaml: colour: unknown key; allowed keys: cpu, default_url, description, display_name, env, "
        "gpu, groups, home, image, memory, mounts, node_selector, pod, shm, slug, tolerations",
        "py.yaml: cpu.choices[1].value: must be a CPU count such as 2, 0.5 or '500m' "
        "(not a Kubernetes quantity) (found 'lots')",
        "py.yaml: gpu.choices[2].id: not a GPU type of this instance; allowed: none, a40 (found 'h100')",
    ]


def test_cross_file_checks_read_what_they_can_of_broken_files() -> None:
    # instance.yaml has an error of its own; its GPU types, prices and default profile still count.
    instance = INSTANCE.replace("name: test", "name: test\nservers_per_user: 0") + "default_profile: nope\n"
    broken_gpu_type = "  h100: {display_name: H100, resource: 'not a resource'}\n"
    instance = instance.replace("prices:", broken_gpu_type + "prices:")
    second = THREE_ERRORS.replace("slug: py", "slug: py2").replace("h100", "{id: b200, max_count: 0}")
    problems = problems_of({"instance.yaml": instance, "a.yaml": THREE_ERRORS, "b.yaml": second})
    assert "instance.yaml: servers_per_user: Input should be greater than or equal to 1 (found 0)" in problems
    assert any(p.startswith("instance.yaml: gpu_types.h100.resource: must be") for p in problems)
    # h100 is a GPU type (one with an error): naming it is no error, but it has no price.
    assert not any("a.yaml: gpu.choices[2].id" in p for p in problems)
    assert "instance.yaml: prices.gpu_hour: no price for GPU type 'h100', which a.yaml offers" in problems
    assert any("b.yaml: gpu.choices[2].max_count: Input should be greater than" in p for p in problems)
    assert (
        "b.yaml: gpu.choices[2].id: not a GPU type of this instance; allowed: none, a40, h100 (found 'b200')"
        in problems
    )
    default = "instance.yaml: default_profile: not the slug of a profile; allowed: py, py2 (found 'nope')"
    assert default in problems
    # A slug given twice is found among broken files too.
    problems = problems_of({"instance.yaml": INSTANCE, "a.yaml": THREE_ERRORS, "b.yaml": THREE_ERRORS})
    assert "b.yaml: slug: slug is used by a.yaml too (found 'py')" in problems


def test_checks_across_keys_of_a_profile_run_when_other_keys_are_broken() -> None:
    mounts = "mounts: [{id: d, mount_path: /data, pvc: {claim_name: d}}]\n"
    clash = THREE_ERRORS + "home: {size: 1Gi, mount_path: /data}\n" + mounts
    problems = problems_of({"instance.yaml": INSTANCE, "py.yaml": clash})
    assert "py.yaml: mounts: two volumes are mounted at '/data'" in problems
    assert len(problems) == 4


def test_no_cross_file_check_on_what_cannot_be_read() -> None:
    # The default profile may be the one whose slug cannot be read: not reported.
    unreadable = {"instance.yaml": INSTANCE + "default_profile: py\n", "py.yaml": "a: [unclosed\n"}
    assert [p.split(": ")[1] for p in problems_of(unreadable)] == ["line 2, column 1"]
    bad_slug = PROFILE.replace("slug: py", "slug: Py")
    problems = problems_of({"instance.yaml": INSTANCE + "default_profile: py\n", "py.yaml": bad_slug})
    assert len(problems) == 1 and problems[0].startswith("py.yaml: slug: must be a lower-case DNS label")
    # GPU types that cannot be read: profiles naming GPUs are not checked against them.
    instance = INSTANCE.replace("gpu_types:", "gpu_types: [a40]\nunused:")
    problems = problems_of({"instance.yaml": instance, "py.yaml": PROFILE})
    assert [p.split(": ")[1] for p in problems] == ["gpu_types", "unused"]


def test_yaml_problems() -> None:
    problems = problems_of({"instance.yaml": INSTANCE, "py.yaml": PROFILE + "slug: again\n"})
    assert problems == ["py.yaml: line 7, column 1: not valid YAML: duplicate key 'slug'"]
    problems = problems_of({"instance.yaml": INSTANCE, "py.yaml": "- a list\n"})
    assert problems == ["py.yaml: the file must hold a mapping of keys (found ['a list'])"]
    problems = problems_of({"instance.yaml": INSTANCE, "py.yaml": "a: [unclosed\n"})
    assert problems[0].startswith("py.yaml: line 2, column 1: not valid YAML")
    assert problems_of({"py.yaml": PROFILE}) == [".: there is no instance.yaml"]
    assert problems_of({"instance.yaml": INSTANCE}) == [".: the instance has no profile files"]


def test_instance_lists_its_profiles(tmp_path: Path) -> None:
    (tmp_path / "instance.yaml").write_text(INSTANCE + "profiles: [py.yaml, missing.yaml]\n")
    (tmp_path / "py.yaml").write_text(PROFILE)
    (tmp_path / "ignored.yaml").write_text("not: a profile\n")
    with pytest.raises(ProfileError) as caught:
        load_profiles(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'instance.yaml'}: profiles[1]: no such file (found 'missing.yaml')"
    ]


def test_validate_paths(tmp_path: Path) -> None:
    assert validate_paths([PROFILES_DIR / "hub", PROFILES_DIR / "hub" / "rstudio.yaml"]) == []
    lone = tmp_path / "lone.yaml"
    lone.write_text(PROFILE.replace("slug: py", "slug: 'no good'"))
    problems = [str(p) for p in validate_paths([lone, tmp_path / "absent"])]
    assert problems[0].startswith(f"{lone}: slug: must be a lower-case DNS label")
    assert problems[1] == f"{tmp_path / 'absent'}: no such file or folder"


def test_committed_schema_is_current() -> None:
    committed = (PROFILES_DIR / "schema.json").read_text(encoding="utf-8")
    assert committed == profile_schema_json(), "run: einfra-spawner schema > profiles/schema.json"


@pytest.mark.parametrize("name", INSTANCES)
def test_reference_files_satisfy_the_schema(name: str) -> None:
    validator = jsonschema.Draft202012Validator(profile_schema())
    for path in sorted((PROFILES_DIR / name).glob("*.yaml")):
        data = json.loads(json.dumps(yaml.safe_load(path.read_text())))
        errors = list(validator.iter_errors(data))
        assert not errors, f"{path}: {errors[0].message}"


def test_schema_refuses_what_loading_refuses() -> None:
    validator = jsonschema.Draft202012Validator(profile_schema())
    bad = yaml.safe_load(PROFILE)
    bad["colour"] = "red"
    assert list(validator.iter_errors(bad))
