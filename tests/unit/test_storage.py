"""Storage: per-user placeholders, per-server PersistentVolumes, /dev/shm, home generations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einfra_spawner import (
    OptionsError,
    ProfileError,
    ProfileSet,
    ServerIdentity,
    UserContext,
    load_profiles,
    render_manifests,
    resolve_options,
)
from einfra_spawner.models import Mount
from einfra_spawner.names import ServerNames, is_dns1123_label
from einfra_spawner.storage import (
    check_template,
    fill,
    format_duration,
    home_claim_name,
    parse_duration,
    sample,
    user_volume_name,
)

from .strategies import (
    GROUP_POOL,
    InstanceSpec,
    hub_names,
    instance,
    instance_specs,
    load_spec,
    spec_requests,
    users,
)
from .test_render import assert_valid

ADA = UserContext(name="ada", groups=frozenset({"meta"}))

INSTANCE = """\
name: store
display_name: Storage
homes: {on_delete: delete, reset: {keep_for: 3d}}
pod_security: baseline  # the profile's inline NFS mounts need it
"""

PROFILE = """\
slug: lab
display_name: Lab
image: "quay.io/jupyter/minimal-notebook:1"
cpu: [1]
memory: [4Gi, 8Gi]
home: {size: 1Gi, reset: allowed}
shm: memory
mounts:
  - id: mine
    mount_path: /data/mine
    pvc: {claim_name: "data-{user}"}
  - id: shared
    mount_path: /data/shared
    sub_path: "users/{user}/{server}"
    nfs: {server: nfs.example.org, path: /exports/home}
  - id: nfs-own
    mount_path: /data/nfs
    nfs: {server: nfs.example.org, path: "/exports/{user}"}
  - id: inline
    mount_path: /data/inline
    csi:
      driver: csi.example.org
      volume_attributes: {share: "/home/{user}", fixed: plain}
      secret: "cred-{user}"
  - id: sshfs
    mount_path: /data/sshfs
    groups: [meta]
    pv:
      driver: csi-sshfs
      volume_attributes: {server: storage.example.org, user: "{user}", share: "/home/{user}"}
      secret: "sshfs-{user}"
      secret_attribute: privateKey
      register_first: Register your SSH key first.
      size: 100Gi
      storage_class: sshfs
