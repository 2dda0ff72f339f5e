"""Resolution: defaults, group gating, form-shaped input, refusals, and its properties."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einfra_spawner import OptionsError, ProfileSet, ResolvedOptions, UserContext, resolve_options
from einfra_spawner.models import NO_GPU
from einfra_spawner.options import CUSTOM_IMAGE
from einfra_spawner.resolve import granted

from .strategies import INSTANCES, KNOWN_GROUPS, SAME_IMAGE, gated_instance, instance, junk, requests, users

HUB = instance("hub")
NOBODY = UserContext(name="nobody")
SCIENTIST = UserContext(name="ada", groups=frozenset({"gpu", "meta", "projects"}))
GiB = 2**30


def refused(profiles: ProfileSet, user: UserContext, request: Any) -> OptionsError:
    with pytest.raises(OptionsError) as caught:
        resolve_options(profiles, user, request)
    return caught.value


def test_defaults() -> None:
    options = resolve_options(HUB, NOBODY, {})
    assert options.profile == "jupyterlab"
    assert options.image == "quay.io/jupyter/scipy-notebook:2025-03-10"
    assert (options.cpu_limit, options.cpu_guarantee) == (2000, 1000)
    assert (options.memory_limit, options.memory_guarantee) == (8 * GiB, 4 * GiB)
    assert options.gpu is None
    assert options.home is not None and not options.home.reset and not options.home.ephemeral
    assert [m.id for m in options.mounts] == ["scratch"]  # the shared scratch, optional but default
    # A missing profile takes the default profile with all of its rules.
    assert resolve_options(HUB, NOBODY, {"profile": "jupyterlab"}) == options


def test_a_full_gpu_request() -> None:
    options = resolve_options(
        HUB,
        SCIENTIST,
        {"gpu": "a40", "gpu_count": "2", "cpu": "8", "memory": "64Gi", "mounts": ["metacentrum"]},
    )
    assert options.gpu is not None
    assert (options.gpu.id, options.gpu.resource, options.gpu.count) == ("a40", "nvidia.com/gpu", 2)
    assert options.gpu.node_selector == (("nvidia.com/gpu.product", "NVIDIA-A40"),)
    assert (options.cpu_limit, options.cpu_guarantee) == (8000, 1000)
    assert options.memory_limit == 64 * GiB
    assert [m.id for m in options.mounts] == ["metacentrum"]


def test_form_shaped_values_are_accepted() -> None:
    form = {
        "profile": ["jupyterlab"],
        "cpu": ["4"],
        "memory": ["16Gi"],
        "gpu": ["mig-1g.10gb"],
        "gpu_count": ["3"],
        "home": ["reset"],
        "mounts": ["projects", "metacentrum"],
    }
    options = resolve_options(HUB, SCIENTIST, form)
    assert options.cpu_limit == 4000 and options.memory_limit == 16 * GiB
    assert options.gpu is not None and options.gpu.count == 3
    assert options.home is not None and options.home.reset
    assert [m.id for m in options.mounts] == ["metacentrum", "projects"]  # the profile's order
    # JSON numbers and equivalent spellings of the same quantity are the same choice.
    assert resolve_options(HUB, SCIENTIST, {"cpu": 4, "memory": 16 * GiB}).cpu_limit == 4000
    assert resolve_options(HUB, SCIENTIST, {"cpu": "4000m"}).cpu_limit == 4000


def test_optional_mount_defaults_apply_only_when_mounts_is_missing() -> None:
    member = UserContext(name="p", groups=frozenset({"projects"}))
    assert [m.id for m in resolve_options(HUB, member, {}).mounts] == ["scratch", "projects"]
    assert resolve_options(HUB, member, {"mounts": []}).mounts == ()


def test_custom_images_must_match_as_a_whole() -> None:
    options = resolve_options(HUB, NOBODY, {"image": "cerit.io/hubs/custom:1.0"})
    assert (options.image, options.image_choice) == ("cerit.io/hubs/custom:1.0", CUSTOM_IMAGE)
    for forged in (
        "cerit.io/x:1 extra",
        "cerit.io/x:1.evil.com/y",
        "evil.io/cerit.io/x:1",
        "cerit.io.evil.com/x:1",
        "cerit.io/x",
        "cerit.io/x:1\nevil",
        "CERIT.IO/x:1",
    ):
        error = refused(HUB, NOBODY, {"image": forged})
        assert error.key == "image"
        assert "custom images must come from cerit.io" in str(error)
        assert "scipy" in error.allowed
    # Surrounding white space from a text field is not part of the reference.
    assert resolve_options(HUB, NOBODY, {"image": " cerit.io/x:1\n"}).image == "cerit.io/x:1"


# --- issue 11: a choice's image behind groups is not a custom image for everyone else ------------

GATED = gated_instance()
LICENSEE = UserContext(name="lee", groups=frozenset({"lic"}))
OPEN_TO_ALL = ("open", "shared-open")


def test_a_gated_image_is_refused_by_id_and_by_reference() -> None:
    # The custom pattern accepts "licensed" (docker.io/library/licensed:latest), but the user meant
    # the choice: an id is never read as a custom reference.
    by_id = refused(GATED, NOBODY, {"image": "licensed"})
    assert (by_id.key, by_id.value, by_id.allowed) == ("image", "licensed", OPEN_TO_ALL)
    assert by_id.reason is not None and by_id.reason.startswith("is restricted")
    error = refused(GATED, NOBODY, {"image": "cerit.io/hubs/licensed:1"})
    assert (error.key, error.value, error.allowed) == ("image", "cerit.io/hubs/licensed:1", OPEN_TO_ALL)
    assert error.reason is not None and error.reason.startswith("is restricted")
    assert "'licensed'" in error.reason  # the choice it belongs to
    # The licensee gets the image either way.
    assert resolve_options(GATED, LICENSEE, {"image": "licensed"}).image == "cerit.io/hubs/licensed:1"
    by_reference = resolve_options(GATED, LICENSEE, {"image": "cerit.io/hubs/licensed:1"})
    assert (by_reference.image, by_reference.image_choice) == ("cerit.io/hubs/licensed:1", CUSTOM_IMAGE)


@pytest.mark.parametrize(
    ("choice", "reference"),
    [
        (choice, reference)
        for choice in ("licensed", "hub-tool", "pinned")
        for reference in SAME_IMAGE[choice]
    ],
)
def test_other_spellings_of_a_gated_image_are_refused(choice: str, reference: str) -> None:
    """Docker Hub's implicit registry, ``library/`` and ``:latest``; a digest decides over a tag."""
    error = refused(GATED, NOBODY, {"image": reference})
    assert error.key == "image" and error.reason is not None
    assert error.reason.startswith(f"is restricted: it is the image of choice {choice!r}")


