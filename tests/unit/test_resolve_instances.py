"""Resolution against generated instances (issue 14, item 10), checked by an independent oracle.

``strategies.instance_specs`` draws whole instance folders (files written to a temporary folder and
loaded by ``load_profiles``) together with a plain description of what the files say. The oracle
below reads only that description and restates the documented rules (docs/requests.md,
ARCHITECTURE.md "Requests", the model docstrings behind docs/profiles/reference.rst); it imports
nothing from the resolver or the form but the entry point under test, its result types and the
list of request keys.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einfra_spawner import (
    REQUEST_KEYS,
    OptionsError,
    ProfileSet,
    ResolvedOptions,
    UserContext,
    resolve_options,
)

from .strategies import (
    CPU_MILLICORES,
    CUSTOM_REFERENCES,
    GPU_RESOURCES,
    GROUP_POOL,
    MEMORY_BYTES,
    NOT_REFERENCES,
    GpuSpec,
    InstanceSpec,
    ProfileSpec,
    QuantitySpec,
    cpu_spellings,
    instance_specs,
    load_spec,
    memory_spellings,
    requests,
    spec_requests,
    spec_values,
    users,
)

NO_GPU = "none"  # docs/requests.md: the GPU id that means no GPU
CUSTOM = "custom"  # the image_choice of a custom image (ResolvedOptions' documented contract)
# Loading an instance (YAML and validation) costs more than resolving: each generated instance
# serves several requests, and 100 instances per property keep the file to a few tens of seconds.
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_INSTANCE = 4


# --- the oracle: the documented rules, restated on the generated description ---------------------


def may(spec: InstanceSpec, user: UserContext, groups: Sequence[str]) -> bool:
    """Something limited to ``groups`` is open to the user: no groups means everyone; otherwise a
    member of one of them; an admin too where the instance lets admins bypass groups."""
    if not groups:
        return True
    if user.admin and spec.admins_bypass_groups:
        return True
    return any(group in user.groups for group in groups)


def open_profiles(spec: InstanceSpec, user: UserContext) -> list[ProfileSpec]:
    return [p for p in spec.profiles if may(spec, user, p.groups)]


def default_profile(spec: InstanceSpec, user: UserContext) -> ProfileSpec | None:
    """docs/requests.md: without ``profile``, the instance's ``default_profile`` (or the first
    profile open to you); ``None`` when no profile is open to the user."""
    offered = open_profiles(spec, user)
    chosen = [p for p in offered if p.slug == spec.default_profile]
    return (chosen + offered)[0] if offered else None


def gpu_of(profile: ProfileSpec, gpu_id: str) -> GpuSpec:
    (gpu,) = [g for g in profile.gpus if g.id == gpu_id]
    return gpu


def default_gpu(profile: ProfileSpec) -> GpuSpec:
    """The ``default`` key, else the first choice (``none`` when the file has no GPU key)."""
    return gpu_of(profile, profile.gpu_default) if profile.gpu_default else profile.gpus[0]


def default_image(profile: ProfileSpec) -> tuple[str, str]:
    """(id, reference) of the image taken without ``image``: the ``default`` key, else the first."""
    wanted = profile.image.default or profile.image.choices[0][0]
    (choice,) = [(i, r) for i, r, _ in profile.image.choices if i == wanted]
    return choice


def default_value(option: QuantitySpec) -> int:
    return option.default if option.default is not None else option.choices[0][0]


def open_values(spec: InstanceSpec, user: UserContext, option: QuantitySpec) -> list[int]:
    return [value for value, groups in option.choices if may(spec, user, groups)]


def cpu_option(profile: ProfileSpec, gpu: GpuSpec) -> QuantitySpec:
    """A GPU choice's own CPU choices, where it has them, replace the profile's."""
    return gpu.cpu or profile.cpu


def memory_option(profile: ProfileSpec, gpu: GpuSpec) -> QuantitySpec:
    return gpu.memory or profile.memory


def counts(gpu: GpuSpec) -> list[int]:
    """docs/requests.md: from 1 to the choice's max_count; 0 with ``none``."""
    return [0] if gpu.id == NO_GPU else list(range(1, gpu.max_count + 1))