"""


def load(tmp_path: Path, profile: str = PROFILE, instance_file: str = INSTANCE) -> ProfileSet:
    (tmp_path / "instance.yaml").write_text(instance_file)
    (tmp_path / "lab.yaml").write_text(profile)
    return load_profiles(tmp_path)


def render(
    profiles: ProfileSet, request: dict[str, Any], user: str = "Ada", server: str = "", **kw: Any
) -> Any:
    options = resolve_options(profiles, ADA, request)
    return render_manifests(options, ServerIdentity(user=user, server=server, namespace="jhub", **kw))


# --- placeholders --------------------------------------------------------------------------------


def test_only_user_and_server_are_placeholders() -> None:
    assert check_template("a-{user}-{server}") == "a-{user}-{server}"
    for bad in ("{0}", "{user.__class__}", "{{user}}", "a}", "{USER}", "{user"):
        with pytest.raises(ValueError, match="only placeholders"):
            check_template(bad)


@settings(max_examples=200, deadline=None)
@given(hub_names(), hub_names())
def test_filling_is_plain_text_and_gives_valid_names(user: str, server: str) -> None:
    names = ServerNames(user, server)
    filled = fill("home-{user}-{server}", names)
    # A hostile name ("{server}", "{0.__class__}") is folded into a label: nothing is evaluated
    # and no placeholder survives.
    assert "{" not in filled and "}" not in filled
    assert filled == f"home-{names.user_label}-{names.server_label}"
    assert len(filled) <= len(sample("home-{user}-{server}"))
    assert is_dns1123_label(home_claim_name(names, user, server, 3))
    assert is_dns1123_label(user_volume_name("hub", user, server, "sshfs"))


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ({"sub_path": "{user}/../other"}, "relative path without '..'"),
        ({"sub_path": "/abs/{user}"}, "relative path"),
        ({"sub_path": "{name}"}, "only placeholders"),
        ({"pvc": {"claim_name": "Data-{user}"}}, "a PVC name"),
        ({"pvc": {"claim_name": "x" * 200 + "-{user}"}}, "a PVC name"),
        ({"nfs": {"server": "n", "path": "exports/{user}"}}, "absolute path"),
        ({"csi": {"driver": "d.example.org", "volume_attributes": {"a": "{uid}"}}}, "only placeholders"),
        ({"pv": {"driver": "d.example.org", "secret_attribute": "privateKey"}}, "needs a secret"),
        ({"mount_path": "/dev/shm"}, "shared memory"),
    ],
)
def test_broken_storage_texts_are_refused_at_load(mount: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {"id": "m", "mount_path": "/m", "pvc": {"claim_name": "c"}}
    if any(key in mount for key in ("nfs", "csi", "pv")):
        del data["pvc"]
    data.update(mount)
    with pytest.raises(ValueError, match=message):
        Mount.model_validate(data)


def test_templated_storage_is_filled_with_the_labels(tmp_path: Path) -> None:
    profiles = load(tmp_path)
    manifests = render(profiles, {"mounts": []}, user="Ada", server="big run")
    names = manifests.names
    volumes = {v["name"]: v for v in manifests.pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in manifests.pod["spec"]["containers"][0]["volumeMounts"]}
    assert volumes["mount-mine"]["persistentVolumeClaim"]["claimName"] == f"data-{names.user_label}"
    assert mounts["mount-shared"]["subPath"] == f"users/{names.user_label}/{names.server_label}"
    assert volumes["mount-nfs-own"]["nfs"]["path"] == f"/exports/{names.user_label}"
    assert volumes["mount-inline"]["csi"]["volumeAttributes"] == {
        "fixed": "plain",
        "share": f"/home/{names.user_label}",
    }
    assert volumes["mount-inline"]["csi"]["nodePublishSecretRef"] == {"name": f"cred-{names.user_label}"}
    for manifest in manifests.objects():
        assert_valid(manifest, "baseline")


# --- per-server PersistentVolumes ----------------------------------------------------------------


def test_a_pv_mount_renders_its_own_volume_and_claim(tmp_path: Path) -> None:
    manifests = render(load(tmp_path), {}, user="Ada", server="x")
    names = manifests.names
    (volume,) = manifests.user_volumes
    name = user_volume_name("store", "Ada", "x", "sshfs")
    assert volume.pv["metadata"]["name"] == volume.claim["metadata"]["name"] == name
    assert "namespace" not in volume.pv["metadata"]  # cluster-scoped
    assert volume.claim["metadata"]["namespace"] == "jhub"
    spec = volume.pv["spec"]
    assert spec["claimRef"] == {"kind": "PersistentVolumeClaim", "namespace": "jhub", "name": name}
    assert spec["persistentVolumeReclaimPolicy"] == "Retain"  # deleting the PV keeps the data
    assert spec["csi"] == {
        "driver": "csi-sshfs",
        "volumeHandle": name,
        "volumeAttributes": {
            "privateKey": f"jhub/sshfs-{names.user_label}",
            "server": "storage.example.org",
            "share": f"/home/{names.user_label}",
            "user": names.user_label,
        },
    }
    assert volume.claim["spec"]["volumeName"] == name
    assert volume.claim["spec"]["storageClassName"] == spec["storageClassName"] == "sshfs"
    labels = volume.pv["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "einfra-spawner"
    assert labels["app.kubernetes.io/instance"] == "store"
    assert labels["einfra-spawner/server"] == names.server_label
    assert labels["einfra-spawner/mount"] == "sshfs"
    assert labels["einfra-spawner/remove"] == "with_server"
    assert (volume.secret, volume.register_first) == (
        f"sshfs-{names.user_label}",
        "Register your SSH key first.",
    )
    claim_volume = {v["name"]: v for v in manifests.pod["spec"]["volumes"]}["mount-sshfs"]
    assert claim_volume["persistentVolumeClaim"]["claimName"] == name
    assert_valid(volume.pv)
    assert_valid(volume.claim)


def test_a_pv_without_secret_attribute_uses_the_publish_secret(tmp_path: Path) -> None:
    profile = PROFILE.replace("      secret_attribute: privateKey\n", "")
    (volume,) = render(load(tmp_path, profile), {}).user_volumes
    assert volume.pv["spec"]["csi"]["nodePublishSecretRef"] == {"name": volume.secret, "namespace": "jhub"}
    assert "privateKey" not in volume.pv["spec"]["csi"]["volumeAttributes"]


def test_a_pv_mount_of_another_group_is_not_made(tmp_path: Path) -> None:
    options = resolve_options(load(tmp_path), UserContext(name="bob"), {})
    manifests = render_manifests(options, ServerIdentity(user="bob", namespace="jhub"))
    assert manifests.user_volumes == ()


# --- /dev/shm -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shm", "memory", "size"), [("memory", "8Gi", "8Gi"), ("2Gi", "8Gi", "2Gi"), ("16Gi", "4Gi", "4Gi")]
)
def test_shm_is_memory_backed_and_sized(tmp_path: Path, shm: str, memory: str, size: str) -> None:
    profile = PROFILE.replace("shm: memory", f"shm: {shm}")
    manifests = render(load(tmp_path, profile), {"memory": memory})
    volumes = {v["name"]: v for v in manifests.pod["spec"]["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}
    mounts = manifests.pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in mounts
    assert_valid(manifests.pod, "baseline")  # the profile has inline NFS mounts


def test_no_shm_without_the_key(tmp_path: Path) -> None:
    manifests = render(load(tmp_path, PROFILE.replace("shm: memory\n", "")), {})
    assert "dshm" not in {v["name"] for v in manifests.pod["spec"]["volumes"]}


def test_the_reference_hub_uses_a_pv_a_sub_path_and_shm() -> None:
    hub = instance("hub")
    user = UserContext(name="ada", groups=frozenset({"meta"}))
    options = resolve_options(hub, user, {"mounts": ["metacentrum", "scratch"], "memory": "16Gi"})
    manifests = render_manifests(options, ServerIdentity(user="ada", server="lab", namespace="jhub"))
    (volume,) = manifests.user_volumes
    assert volume.pv["spec"]["csi"]["driver"] == "csi-sshfs"
    assert volume.pv["spec"]["csi"]["volumeAttributes"]["privateKey"] == f"jhub/{volume.secret}"
    mounts = {m["mountPath"]: m for m in manifests.pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/home/jovyan/scratch"]["subPath"] == f"users/{manifests.names.user_label}"
    assert mounts["/dev/shm"]["name"] == "dshm"
    volumes = {v["name"]: v for v in manifests.pod["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["sizeLimit"] == "16Gi"
    assert hub.instance.homes.on_delete == "keep" and hub.instance.homes.reset.keep_for == 7 * 86400


# --- homes: generations and resets ---------------------------------------------------------------


def test_a_reset_that_keeps_the_old_home_moves_to_the_next_generation(tmp_path: Path) -> None:
    profiles = load(tmp_path)
    plain = render(profiles, {}, user="Ada", server="s", home_generation=2)
    assert plain.home is not None and plain.retired_home is None
    assert plain.home["metadata"]["name"] == home_claim_name(plain.names, "Ada", "s", 2)
    assert plain.home["metadata"]["labels"]["einfra-spawner/home-generation"] == "2"
    reset = render(profiles, {"home": "reset"}, user="Ada", server="s", home_generation=2)
    assert reset.retired_home == home_claim_name(reset.names, "Ada", "s", 2)
    assert reset.home is not None and reset.home_generation == 3
    new = reset.home["metadata"]["name"]
    assert new == home_claim_name(reset.names, "Ada", "s", 3) != reset.retired_home
    home_volume = {v["name"]: v for v in reset.pod["spec"]["volumes"]}["home"]
    assert home_volume["persistentVolumeClaim"]["claimName"] == new
    assert resolve_options(profiles, ADA, {"home": "reset"}).home.keep_old_for == 3 * 86400  # type: ignore[union-attr]


def test_a_reset_that_deletes_the_old_home_keeps_the_name(tmp_path: Path) -> None:
    profiles = load(tmp_path, instance_file=INSTANCE.replace("3d", "0"))
    reset = render(profiles, {"home": "reset"}, user="Ada", server="s")
    assert reset.retired_home is None and reset.home_generation == 0
    assert reset.home is not None and reset.home["metadata"]["name"] == reset.names.home


def test_generation_zero_is_the_classic_home_name() -> None:
    names = ServerNames("ada", "")
    assert home_claim_name(names, "ada", "", 0) == names.home
    assert len({home_claim_name(names, "ada", "", g) for g in range(50)}) == 50


# --- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(0, 0), ("0", 0), ("45s", 45), ("30m", 1800), ("12h", 43200), ("7d", 604800), (90, 90)],
)
def test_durations(text: Any, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1", -1, "7 days", "1w", True, 1.5, "", "1d2h"])
def test_broken_durations_are_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations_in_words() -> None:
    assert [format_duration(s) for s in (604800, 86400, 7200, 90, 60, 1)] == [
        "7 days",
        "1 day",
        "2 hours",
        "90 seconds",
        "1 minute",
        "1 second",
    ]


def test_a_broken_homes_setting_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as caught:
        load(tmp_path, instance_file=INSTANCE.replace("3d", "three days"))
    assert "homes.reset.keep_for" in str(caught.value)
    with pytest.raises(ProfileError) as caught:
        load(tmp_path, instance_file=INSTANCE.replace("on_delete: delete", "on_delete: archive"))
    assert "homes.on_delete" in str(caught.value)


def test_templated_profiles_render_the_same_twice(tmp_path: Path) -> None:
    profiles = load(tmp_path)
    first = render(profiles, {}, user="{server}", server="{user}")
    second = render(profiles, {}, user="{server}", server="{user}")
    assert json.dumps(first.objects()) == json.dumps(second.objects())
    filled = [
        first.pod["spec"]["volumes"][2:],  # after the home and /dev/shm: the mounts
        [m.get("subPath") for m in first.pod["spec"]["containers"][0]["volumeMounts"]],
        [v.pv["spec"] for v in first.user_volumes],
    ]
    assert "{user}" not in json.dumps(filled) and "{server}" not in json.dumps(filled)


# --- properties over generated instances ---------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance_specs(), users(GROUP_POOL), hub_names(), hub_names(), st.data())
def test_generated_storage_renders_valid_and_filled(
    spec: InstanceSpec, user: UserContext, user_name: str, server: str, data: st.DataObject
) -> None:
    """Whatever the profile's storage (templated claims, paths, attributes and sub paths,
    per-server PVs, /dev/shm) and whatever the names: every manifest is valid under the strict
    schema, no placeholder survives, each PV and its claim name each other, and /dev/shm is
    never larger than the memory limit."""
    profiles = load_spec(spec)
    try:
        options = resolve_options(profiles, user, data.draw(spec_requests(spec)))
    except OptionsError:
        return
    generation = data.draw(st.integers(min_value=0, max_value=5))
    identity = ServerIdentity(user=user_name, server=server, namespace="jhub", home_generation=generation)
    manifests = render_manifests(options, identity)
    for manifest in manifests.objects():
        assert_valid(manifest, profiles.instance.pod_security.level)
    filled = json.dumps(
        [
            manifests.pod["spec"]["volumes"],
            manifests.pod["spec"]["containers"][0]["volumeMounts"],
            [v.pv["spec"] for v in manifests.user_volumes],
        ]
    )
    assert "{user}" not in filled and "{server}" not in filled
    for volume in manifests.user_volumes:
        name = volume.pv["metadata"]["name"]
        assert volume.pv["spec"]["claimRef"]["name"] == volume.claim["metadata"]["name"] == name
        assert volume.claim["spec"]["volumeName"] == name
        assert volume.pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    if options.shm_size is not None:
        assert options.shm_size <= options.memory_limit
    if manifests.home is not None:
        expected = generation + (1 if manifests.retired_home is not None else 0)
        assert manifests.home_generation == expected


# --- the form's words --------------------------------------------------------------------------


def test_the_form_says_how_long_an_old_home_is_kept_and_what_to_register() -> None:
    from .test_form import form_for

    hub = instance("hub")
    text = form_for(hub, ADA, reset_keeps_old_home=False).text
    assert "the current one is kept for 7 days, then deleted" in text
    assert "Register your MetaCentrum SSH key" in text  # next to the sshfs mount
    moved = form_for(hub, ADA, reset_keeps_old_home=True).text  # the local backend
    assert "moved aside, not deleted" in moved


def test_the_form_says_a_reset_erases_when_nothing_is_kept(tmp_path: Path) -> None:
    from .test_form import form_for

    profiles = load(tmp_path, instance_file=INSTANCE.replace("3d", "0"))
    assert (
        "everything in the current one is erased" in form_for(profiles, ADA, reset_keeps_old_home=False).text
    )
    profiles = load(tmp_path)
    assert "kept for 3 days" in form_for(profiles, ADA, reset_keeps_old_home=False).text


def test_an_inline_nfs_mount_is_refused_under_the_restricted_standard(tmp_path: Path) -> None:
    """The restricted Pod Security Standard allows no NFS volume: a namespace enforcing it would
    refuse every pod with the mount, so the loader refuses the file and says what to do instead."""
    restricted = INSTANCE.replace("pod_security: baseline  # the profile's inline NFS mounts need it\n", "")
    with pytest.raises(ProfileError) as raised:
        load(tmp_path, instance_file=restricted)
    text = str(raised.value)
    assert "lab.yaml: mounts.1.nfs: an inline NFS volume is not allowed" in text
    assert "lab.yaml: mounts.2.nfs:" in text
    assert "pod_security: baseline" in text
    # The same mounts through a claim (the hub instance's shared scratch) load under restricted.
    claims = PROFILE.replace(
        "nfs: {server: nfs.example.org, path: /exports/home}", "pvc: {claim_name: scratch}"
    )
    claims = claims.replace(
        'nfs: {server: nfs.example.org, path: "/exports/{user}"}', 'pvc: {claim_name: "nfs-{user}"}'
    )
    assert (
        load(tmp_path, profile=claims, instance_file=restricted).instance.pod_security.level == "restricted"
    )
