"""scripts/kind-up and scripts/kind-down, checked without Docker or a cluster.

Neither can run here (no image can be pulled), so the tests run them with ``--dry-run``, which
prints every command instead of running it, and check the commands: the cluster they make, the
fake GPUs against the kind instance, the image against the values, the kubeconfig every cluster
command uses, and every manifest, values file and instance folder they apply (each must exist
and validate). shellcheck, where installed, checks both scripts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from einfra_spawner import load_profiles, validate_paths

from ..cluster.instance import DEFAULT_IMAGE, MISSING_IMAGE, kind_instance
from .test_deploy_values import SUPPORTED_CHARTS

REPO = Path(__file__).resolve().parents[2]
KIND_UP = REPO / "scripts" / "kind-up"
KIND_DOWN = REPO / "scripts" / "kind-down"
DEPLOY = REPO / "deploy"
KIND_PROFILES = DEPLOY / "kind" / "profiles"
#: What the scripts read from the environment; cleared so that the defaults are tested.
SETTINGS = (
    "KIND_CLUSTER_NAME",
    "Z2JH_VERSION",
    "EINFRA_TEST_IMAGE",
    "EINFRA_KIND_STATE",
    "EINFRA_VENV",
    "XDG_CACHE_HOME",
)

Command = list[str]


def run_script(
    script: Path, *args: str, home: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    environment["HOME"] = str(home)
    environment.update(env or {})
    return subprocess.run(
        ["bash", str(script), *args], env=environment, capture_output=True, text=True, timeout=60, check=False
    )


def commands(output: str) -> list[Command]:
    """The commands a dry run printed (its lines that start with "+ "), split as a shell would."""
    return [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("+ ")]


def dry_run(home: Path, *args: str, env: Mapping[str, str] | None = None) -> list[Command]:
    done = run_script(KIND_UP, "--dry-run", *args, home=home, env=env)
    assert done.returncode == 0, done.stderr
    return commands(done.stdout)


def state_dir(home: Path, name: str = "einfra") -> Path:
    return home / ".cache" / "einfra-spawner" / f"kind-{name}"


def option(command: Command, name: str) -> str:
    """The value of ``--name value`` or ``--name=value`` in ``command``."""
    for index, word in enumerate(command):
        if word == name:
            return command[index + 1]
        if word.startswith(name + "="):
            return word[len(name) + 1 :]
    raise AssertionError(f"{name} not in {command}")


def options(command: Command, name: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command) if word == name]


def strip(command: Command) -> Command:
    """``command`` without kubectl's and helm's ``--kubeconfig K`` (checked once, elsewhere)."""
    if len(command) > 2 and command[1] == "--kubeconfig":
        return [command[0], *command[3:]]
    return command


def find(cmds: list[Command], *prefix: str) -> list[Command]:
    """The commands (as printed) that start with ``prefix`` once stripped of ``--kubeconfig K``."""
    return [command for command in cmds if strip(command)[: len(prefix)] == list(prefix)]


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def cmds(home: Path) -> list[Command]:
    return dry_run(home)


@pytest.fixture(scope="module")
def z2jh_values() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "z2jh-values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_a_dry_run_needs_none_of_the_tools(cmds: list[Command]) -> None:
    programs = {command[0] for command in cmds}
    assert programs <= {"mkdir", "rm", "kind", "kubectl", "docker", "helm", "env", ".venv/bin/python"}
    assert {"kind", "kubectl", "docker", "helm"} <= programs


def test_every_cluster_command_uses_the_clusters_kubeconfig(home: Path, cmds: list[Command]) -> None:
    kubeconfig = str(state_dir(home) / "kubeconfig")
    (create,) = find(cmds, "kind", "create", "cluster")
    assert option(create, "--kubeconfig") == kubeconfig
    assert cmds.index(create) < min(i for i, c in enumerate(cmds) if c[0] == "kubectl")
    for command in cmds:
        if command[0] == "kubectl" or (command[0] == "helm" and command[1] not in ("repo", "pull")):
            assert command[1:3] == ["--kubeconfig", kubeconfig], command
    (tests,) = [c for c in cmds if "tests/cluster" in c]
    assert f"EINFRA_TEST_KUBECONFIG={kubeconfig}" in tests


def kind_nodes(name: str) -> list[str]:
    """The node names kind gives the nodes of deploy/kind/cluster.yaml."""
    (config,) = documents(DEPLOY / "kind" / "cluster.yaml")
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1
    workers = roles.count("worker")
    return [f"{name}-control-plane"] + [f"{name}-worker{i if i > 1 else ''}" for i in range(1, workers + 1)]


def test_the_cluster_is_made_from_the_kind_config(cmds: list[Command]) -> None:
    (create,) = find(cmds, "kind", "create", "cluster")
    assert option(create, "--name") == "einfra"
    assert option(create, "--config") == "deploy/kind/cluster.yaml"
    assert len(kind_nodes("einfra")) >= 3  # a control plane and a worker per fake GPU kind


def test_the_fake_gpus_are_what_the_kind_instance_asks_for(cmds: list[Command]) -> None:
    """Every GPU type of deploy/kind/profiles is advertised on a worker (its extended resource in
    the node status) and that worker carries its node selector's labels."""
    workers = set(kind_nodes("einfra")[1:])
    advertised: dict[str, tuple[str, int]] = {}
    for patch in find(cmds, "kubectl", "patch", "node"):
        node = strip(patch)[3]
        assert node in workers
        assert option(patch, "--subresource") == "status"
        assert option(patch, "--type") == "json"
        (operation,) = json.loads(option(patch, "-p"))
        assert operation["op"] == "add"
        resource = operation["path"].removeprefix("/status/capacity/").replace("~1", "/")
        count = int(operation["value"])
        assert count > 0 and isinstance(operation["value"], str)  # a quantity is a string
        advertised[resource] = (node, count)
        # ... and the script waits for the kubelet to copy it into allocatable.
        (wait,) = [
            w
            for w in find(cmds, "kubectl", "wait", f"node/{node}")
            if resource.replace(".", "\\.") in option(w, "--for")
        ]
        escaped = resource.replace(".", "\\.")  # a dot inside a jsonpath key is escaped
        assert option(wait, "--for") == f"jsonpath={{.status.allocatable.{escaped}}}={count}"
    labels: dict[str, set[str]] = {}
    for label in find(cmds, "kubectl", "label", "node"):
        words = strip(label)
        labels.setdefault(words[3], set()).update(w for w in words[4:] if "=" in w and not w.startswith("-"))
    kind = load_profiles(KIND_PROFILES)
    assert kind.instance.gpu_types
    for gpu_id, gpu in kind.instance.gpu_types.items():
        assert gpu.resource in advertised, gpu_id
        node, count = advertised[gpu.resource]
        wanted = {f"{key}={value}" for key, value in gpu.node_selector.items()}
        assert wanted <= labels.get(node, set()), gpu_id
        # The profile may ask for no more than one node has, so that every choice can run.
        for profile in kind.profiles:
            for choice in profile.gpu.choices:
                if choice.id == gpu_id:
                    assert choice.max_count <= count