def test_only_the_gated_reference_itself_is_refused() -> None:
    # Another tag is another image: the operator's pattern must exclude it (validate warns).
    assert resolve_options(GATED, NOBODY, {"image": "cerit.io/hubs/licensed:2"}).image_choice == CUSTOM_IMAGE
    # An image that an open choice offers too is not restricted.
    shared = resolve_options(GATED, NOBODY, {"image": "cerit.io/hubs/shared:1"})
    assert (shared.image, shared.image_choice) == ("cerit.io/hubs/shared:1", CUSTOM_IMAGE)


def test_admins_get_a_gated_image_only_when_they_bypass_groups() -> None:
    admin = UserContext(name="root", admin=True)
    assert refused(GATED, admin, {"image": "cerit.io/hubs/licensed:1"}).key == "image"
    bypassing = gated_instance(admins_bypass_groups=True)
    options = resolve_options(bypassing, admin, {"image": "cerit.io/hubs/licensed:1"})
    assert (options.image, options.image_choice) == ("cerit.io/hubs/licensed:1", CUSTOM_IMAGE)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    users((*KNOWN_GROUPS, "lic")),
    st.sampled_from(sorted(SAME_IMAGE)),
    st.booleans(),
    st.data(),
)
def test_no_user_gets_a_gated_image_without_its_groups(
    user: UserContext, choice_id: str, by_reference: bool, data: st.DataObject
) -> None:
    """Asked by id or by any spelling of its reference, a choice's image goes only to users who
    may choose it, or another choice with the same image."""
    profile = GATED.profiles[0]
    wanted = data.draw(st.sampled_from(SAME_IMAGE[choice_id])) if by_reference else choice_id
    try:
        options = resolve_options(GATED, user, {"image": wanted})
    except OptionsError as error:
        assert error.key == "image"
        return
    # An id names its choice, never a custom image (``licensed`` is a Docker Hub reference too).
    assert by_reference or options.image_choice == choice_id
    (choice,) = [c for c in profile.image.choices if c.id == choice_id]
    same_image = [c for c in profile.image.choices if c.image == choice.image]
    assert any(granted(c.groups, user, GATED.instance) for c in same_image)