#: What ``home`` may ask for under each ``reset`` mode ("keep" under ``always`` is not listed: the
#: documentation does not say whether it is refused or ignored, so no property depends on it).
HOME_VALUES = {"never": ["keep"], "allowed": ["keep", "reset"], "always": ["reset"]}


def open_mounts(spec: InstanceSpec, user: UserContext, profile: ProfileSpec) -> list[str]:
    return [m.id for m in profile.mounts if may(spec, user, m.groups)]


def open_optional_mounts(spec: InstanceSpec, user: UserContext, profile: ProfileSpec) -> list[str]:
    return [m.id for m in profile.mounts if m.optional and may(spec, user, m.groups)]


def gated_only_images(spec: InstanceSpec, user: UserContext, profile: ProfileSpec) -> set[str]:
    """References of choices closed to the user that no open choice offers (issue 11: those are
    refused even where a custom pattern matches them)."""
    choices = profile.image.choices
    offered = {r for _, r, g in choices if may(spec, user, g)}
    return {r for _, r, g in choices if not may(spec, user, g)} - offered


# Docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest], path
# components in lower case. Looser than a registry's checks, so only a necessary condition.
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
DOCKER_REFERENCE = re.compile(
    rf"(?:{_HOST}(?:\.{_HOST})*(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


def custom_allowed(spec: InstanceSpec, user: UserContext, profile: ProfileSpec, reference: str) -> bool:
    """A custom image: the profile allows them to the user, the pattern matches the reference as
    a whole, and it is an image reference at all."""
    image = profile.image
    return (
        len(reference) <= 255
        and DOCKER_REFERENCE.fullmatch(reference) is not None
        and image.custom_pattern is not None
        and may(spec, user, image.custom_groups)
        and re.fullmatch(image.custom_pattern, reference) is not None
        and reference not in gated_only_images(spec, user, profile)
    )


@dataclass(frozen=True)
class Outcome:
    """The part of ``ResolvedOptions`` the documented rules decide."""

    profile: str
    image: str
    image_choice: str
    gpu: tuple[str, str, int] | None  # (id, resource, count)
    cpu: tuple[int, int]  # (limit, guarantee) in millicores
    memory: tuple[int, int]  # (limit, guarantee) in bytes
    home: tuple[bool, bool] | None  # (ephemeral, reset)
    mounts: frozenset[str]


def observed(options: ResolvedOptions) -> Outcome:
    return Outcome(
        profile=options.profile,
        image=options.image,
        image_choice=options.image_choice,
        gpu=(options.gpu.id, options.gpu.resource, options.gpu.count) if options.gpu else None,
        cpu=(options.cpu_limit, options.cpu_guarantee),
        memory=(options.memory_limit, options.memory_guarantee),
        home=(options.home.ephemeral, options.home.reset) if options.home else None,
        mounts=frozenset(m.id for m in options.mounts),
    )


def expected(spec: InstanceSpec, user: UserContext, asked: Mapping[str, Any]) -> Outcome:
    """What a request must give, from the *meaning* of each key asked (``profile``: a slug;
    ``image``: ``("choice", id)`` or ``("custom", reference)``; ``gpu``: an id; ``gpu_count``,
    ``cpu`` (millicores), ``memory`` (bytes): integers; ``home``: keep/reset; ``mounts``: a set of
    ids). Every key not asked takes its default. The caller has checked that each value is open."""
    profile = spec.profile(asked["profile"]) if "profile" in asked else default_profile(spec, user)
    assert profile is not None
    image = default_image(profile)
    if "image" in asked:
        kind, value = asked["image"]
        image = (
            (CUSTOM, value) if kind == CUSTOM else next(c[:2] for c in profile.image.choices if c[0] == value)
        )
    gpu = gpu_of(profile, asked["gpu"]) if "gpu" in asked else default_gpu(profile)
    count = asked.get("gpu_count", 0 if gpu.id == NO_GPU else 1)
    resources = dict(spec.gpu_types)

    def quantity(key: str, option: QuantitySpec) -> tuple[int, int]:
        # The choice is the limit; the guarantee is the request (the limit itself when absent).
        limit = asked[key] if key in asked else default_value(option)
        return limit, option.guarantee if option.guarantee is not None else limit

    home = None
    if profile.home is not None:
        # ``always``: a fresh home at every start; ``reset`` only when asked and allowed.
        home = (profile.home == "always", profile.home == "allowed" and asked.get("home") == "reset")
    open_ids = open_mounts(spec, user, profile)
    mounts = frozenset(
        m.id
        for m in profile.mounts
        if m.id in open_ids
        and (not m.optional or (m.id in asked["mounts"] if "mounts" in asked else m.default))
    )
    return Outcome(
        profile=profile.slug,
        image=image[1],
        image_choice=image[0],
        gpu=None if gpu.id == NO_GPU else (gpu.id, resources[gpu.id], count),
        cpu=quantity("cpu", cpu_option(profile, gpu)),
        memory=quantity("memory", memory_option(profile, gpu)),
        home=home,
        mounts=mounts,
    )


# --- reading a request as the documentation does (for requests of any shape) ------------------


def text(value: Any) -> str | None:
    """A text value: a JSON string, or a form's list of one string."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            return None
        value = value[0]
    return value.strip() if isinstance(value, str) else None


_QUANTITY = re.compile(r"\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|m|k|M|G|T)?")
_UNITS = {"": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10**3), "M": Decimal(10**6)}
_UNITS |= {"G": Decimal(10**9), "T": Decimal(10**12)}
_UNITS |= {"Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40)}


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity (``4``, ``"4"``, ``"4000m"``, ``"16Gi"``); ``None`` when this small
    reading does not know the spelling (then only membership in the choices is checked)."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        match = _QUANTITY.fullmatch(value.strip())
        if match:
            return Decimal(match[1]) * _UNITS[match[2] or ""]
    return None


def count(value: Any) -> int | None:
    """A GPU count: a JSON number with no fraction, or a string of digits."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"0|[1-9][0-9]*", value.strip()):
        return int(value.strip())
    return None


def id_set(value: Any) -> frozenset[str] | None:
    """Mount ids: a list of ids (or one id); empty strings name nothing."""
    items = value if isinstance(value, (list, tuple)) else [value]
    ids = [text(item) for item in items]
    if any(i is None for i in ids):
        return None
    return frozenset(i for i in ids if i)


def check_only_granted(
    spec: InstanceSpec, user: UserContext, request: Mapping[str, Any], options: ResolvedOptions
) -> None:
    """Everything granted is open to the user's groups, is what the request asked for (a key
    present is never answered by a default), and every key left out takes its default."""
    profile = spec.profile(options.profile)
    assert profile is not None
    assert may(spec, user, profile.groups), f"profile {profile.slug} is closed to {user.groups}"
    asked: dict[str, Any] = {}
    if "profile" in request:
        assert text(request["profile"]) == profile.slug
        asked["profile"] = profile.slug
    ids = {i: g for i, _, g in profile.image.choices}
    if options.image_choice == CUSTOM:
        assert custom_allowed(spec, user, profile, options.image), options.image
    else:
        assert may(spec, user, ids[options.image_choice]), f"image {options.image_choice}"
    if "image" in request:
        wanted = text(request["image"])
        if wanted in ids:  # an id names its choice, never a custom reference
            assert options.image_choice == wanted
        else:
            assert options.image_choice == CUSTOM and options.image == wanted
        kind = CUSTOM if options.image_choice == CUSTOM else "choice"
        asked["image"] = (kind, options.image if kind == CUSTOM else options.image_choice)
    gpu = gpu_of(profile, options.gpu.id if options.gpu else NO_GPU)
    assert may(spec, user, gpu.groups), f"gpu {gpu.id}"
    granted_count = options.gpu.count if options.gpu else 0
    assert granted_count in counts(gpu), f"{granted_count} GPUs of {gpu.id}"
    if "gpu" in request:
        assert text(request["gpu"]) == gpu.id
        asked["gpu"] = gpu.id
    if "gpu_count" in request:
        assert count(request["gpu_count"]) == granted_count
        asked["gpu_count"] = granted_count
    for key, option, limit, scale in (
        ("cpu", cpu_option(profile, gpu), options.cpu_limit, 1000),
        ("memory", memory_option(profile, gpu), options.memory_limit, 1),
    ):
        assert limit in open_values(spec, user, option), f"{key} {limit}"
        if key in request:
            value = quantity(request[key])
            assert value is None or value * scale == limit, f"{key}: asked {request[key]!r}, got {limit}"
            asked[key] = limit
    if "home" in request:
        assert profile.home is not None
        wanted = text(request["home"])
        assert wanted in HOME_VALUES[profile.home] or (profile.home == "always" and wanted == "keep")
        asked["home"] = wanted
    if "mounts" in request:
        wanted_mounts = id_set(request["mounts"])
        assert wanted_mounts is not None and wanted_mounts <= set(open_mounts(spec, user, profile))
        asked["mounts"] = wanted_mounts
    assert observed(options) == expected(spec, user, asked)


# --- drawing requests of allowed values, and forbidden ones -----------------------------------


def spelled_text(value: str) -> st.SearchStrategy[Any]:
    """A JSON string, or a form field (a list of one string)."""
    return st.sampled_from([value, [value]])


def spelled(values: Sequence[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from(values).flatmap(lambda v: st.sampled_from([v, [str(v)]]))


def draw_allowed(
    data: st.DataObject, spec: InstanceSpec, user: UserContext
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request of values open to the user, each key present or not; and its meaning."""
    request: dict[str, Any] = {}
    asked: dict[str, Any] = {}
    profile = default_profile(spec, user)
    assert profile is not None
    if data.draw(st.booleans(), label="ask profile"):
        profile = data.draw(st.sampled_from(open_profiles(spec, user)), label="profile")
        request["profile"] = data.draw(spelled_text(profile.slug))
        asked["profile"] = profile.slug
    images: list[tuple[str, str]] = [("choice", i) for i, _, g in profile.image.choices if may(spec, user, g)]
    images += [(CUSTOM, r) for r in CUSTOM_REFERENCES if custom_allowed(spec, user, profile, r)]
    if data.draw(st.booleans(), label="ask image"):
        asked["image"] = data.draw(st.sampled_from(images), label="image")
        request["image"] = data.draw(spelled_text(asked["image"][1]))
    gpu = default_gpu(profile)
    if data.draw(st.booleans(), label="ask gpu"):
        gpu = data.draw(st.sampled_from([g for g in profile.gpus if may(spec, user, g.groups)]), label="gpu")
        request["gpu"] = data.draw(spelled_text(gpu.id))
        asked["gpu"] = gpu.id
    if data.draw(st.booleans(), label="ask gpu_count"):
        asked["gpu_count"] = data.draw(st.sampled_from(counts(gpu)), label="gpu_count")
        n = asked["gpu_count"]
        request["gpu_count"] = data.draw(st.sampled_from([n, str(n), [str(n)], float(n)]))
    for key, option, spellings in (
        ("cpu", cpu_option(profile, gpu), cpu_spellings),
        ("memory", memory_option(profile, gpu), memory_spellings),
    ):
        if data.draw(st.booleans(), label=f"ask {key}"):
            asked[key] = data.draw(st.sampled_from(open_values(spec, user, option)), label=key)
            request[key] = data.draw(spelled(spellings(asked[key])))
    if profile.home is not None and data.draw(st.booleans(), label="ask home"):
        asked["home"] = data.draw(st.sampled_from(HOME_VALUES[profile.home]), label="home")
        request["home"] = data.draw(spelled_text(asked["home"]))
    if data.draw(st.booleans(), label="ask mounts"):
        chosen = data.draw(st.permutations(open_optional_mounts(spec, user, profile)), label="mounts")
        chosen = chosen[: data.draw(st.integers(0, len(chosen)))]
        request["mounts"] = chosen
        asked["mounts"] = frozenset(chosen)
    return request, asked


def forbidden(
    spec: InstanceSpec, user: UserContext, profile: ProfileSpec, gpu: GpuSpec, key: str
) -> list[Any]:
    """Values of ``key`` the rules refuse to this user (for this profile and GPU choice)."""
    if key == "profile":
        return [p.slug for p in spec.profiles if not may(spec, user, p.groups)] + ["nope"]
    if key == "image":
        ids = {i for i, _, _ in profile.image.choices}
        closed = [i for i, _, g in profile.image.choices if not may(spec, user, g)]
        references = [r for _, r, _ in profile.image.choices] + list(CUSTOM_REFERENCES)
        refused = [r for r in references if r not in ids and not custom_allowed(spec, user, profile, r)]
        return closed + refused + list(NOT_REFERENCES) + ["nope"]
    if key == "gpu":
        offered = {g.id for g in profile.gpus}
        closed = [g.id for g in profile.gpus if not may(spec, user, g.groups)]
        return closed + [i for i in (NO_GPU, *GPU_RESOURCES) if i not in offered] + ["nope"]
    if key == "gpu_count":
        return [1, "1", 2] if gpu.id == NO_GPU else [0, "0", -1, 2.5, gpu.max_count + 1]
    if key in ("cpu", "memory"):
        values, option, spell = (
            (CPU_MILLICORES, cpu_option(profile, gpu), cpu_spellings)
            if key == "cpu"
            else (MEMORY_BYTES, memory_option(profile, gpu), memory_spellings)
        )
        allowed = open_values(spec, user, option)
        return [s for v in values if v not in allowed for s in spell(v)] + ["lots", "0", -1]
    if key == "home":
        if profile.home is None:
            return ["keep", "reset"]
        return ["wipe"] + (["reset"] if profile.home == "never" else [])
    assert key == "mounts"
    return [*([m.id] for m in profile.mounts if not may(spec, user, m.groups)), ["nope"]]


def allowed_names(
    spec: InstanceSpec, user: UserContext, profile: ProfileSpec, gpu: GpuSpec, key: str
) -> set[Any] | None:
    """What a refusal of ``key`` must list as allowed: only what is open to the user."""
    if key == "profile":
        return {p.slug for p in open_profiles(spec, user)}
    if key == "image":
        return {i for i, _, g in profile.image.choices if may(spec, user, g)}
    if key == "gpu":
        return {g.id for g in profile.gpus if may(spec, user, g.groups)}
    if key == "gpu_count":
        return {str(n) for n in counts(gpu)}
    if key == "cpu":
        return {Decimal(v) / 1000 for v in open_values(spec, user, cpu_option(profile, gpu))}
    if key == "memory":
        return {Decimal(v) for v in open_values(spec, user, memory_option(profile, gpu))}
    if key == "home":
        return (
            None
            if profile.home is None
            else set(HOME_VALUES[profile.home]) | ({"keep"} if profile.home == "always" else set())
        )
    return set(open_optional_mounts(spec, user, profile))


def snapshot(profiles: ProfileSet) -> Any:
    return (profiles.instance.model_dump(), [p.model_dump() for p in profiles.profiles], profiles.source)


def any_request(spec: InstanceSpec, profiles: ProfileSet) -> st.SearchStrategy[Any]:
    """Values from the generated files (open to the user or not), near misses, and junk; plus the
    request shapes the reference-instance properties use."""
    return st.one_of(spec_requests(spec), spec_requests(spec), requests(profiles))


def draw_request(data: st.DataObject, spec: InstanceSpec, user: UserContext, profiles: ProfileSet) -> Any:
    """A third of the time any request (most are refused at their first bad key); else values
    open to the user with one key of any value, so that every step of the resolution is reached."""
    if default_profile(spec, user) is None or data.draw(st.integers(0, 2), label="any request") == 0:
        return data.draw(any_request(spec, profiles), label="request")
    request, _ = draw_allowed(data, spec, user)
    key = data.draw(st.sampled_from(REQUEST_KEYS), label="odd key")
    request[key] = data.draw(spec_values(spec)[key], label="odd value")
    return request


# --- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(instance_specs())
def test_generated_instances_load_as_written(spec: InstanceSpec) -> None:
    """The generator and the loader agree on what the files say (else the oracle reads another
    instance than the resolver): profiles in the order offered, their choices, the GPU types."""
    profiles = load_spec(spec)
    assert [p.slug for p in profiles.profiles] == [p.slug for p in spec.profiles]
    assert sorted(profiles.instance.gpu_types) == sorted(t for t, _ in spec.gpu_types)
    for loaded, written in zip(profiles.profiles, spec.profiles, strict=True):
        assert [c.id for c in loaded.image.choices] == [c[0] for c in written.image.choices]
        assert [c.value for c in loaded.cpu.choices] == [v for v, _ in written.cpu.choices]
        assert [c.value for c in loaded.memory.choices] == [v for v, _ in written.memory.choices]
        assert [c.id for c in loaded.gpu.choices] == [g.id for g in written.gpus]
        assert [m.id for m in loaded.mounts] == [m.id for m in written.mounts]


@PROPERTY
@given(instance_specs(), users(GROUP_POOL), st.data())
def test_resolution_is_total(spec: InstanceSpec, user: UserContext, data: st.DataObject) -> None:
    """Any request gives ResolvedOptions or an OptionsError that names a key; nothing else."""
    profiles = load_spec(spec)
    for _ in range(PER_INSTANCE):
        request = draw_request(data, spec, user, profiles)
        try:
            options = resolve_options(profiles, user, request)
        except OptionsError as error:
            assert isinstance(error.key, str) and str(error)
            continue
        assert isinstance(options, ResolvedOptions)


@PROPERTY
@given(instance_specs(), users(GROUP_POOL), st.data())
def test_nothing_is_granted_beyond_the_users_groups(
    spec: InstanceSpec, user: UserContext, data: st.DataObject
) -> None:
    """Whatever the request, a granted result holds only what the user's groups open (with the
    admin bypass where the instance allows it), what was asked, and defaults for the rest."""
    profiles = load_spec(spec)
    for _ in range(PER_INSTANCE):
        request = draw_request(data, spec, user, profiles)
        try:
            options = resolve_options(profiles, user, request)
        except OptionsError as error:
            if error.key == "profile":  # a refusal never names a profile closed to the user
                assert set(error.allowed) <= {p.slug for p in open_profiles(spec, user)}
            continue
        check_only_granted(spec, user, request, options)


@PROPERTY
@given(instance_specs(), users(GROUP_POOL))
def test_an_empty_request_gives_the_defaults(spec: InstanceSpec, user: UserContext) -> None:
    """No keys: the instance's default profile for this user, and every option's default; a
    profile alone: that profile's defaults. No profile open: a refusal naming ``profile``."""
    profiles = load_spec(spec)
    if default_profile(spec, user) is None:
        with pytest.raises(OptionsError) as caught:
            resolve_options(profiles, user, {})
        assert caught.value.key == "profile" and caught.value.allowed == ()
        return
    assert observed(resolve_options(profiles, user, {})) == expected(spec, user, {})
    for profile in open_profiles(spec, user):
        options = resolve_options(profiles, user, {"profile": profile.slug})
        assert observed(options) == expected(spec, user, {"profile": profile.slug})


@PROPERTY
@given(instance_specs(), users(GROUP_POOL), st.data())
def test_a_request_of_allowed_values_is_granted_exactly(
    spec: InstanceSpec, user: UserContext, data: st.DataObject
) -> None:
    """Values open to the user, in any documented spelling, are granted as asked; the rest are
    defaults; a GPU choice's own CPU and memory replace the profile's."""
    if default_profile(spec, user) is None:
        return
    profiles = load_spec(spec)
    for _ in range(PER_INSTANCE):
        request, asked = draw_allowed(data, spec, user)
        options = resolve_options(profiles, user, request)
        assert observed(options) == expected(spec, user, asked), request


@PROPERTY
@given(instance_specs(), users(GROUP_POOL), st.data())
def test_one_forbidden_value_is_refused_naming_its_key(
    spec: InstanceSpec, user: UserContext, data: st.DataObject
) -> None:
    """An allowed request with one value the rules refuse is refused, naming that key and, as
    allowed, only what is open to the user."""
    if default_profile(spec, user) is None:
        return
    profiles = load_spec(spec)
    for _ in range(PER_INSTANCE):
        check_one_forbidden_value(data, spec, user, profiles)


def check_one_forbidden_value(
    data: st.DataObject, spec: InstanceSpec, user: UserContext, profiles: ProfileSet
) -> None:
    request, asked = draw_allowed(data, spec, user)
    profile = spec.profile(asked.get("profile", "")) or default_profile(spec, user)
    assert profile is not None
    gpu = gpu_of(profile, asked["gpu"]) if "gpu" in asked else default_gpu(profile)
    keys = ["profile", "image", "gpu", "gpu_count", "cpu", "memory", "home", "mounts"]
    key = data.draw(st.sampled_from(keys), label="bad key")
    request[key] = data.draw(st.sampled_from(forbidden(spec, user, profile, gpu, key)), label="bad value")
    # The other keys were chosen for this profile and GPU: a bad profile or GPU leaves them unknown.
    dependent = {"profile": keys, "gpu": ["gpu_count", "cpu", "memory"]}.get(key, [])
    for other in dependent:
        if other != key:
            request.pop(other, None)
    with pytest.raises(OptionsError) as caught:
        resolve_options(profiles, user, request)
    error = caught.value
    assert error.key == key, str(error)
    names = allowed_names(spec, user, profile, gpu, key)
    if key in ("cpu", "memory"):
        assert {quantity(a) for a in error.allowed} <= (names or set()), str(error)
    elif names is not None:
        assert set(error.allowed) <= names, str(error)


@PROPERTY
@given(instance_specs(), users(GROUP_POOL), st.data())
def test_resolution_is_deterministic_and_pure(
    spec: InstanceSpec, user: UserContext, data: st.DataObject
) -> None:
    """The same input gives equal results (or equal refusals), also after other requests and on
    a fresh load of the same files; neither the instance nor the requests are changed."""
    profiles = load_spec(spec)
    fresh = load_spec(spec, fresh=True)
    batch = [draw_request(data, spec, user, profiles) for _ in range(PER_INSTANCE)]
    before, batch_copy = snapshot(profiles), copy.deepcopy(batch)

    def outcome(on: ProfileSet, request: Any) -> Any:
        try:
            return resolve_options(on, user, request)
        except OptionsError as error:
            return ("refused", error.key, error.allowed, str(error))

    once = [outcome(profiles, r) for r in batch]
    assert [outcome(profiles, r) for r in reversed(batch)] == once[::-1]
    assert [outcome(fresh, r) for r in batch] == once
    assert snapshot(profiles) == before
    assert repr(batch) == repr(batch_copy)  # repr: NaN != NaN, but it prints the same


@PROPERTY
@given(instance_specs(), users(GROUP_POOL), st.data())
def test_limits_are_at_least_guarantees(spec: InstanceSpec, user: UserContext, data: st.DataObject) -> None:
    """Limits are chosen values open to the user and never below the guarantees, which come from
    the option in force: the GPU choice's own CPU or memory where it has them, else the profile's."""
    profiles = load_spec(spec)
    for _ in range(PER_INSTANCE):
        request = draw_request(data, spec, user, profiles)
        try:
            options = resolve_options(profiles, user, request)
        except OptionsError:
            continue
        check_limits(spec, user, options)


def check_limits(spec: InstanceSpec, user: UserContext, options: ResolvedOptions) -> None:
    assert options.cpu_guarantee <= options.cpu_limit
    assert options.memory_guarantee <= options.memory_limit
    profile = spec.profile(options.profile)
    assert profile is not None
    gpu = gpu_of(profile, options.gpu.id if options.gpu else NO_GPU)
    for option, limit, guarantee in (
        (cpu_option(profile, gpu), options.cpu_limit, options.cpu_guarantee),
        (memory_option(profile, gpu), options.memory_limit, options.memory_guarantee),
    ):
        assert limit in open_values(spec, user, option)
        assert guarantee == (option.guarantee if option.guarantee is not None else limit)


@PROPERTY
@given(instance_specs(), users(GROUP_POOL))
def test_a_custom_image_is_granted_only_on_a_full_match(spec: InstanceSpec, user: UserContext) -> None:
    """Every profile open to the user, asked for each candidate reference: granted as a custom
    image exactly when the profile allows the user custom images, the pattern matches the whole
    reference, it is a reference, and it is not the image of a choice closed to the user."""
    profiles = load_spec(spec)
    for profile in open_profiles(spec, user):
        for reference in (*CUSTOM_REFERENCES, *NOT_REFERENCES, *(r for _, r, _ in profile.image.choices)):
            request = {"profile": profile.slug, "image": reference}
            if custom_allowed(spec, user, profile, reference):
                options = resolve_options(profiles, user, request)
                assert (options.image_choice, options.image) == (CUSTOM, reference)
                continue
            with pytest.raises(OptionsError) as caught:
                resolve_options(profiles, user, request)
            assert caught.value.key == "image", str(caught.value)
            assert set(caught.value.allowed) <= {i for i, _, g in profile.image.choices if may(spec, user, g)}