def test_the_hub_image_is_built_loaded_and_named_as_the_values_name_it(
    home: Path, cmds: list[Command], z2jh_values: dict[str, Any]
) -> None:
    image = z2jh_values["hub"]["image"]
    reference = f"{image['name']}:{image['tag']}"
    dist = str(state_dir(home) / "dist")
    (wheel,) = [c for c in cmds if c[1:4] == ["-m", "pip", "wheel"]]
    assert option(wheel, "--wheel-dir") == dist and wheel[-1] == "."
    (build,) = find(cmds, "docker", "build")
    assert option(build, "-f") == "deploy/hub-image/Dockerfile"
    assert option(build, "-t") == reference
    assert build[-1] == dist  # the build context: the wheel only
    dockerfile = (DEPLOY / "hub-image" / "Dockerfile").read_text()
    (chart,) = re.findall(r"^ARG Z2JH_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert option(build, "--build-arg") == f"Z2JH_VERSION={chart}"
    assert ["kind", "load", "docker-image", reference, "--name", "einfra"] in cmds
    assert (
        cmds.index(wheel)
        < cmds.index(build)
        < cmds.index(["kind", "load", "docker-image", reference, "--name", "einfra"])
    )
    (install,) = find(cmds, "helm", "upgrade", "--install")
    assert option(install, "--set-string") == f"hub.image.tag={image['tag']}"


def test_the_single_user_image_is_the_kind_instances_and_is_loaded(cmds: list[Command]) -> None:
    kind = load_profiles(KIND_PROFILES)
    images = {choice.image for profile in kind.profiles for choice in profile.image.choices}
    assert images == {DEFAULT_IMAGE}
    assert ["docker", "pull", DEFAULT_IMAGE] in cmds
    assert ["kind", "load", "docker-image", DEFAULT_IMAGE, "--name", "einfra"] in cmds
    (tests,) = [c for c in cmds if "tests/cluster" in c]
    assert f"EINFRA_TEST_IMAGE={DEFAULT_IMAGE}" in tests


def test_the_settings_change_what_they_name(tmp_path: Path) -> None:
    cmds = dry_run(
        tmp_path,
        env={"KIND_CLUSTER_NAME": "other", "EINFRA_TEST_IMAGE": "example.org/lab:1", "Z2JH_VERSION": "4.4.0"},
    )
    assert ["docker", "pull", "example.org/lab:1"] in cmds
    (tests,) = [c for c in cmds if "tests/cluster" in c]
    assert "EINFRA_TEST_IMAGE=example.org/lab:1" in tests
    (create,) = find(cmds, "kind", "create", "cluster")
    assert option(create, "--name") == "other"
    assert option(create, "--kubeconfig") == str(state_dir(tmp_path, "other") / "kubeconfig")
    assert {strip(patch)[3] for patch in find(cmds, "kubectl", "patch", "node")} <= set(kind_nodes("other"))
    (build,) = find(cmds, "docker", "build")
    assert option(build, "--build-arg") == "Z2JH_VERSION=4.4.0"
    (install,) = find(cmds, "helm", "upgrade", "--install")
    assert strip(install)[4] == str(state_dir(tmp_path, "other") / "charts" / "4.4.0" / "jupyterhub")
    assert option(install, "--set-string").startswith("hub.image.tag=4.4.0-")


def test_every_supported_chart_is_pulled_and_the_values_checked_before_the_install(
    home: Path, cmds: list[Command]
) -> None:
    charts = state_dir(home) / "charts"
    pulls = find(cmds, "helm", "pull", "jupyterhub/jupyterhub")
    assert {option(p, "--version") for p in pulls} == set(SUPPORTED_CHARTS)
    for pull in pulls:
        assert "--untar" in pull
        assert option(pull, "--untardir") == str(charts / option(pull, "--version"))
    (check,) = [c for c in cmds if "tests/unit/test_deploy_values.py" in c]
    assert check[:2] == ["env", f"EINFRA_Z2JH_CHARTS={charts}"]
    (install,) = find(cmds, "helm", "upgrade", "--install")
    assert max(cmds.index(p) for p in pulls) < cmds.index(check) < cmds.index(install)
    dockerfile = (DEPLOY / "hub-image" / "Dockerfile").read_text()
    (chart,) = re.findall(r"^ARG Z2JH_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert strip(install)[3:5] == ["jhub", str(charts / chart / "jupyterhub")]  # the very chart checked


def test_everything_applied_exists_and_validates(cmds: list[Command], z2jh_values: dict[str, Any]) -> None:
    (install,) = find(cmds, "helm", "upgrade", "--install")
    namespace = option(install, "--namespace")
    applied = [file for command in find(cmds, "kubectl", "apply") for file in options(command, "-f")]
    assert applied == [
        "deploy/kind/namespaces.yaml",
        "deploy/z2jh-rbac.yaml",
        "deploy/z2jh-rbac-homes.yaml",
        "deploy/netpol-singleuser.yaml",
    ]
    made_namespaces = set()
    for file in applied:
        for manifest in documents(REPO / file):
            kubernetes_validate.validate(manifest, "1.33", strict=True)
            if manifest["kind"] == "Namespace":
                made_namespaces.add(manifest["metadata"]["name"])
            elif "namespace" in manifest["metadata"]:
                assert manifest["metadata"]["namespace"] == namespace, file
            for subject in manifest.get("subjects", []):
                assert subject["namespace"] == namespace, file
    assert namespace in made_namespaces
    # The tests' namespace exists, and is not the hub's (whose reconciler would see their pods).
    (tests,) = [c for c in cmds if "tests/cluster" in c]
    test_namespace = next(w.split("=", 1)[1] for w in tests if w.startswith("EINFRA_TEST_NAMESPACE="))
    assert test_namespace in made_namespaces and test_namespace != namespace
    # The namespaces exist before anything is put into them.
    first_apply = cmds.index(next(c for c in cmds if "deploy/kind/namespaces.yaml" in c))
    assert all(cmds.index(c) > first_apply for c in find(cmds, "kubectl", "--namespace", namespace))
    # Values files: the ones the walk-through documents, each a mapping.
    assert options(install, "--values") == ["deploy/z2jh-values.yaml", "deploy/kind/values.yaml"]
    for file in options(install, "--values"):
        assert isinstance(yaml.safe_load((REPO / file).read_text()), dict)
    # The profiles: a valid instance, in the ConfigMap the values mount.
    (create,) = find(cmds, "kubectl", "--namespace", namespace, "create", "configmap")
    (volume,) = z2jh_values["hub"]["extraVolumes"]
    assert strip(create)[5] == volume["configMap"]["name"]
    (folder,) = [w.split("=", 1)[1] for w in create if w.startswith("--from-file=")]
    assert folder == "deploy/kind/profiles/"
    assert validate_paths([REPO / folder]) == []
    # Replaced, not added to: the ConfigMap of an earlier run is deleted first.
    (delete,) = find(cmds, "kubectl", "--namespace", namespace, "delete", "configmap")
    assert strip(delete)[5] == volume["configMap"]["name"] and "--ignore-not-found" in delete
    assert cmds.index(delete) < cmds.index(create) < cmds.index(install)


def test_no_tests_leaves_out_only_the_tests(home: Path, cmds: list[Command]) -> None:
    without = dry_run(home, "--no-tests")
    assert [c for c in cmds if c not in without] == [next(c for c in cmds if "tests/cluster" in c)]


def test_unknown_arguments_are_refused(tmp_path: Path) -> None:
    for script in (KIND_UP, KIND_DOWN):
        done = run_script(script, "--dry-rnu", home=tmp_path)
        assert done.returncode == 2
        assert "unknown argument: --dry-rnu" in done.stderr
        assert "+ " not in done.stdout


def test_kind_down_removes_what_kind_up_made(tmp_path: Path) -> None:
    for name in ("einfra", "other"):
        env = {"KIND_CLUSTER_NAME": name} if name != "einfra" else {}
        done = run_script(KIND_DOWN, "--dry-run", home=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert commands(done.stdout) == [
            ["kind", "delete", "cluster", "--name", name],
            ["rm", "-rf", str(state_dir(tmp_path, name))],
        ]


def test_arguments_with_spaces_and_quotes_are_printed_as_the_shell_reads_them(tmp_path: Path) -> None:
    state = tmp_path / "it's a folder"
    cmds = dry_run(tmp_path, env={"EINFRA_KIND_STATE": str(state)})
    assert ["mkdir", "-p", str(state)] in cmds


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing() -> None:
    done = subprocess.run(
        ["shellcheck", str(KIND_UP), str(KIND_DOWN)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout


def test_the_cluster_suites_instance_is_the_kind_instance_with_the_tests_image() -> None:
    kind = load_profiles(KIND_PROFILES)
    tests = kind_instance("example.org/lab:1")
    assert tests.instance.gpu_types == kind.instance.gpu_types
    (profile,) = tests.profiles
    assert {choice.image for choice in profile.image.choices} == {"example.org/lab:1", MISSING_IMAGE}
    assert profile.home is not None
    assert (profile.home.storage_class, profile.home.access_modes) == ("standard", ("ReadWriteOnce",))
    assert kind_instance().profiles[0].image.choices[0].image == DEFAULT_IMAGE
