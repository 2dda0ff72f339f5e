"""CPU, memory and GPU counts as ranges (``{min, max, step, default}``): loading, resolving, the form.

The oracle of the properties is plain integer arithmetic on what the file says (``RangeSpec``):
a value is allowed exactly when ``min <= value <= max`` and ``value - min`` is a whole number of
steps. The form's number field must span exactly that grid, so that the browser never offers what
the resolver refuses and never blocks what it grants.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einfra_spawner import (
    OptionsError,
    ProfileError,
    ProfileSet,
    UserContext,
    parse_profile_set,
    resolve_options,
)
from einfra_spawner.form import NumberInput, build_form, request_from_form
from einfra_spawner.quantities import format_cpu, format_memory

from .strategies import RangeSpec, instance, range_specs

HUB = instance("hub")
NOBODY = UserContext(name="nobody")
GPU_USER = UserContext(name="gina", groups=frozenset({"gpu"}))
GI = 2**30


def profiles_with(cpu: Any = 1, memory: Any = "1Gi", gpu: Any = None, prices: bool = False) -> ProfileSet:
    profile: dict[str, Any] = {
        "slug": "lab",
        "display_name": "Lab",
        "image": "quay.io/a/b:1",
        "cpu": cpu,
        "memory": memory,
    }
    if gpu is not None:
        profile["gpu"] = gpu
    instance_file: dict[str, Any] = {
        "name": "ranges",
        "display_name": "Ranges",
        "gpu_types": {"a40": {"display_name": "NVIDIA A40", "resource": "nvidia.com/gpu"}},
    }
    if prices:
        instance_file["prices"] = {"currency": "EUR", "cpu_hour": "0.05", "memory_gib_hour": "0.01"}
    return parse_profile_set(
        {"instance.yaml": yaml.safe_dump(instance_file), "lab.yaml": yaml.safe_dump(profile)}, source="test"
    )


def problems(**option: Any) -> str:
    with pytest.raises(ProfileError) as caught:
        profiles_with(**option)
    return str(caught.value)


# --- loading -----------------------------------------------------------------------------------


def test_a_range_loads_in_millicores_and_bytes() -> None:
    loaded = profiles_with(
        cpu={"min": 0.5, "max": 4, "step": "250m", "default": "1500m", "guarantee": "500m"},
        memory={"min": "512Mi", "max": "4Gi", "step": "512Mi"},
    ).profiles[0]
    assert (loaded.cpu.min, loaded.cpu.max, loaded.cpu.step, loaded.cpu.default) == (500, 4000, 250, 1500)
    assert loaded.cpu.default_value() == 1500 and not loaded.cpu.fixed
    assert (loaded.memory.min, loaded.memory.max, loaded.memory.range_step) == (2**29, 4 * GI, 2**29)
    assert loaded.memory.default_value() == 2**29  # no default: the min
    assert profiles_with(cpu={"min": 2, "max": 16}).profiles[0].cpu.range_step == 1000  # one core


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ({"cpu": {"choices": [1, 2], "min": 1, "max": 2}}, "either choices or a range"),
        ({"cpu": {"min": 1}}, "at least one cpu choice is needed, or a range: min and max"),
        ({"cpu": {"min": 4, "max": 2}}, "the cpu min is larger than its max"),
        ({"cpu": {"min": 1, "max": 4, "step": 2}}, "max must be min plus a whole number of steps"),
        ({"memory": {"min": "1Gi", "max": "4Gi", "default": "1536Mi"}}, "default must be min plus"),
        ({"memory": {"min": "1Gi", "max": "4Gi", "default": "8Gi"}}, "default must be min plus"),
        ({"cpu": {"min": 1, "max": 4, "guarantee": 2}}, "guarantee is larger than the cpu min"),
        ({"cpu": {"min": 1, "max": 4, "step": 0}}, "must be more than zero"),
        ({"cpu": {"min": 1, "max": 4, "step": "lots"}}, "must be a CPU count"),
        ({"cpu": {"min": 1, "max": 4, "groups": ["g"]}}, "groups"),  # a range has no groups
        ({"gpu": [{"id": "a40", "max_count": 2, "count": {"max": 2}}]}, "either max_count or a count range"),
        ({"gpu": [{"id": "a40", "count": {"min": 2, "max": 5, "step": 2}}]}, "count's max must be min plus"),
        ({"gpu": [{"id": "a40", "count": {"min": 2, "max": 8, "step": 2, "default": 3}}]}, "count's default"),
        ({"gpu": [{"id": "a40", "count": {"min": 4, "max": 2}}]}, "count's min is larger"),
        ({"gpu": [{"id": "none", "count": {"max": 2}}]}, "'none' takes no max_count and no count"),
    ],
)
def test_range_rules_are_checked_at_load(option: dict[str, Any], expected: str) -> None:
    assert expected in problems(**option)


def test_the_reference_hub_offers_the_seeds_ranges() -> None:
    lab = HUB.profile("jupyterlab")
    assert lab is not None
    assert (lab.cpu.min, lab.cpu.max, lab.cpu.range_step) == (1000, 96000, 1000)
    assert (lab.memory.min, lab.memory.max, lab.memory.range_step) == (4 * GI, 1024 * GI, GI)


# --- resolving ---------------------------------------------------------------------------------


def refusal(profiles: ProfileSet, request: dict[str, Any], user: UserContext = NOBODY) -> OptionsError:
    with pytest.raises(OptionsError) as caught:
        resolve_options(profiles, user, request)
    return caught.value


def test_out_of_range_is_refused_with_the_usual_message() -> None:
    assert str(refusal(HUB, {"cpu": 97})) == "cpu: 97 is not allowed; allowed: 1 to 96 in steps of 1"
    assert str(refusal(HUB, {"memory": "3Gi"})) == (
        "memory: '3Gi' is not allowed; allowed: 4Gi to 1Ti in steps of 1Gi"
    )


@pytest.mark.parametrize(
    ("key", "value", "granted"),
    [
        ("cpu", 96, 96000),
        ("cpu", "1", 1000),
        ("cpu", 2.0, 2000),
        ("cpu", "2000m", 2000),
        ("cpu", "1e1", 10000),
        ("cpu", 2.5, None),
        ("cpu", "1500m", None),
        ("cpu", 0.1 + 0.2, None),  # 0.30000000000000004 cores: no float drift lets it through
        ("cpu", "0", None),
        ("cpu", "-1", None),
        ("cpu", "4 cores", None),
        ("memory", "8Gi", 8 * GI),
        ("memory", "8192Mi", 8 * GI),
        ("memory", str(8 * GI), 8 * GI),
        ("memory", "1Ti", 1024 * GI),
        ("memory", "1025Gi", None),
        ("memory", "8.5Gi", None),
        ("memory", "9G", None),  # 9 * 10**9 bytes: not a whole number of GiB
        ("memory", "8", None),  # eight bytes (a REST request names its unit)
    ],
)
def test_bounds_and_step_are_checked_exactly(key: str, value: Any, granted: int | None) -> None:
    if granted is None:
        error = refusal(HUB, {key: value})
        assert error.key == key and "in steps of" in str(error)
        return
    options = resolve_options(HUB, NOBODY, {key: value})
    assert (options.cpu_limit if key == "cpu" else options.memory_limit) == granted


def test_the_guarantee_applies_under_a_range() -> None:
    options = resolve_options(HUB, NOBODY, {"cpu": 50, "memory": "100Gi"})
    assert (options.cpu_limit, options.cpu_guarantee) == (50000, 1000)
    assert (options.memory_limit, options.memory_guarantee) == (100 * GI, 4 * GI)


def test_gpu_counts_as_a_range() -> None:
    profiles = profiles_with(
        gpu=["none", {"id": "a40", "count": {"min": 2, "max": 8, "step": 2, "default": 4}}]
    )
    choice = profiles.profiles[0].gpu.choices[1]
    assert choice.max_count == 8 and list(choice.counts()) == [2, 4, 6, 8]
    granted = resolve_options(profiles, NOBODY, {"gpu": "a40"}).gpu
    assert granted is not None and granted.count == 4
    error = refusal(profiles, {"gpu": "a40", "gpu_count": 3})
    assert error.allowed == ("2", "4", "6", "8")
    many = profiles_with(gpu=[{"id": "a40", "count": {"min": 1, "max": 64}}])
    assert refusal(many, {"gpu_count": 65}).allowed == ("1 to 64 in steps of 1",)


# --- properties --------------------------------------------------------------------------------


def with_range(key: str, spec: RangeSpec, prices: bool = False) -> ProfileSet:
    if key == "cpu":
        return profiles_with(cpu=spec.spelled, prices=prices)
    return profiles_with(memory=spec.spelled, prices=prices)


def allowed_by_spec(spec: RangeSpec, value: int) -> bool:
    return spec.minimum <= value <= spec.maximum and (value - spec.minimum) % spec.step == 0


@st.composite
def range_cases(draw: st.DrawFn) -> tuple[str, RangeSpec, int]:
    key = draw(st.sampled_from(["cpu", "memory"]))
    spec = draw(range_specs(key))
    on_grid = spec.minimum + draw(st.integers(-2, (spec.maximum - spec.minimum) // spec.step + 2)) * spec.step
    value = on_grid + draw(st.sampled_from([0, 0, 0, 1, -1, spec.step // 2]))
    return key, spec, max(value, 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(range_cases())
def test_a_range_allows_exactly_its_grid(case: tuple[str, RangeSpec, int]) -> None:
    key, spec, value = case
    profiles = with_range(key, spec)
    default = resolve_options(profiles, NOBODY, {})
    assert (default.cpu_limit if key == "cpu" else default.memory_limit) == spec.default
    text = format_cpu(value) if key == "cpu" else format_memory(value)
    try:
        options = resolve_options(profiles, NOBODY, {key: text})
    except OptionsError as error:
        assert not allowed_by_spec(spec, value)
        assert error.key == key
        assert error.allowed[0].endswith(
            f"in steps of {format_cpu(spec.step) if key == 'cpu' else format_memory(spec.step)}"
        )
        return
    assert allowed_by_spec(spec, value)
    assert (options.cpu_limit if key == "cpu" else options.memory_limit) == value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(range_cases())
def test_the_number_field_spans_exactly_the_resolvers_grid(case: tuple[str, RangeSpec, int]) -> None:
    """The field's min, max and step, read in its unit, are the range's; a number typed on the
    field's grid, posted, is granted as exactly that value; off the grid, it is refused."""
    key, spec, value = case
    profiles = with_range(key, spec, prices=True)
    field = getattr(build_form(profiles, NOBODY).profiles[0], key)
    if spec.minimum == spec.maximum:
        assert not isinstance(field, NumberInput)  # one value: shown as text
        return
    assert isinstance(field, NumberInput)
    size = (
        Decimal(1000)
        if key == "cpu"
        else Decimal(
            {"GiB": GI, "GB": 10**9, "MiB": 2**20, "MB": 10**6, "KiB": 2**10, "kB": 1000, "bytes": 1}[
                field.unit
            ]
        )
    )
    assert Decimal(field.minimum) * size == spec.minimum
    assert Decimal(field.maximum) * size == spec.maximum
    assert Decimal(field.step) * size == spec.step
    assert Decimal(field.value) * size == spec.default
    typed = Decimal(value) / size
    posted = {"profile": ["lab"], f"lab--{key}": [format(typed.normalize(), "f")]}
    request = request_from_form(posted, profiles, NOBODY)
    on_field_grid = (typed - Decimal(field.minimum)) % Decimal(field.step) == 0
    within = Decimal(field.minimum) <= typed <= Decimal(field.maximum)
    try:
        options = resolve_options(profiles, NOBODY, request)
    except OptionsError as error:
        assert error.key == key and not (on_field_grid and within)
        return
    assert on_field_grid and within
    assert (options.cpu_limit if key == "cpu" else options.memory_limit) == value