@pytest.mark.parametrize(
    ("request_", "key", "allowed"),
    [
        ({"gpu": "a40"}, "gpu", ("none",)),
        ({"gpu": "none", "gpu_count": "1"}, "gpu_count", ("0",)),
        ({"cpu": 97}, "cpu", ("1 to 96 in steps of 1",)),
        ({"cpu": "2500m"}, "cpu", ("1 to 96 in steps of 1",)),
        ({"cpu": "lots"}, "cpu", ("1 to 96 in steps of 1",)),
        ({"memory": "8G"}, "memory", ("4Gi to 1Ti in steps of 1Gi",)),
        ({"profile": "rstudio", "cpu": "3"}, "cpu", ("1", "2", "4", "8", "16")),
        ({"home": "wipe"}, "home", ("keep", "reset")),
        ({"mounts": ["metacentrum"]}, "mounts", ("scratch",)),
        ({"profile": "admin-only"}, "profile", ("jupyterlab", "rstudio")),
        ({"image": "r-4.4"}, "image", ("minimal", "scipy", "datascience", "pytorch", "tensorflow")),
        (
            {"frobnicate": "yes"},
            "frobnicate",
            ("profile", "image", "cpu", "memory", "gpu", "gpu_count", "home", "mounts"),
        ),
    ],
)
def test_refusals_name_key_value_and_allowed(
    request_: dict[str, Any], key: str, allowed: tuple[str, ...]
) -> None:
    error = refused(HUB, NOBODY, request_)
    assert error.key == key
    assert error.allowed == allowed
    assert str(error).startswith(f"{key}: ")


def test_gpu_counts_are_bounded_per_type() -> None:
    assert refused(HUB, SCIENTIST, {"gpu": "h100", "gpu_count": 2}).allowed == ("1",)
    assert refused(HUB, SCIENTIST, {"gpu": "a40", "gpu_count": "0"}).allowed == ("1", "2")
    assert resolve_options(HUB, SCIENTIST, {"gpu": "a40", "gpu_count": 2.0}).gpu is not None


@pytest.mark.parametrize("value", [True, None, {"a": 1}, [], ["2", "4"], float("nan"), "x" * 1000, [["2"]]])
def test_odd_shapes_are_refused(value: Any) -> None:
    error = refused(HUB, NOBODY, {"cpu": value})
    assert error.key == "cpu"


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e300, 2.5, "2.0", True])
def test_odd_gpu_counts_are_refused(value: Any) -> None:
    error = refused(HUB, SCIENTIST, {"gpu": "a40", "gpu_count": value})
    assert error.key == "gpu_count"


def test_not_a_mapping() -> None:
    assert refused(HUB, NOBODY, ["cpu", "2"]).key == "request"
    assert refused(HUB, NOBODY, {1: "x"}).key == "1"


def test_fixed_options_accept_only_their_value() -> None:
    course = instance("course")
    options = resolve_options(course, NOBODY, {})
    assert options.home is not None and options.home.ephemeral
    assert (options.cpu_limit, options.cpu_guarantee) == (2000, 500)
    assert resolve_options(course, NOBODY, {"cpu": "2", "home": "reset"}) == options
    assert refused(course, NOBODY, {"cpu": "4"}).allowed == ("2",)
    assert refused(course, NOBODY, {"home": "keep"}).allowed == ("reset",)
    assert refused(course, NOBODY, {"gpu": "a40"}).allowed == ("none",)


def test_the_gpu_type_decides_cpu_and_memory() -> None:
    ai = instance("ai")
    default = resolve_options(ai, NOBODY, {})
    assert default.gpu is not None and default.gpu.id == "mig-1g.10gb"
    assert (default.cpu_limit, default.memory_limit) == (4000, 32 * GiB)
    h100 = resolve_options(ai, NOBODY, {"gpu": "h100"})
    assert (h100.cpu_limit, h100.cpu_guarantee, h100.memory_limit) == (32000, 16000, 256 * GiB)
    assert h100.gpu is not None and h100.gpu.tolerations
    assert refused(ai, NOBODY, {"gpu": "h100", "cpu": "4"}).allowed == ("32",)


def test_admins_bypass_groups_only_when_the_instance_says_so() -> None:
    admin = UserContext(name="root", admin=True)
    assert refused(HUB, admin, {"gpu": "a40"}).key == "gpu"
    permissive = dataclasses.replace(
        HUB, instance=HUB.instance.model_copy(update={"admins_bypass_groups": True})
    )
    assert resolve_options(permissive, admin, {"gpu": "a40"}).gpu is not None


def test_user_options_round_trip() -> None:
    options = resolve_options(
        HUB,
        SCIENTIST,
        {"gpu": "mig-2g.20gb", "gpu_count": 2, "image": "cerit.io/a/b:2", "home": "reset"},
    )
    assert options.user_options() == {
        "profile": "jupyterlab",
        "image": "cerit.io/a/b:2",
        "cpu": "2",
        "memory": "8Gi",
        "gpu": "mig-2g.20gb",
        "gpu_count": 2,
        "mounts": ["scratch", "projects"],
        "home": "reset",
    }
    assert resolve_options(HUB, SCIENTIST, options.user_options()) == options


def test_resolved_options_are_frozen() -> None:
    options = resolve_options(HUB, NOBODY, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.cpu_limit = 64000  # type: ignore[misc]


# --- properties --------------------------------------------------------------------------------


def assert_only_granted(profiles: ProfileSet, user: UserContext, options: ResolvedOptions) -> None:
    """An independent check that nothing in ``options`` is beyond the user's groups."""
    inst = profiles.instance

    def ok(groups: tuple[str, ...]) -> bool:
        return granted(groups, user, inst)

    profile = profiles.profile(options.profile)
    assert profile is not None and ok(profile.groups)
    if options.image_choice == CUSTOM_IMAGE:
        assert profile.image.custom is not None and ok(profile.image.custom.groups)
        assert profile.image.custom.matches(options.image)
        # Not the image of a choice the user may not have, unless a choice they may have offers it.
        offered = {c.image for c in profile.image.choices if ok(c.groups)}
        assert options.image not in {c.image for c in profile.image.choices} - offered
    else:
        (choice,) = [c for c in profile.image.choices if c.id == options.image_choice]
        assert ok(choice.groups) and choice.image == options.image
    gpu_id = options.gpu.id if options.gpu else NO_GPU
    (gpu,) = [c for c in profile.gpu.choices if c.id == gpu_id]
    assert ok(gpu.groups)
    if options.gpu:
        assert 1 <= options.gpu.count <= gpu.max_count
    cpu = gpu.cpu or profile.cpu
    memory = gpu.memory or profile.memory
    for option, value in ((cpu, options.cpu_limit), (memory, options.memory_limit)):
        if option.choices:
            assert any(c.value == value and ok(c.groups) for c in option.choices)
        else:  # a range: open to all admitted to the profile; bounds and step, exactly
            assert option.min is not None and option.max is not None
            step = option.step or (1000 if option is cpu else 2**30)
            assert option.min <= value <= option.max and (value - option.min) % step == 0
    assert options.cpu_guarantee <= options.cpu_limit
    assert options.memory_guarantee <= options.memory_limit
    for mount in options.mounts:
        (spec,) = [m for m in profile.mounts if m.id == mount.id]
        assert ok(spec.groups)
    if options.home is not None:
        assert profile.home is not None
        assert not options.home.reset or profile.home.reset == "allowed"


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_resolution_is_total_safe_and_deterministic(data: st.DataObject) -> None:
    profiles = data.draw(st.sampled_from([*map(instance, INSTANCES), GATED]))
    user = data.draw(users((*KNOWN_GROUPS, "lic")))
    request = data.draw(requests(profiles))
    try:
        options = resolve_options(profiles, user, request)
    except OptionsError as error:
        assert str(error)
        # Deterministic refusals too: the same request is refused the same way.
        with pytest.raises(OptionsError) as again:
            resolve_options(profiles, user, request)
        assert str(again.value) == str(error)
        return
    assert isinstance(options, ResolvedOptions)
    assert_only_granted(profiles, user, options)
    assert resolve_options(profiles, user, request) == options
    assert resolve_options(profiles, user, options.user_options()) == options


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([c.id for c in HUB.profiles[0].gpu.choices]),
    st.sampled_from(("image", "cpu", "memory", "gpu_count", "home", "mounts")),
    st.one_of(junk(), st.sampled_from([float("inf"), float("nan"), 2.0, -0.0, 10**400, "2", ["2"]])),
)
def test_any_value_of_one_key_is_resolved_or_refused(gpu: str, key: str, value: Any) -> None:
    """Beside a valid GPU choice (so that every later step is reached), one key of any value."""
    try:
        options = resolve_options(HUB, SCIENTIST, {"gpu": gpu, key: value})
    except OptionsError as error:
        assert error.key == key
        return
    assert_only_granted(HUB, SCIENTIST, options)
