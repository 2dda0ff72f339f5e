"""The profile file models of CPU, memory and GPUs: choices, ranges and GPU types. Private:
:mod:`einfra_spawner.models` is the public surface.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from ._model_base import (
    _EXTENDED_RESOURCE,
    _QUANTITY_SCHEMA,
    NO_GPU,
    Bytes,
    ChoiceId,
    Groups,
    Millicores,
    Text,
    _check_label_key,
    _check_labels,
    _default_is_open,
    _full,
    _ids_unique,
    _Strict,
)
from .pod_settings import PodSettings

# --- CPU and memory ----------------------------------------------------------------------------


class CpuChoice(_Strict):
    """One CPU limit to choose from, in millicores (written as 2, 0.5 or '500m')."""

    scalar_schema = _QUANTITY_SCHEMA

    value: Millicores
    groups: Groups = ()

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return data if isinstance(data, dict) else {"value": data}

    @property
    def id(self) -> str:
        return str(self.value)


class MemoryChoice(_Strict):
    """One memory limit to choose from, in bytes (written as '8Gi')."""

    scalar_schema = _QUANTITY_SCHEMA

    value: Bytes
    groups: Groups = ()

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return data if isinstance(data, dict) else {"value": data}

    @property
    def id(self) -> str:
        return str(self.value)


class _QuantityOption(_Strict):
    """CPU or memory: a fixed value, choices (a list, or a mapping with ``choices``), or a range
    (a mapping with ``min`` and ``max``, maybe ``step`` and ``default``). A range has no groups: it
    is open to everyone admitted to the profile (a GPU choice may bring a range of its own)."""

    scalar_schema = {
        "anyOf": [_QUANTITY_SCHEMA, {"type": "array", "items": _QUANTITY_SCHEMA, "minItems": 1}],
        "description": "a fixed value, or a list of choices (the first is the default)",
    }
    #: The step of a range that names none (one core; one GiB).
    default_step: ClassVar[int]

    # Declared by the subclasses with their units: choices, min, max, step, default, guarantee.
    choices: tuple[CpuChoice, ...] | tuple[MemoryChoice, ...]
    min: int | None
    max: int | None
    step: int | None
    default: int | None

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"choices": data}
        return data if isinstance(data, dict) else {"choices": [data]}

    @property
    def is_range(self) -> bool:
        """Whether this option is a range (``min`` to ``max`` in steps of ``step``)."""
        return not self.choices

    @property
    def range_step(self) -> int:
        """The step of a range: ``step``, or one core / one GiB when the file names none."""
        return self.step if self.step is not None else self.default_step

    def in_range(self, value: int) -> bool:
        """Whether ``value`` is min plus a whole number of steps and at most max (ranges only)."""
        if self.min is None or self.max is None:
            return False
        return self.min <= value <= self.max and (value - self.min) % self.range_step == 0

    def default_value(self) -> int:
        """The value taken when a request names none: the default, else the first choice or the min."""
        if self.choices:
            return self.default_choice().value
        assert self.min is not None  # validated: a range has a min
        return self.default if self.default is not None else self.min

    def default_choice(self) -> CpuChoice | MemoryChoice:
        """The choice taken when a request names none (options with choices only)."""
        return next((c for c in self.choices if c.value == self.default), self.choices[0])

    @property
    def fixed(self) -> bool:
        """Nothing to choose: one choice, or a range whose min is its max."""
        return len(self.choices) == 1 or (not self.choices and self.min == self.max)


def _check_quantities(option: CpuOption | MemoryOption, what: str) -> None:
    """Choices or a range, never both; a default open to everyone; limits never below the guarantee."""
    bounds = {"min": option.min, "max": option.max, "step": option.step}
    if option.choices:
        given = [key for key, value in bounds.items() if value is not None]
        if given:
            raise ValueError(
                f"a {what} option takes either choices or a range (min, max, step), not both; "
                f"remove {' and '.join(given)} or the choices"
            )
        _check_choices(option, what)
        return
    if option.min is None or option.max is None:
        raise ValueError(
            f"at least one {what} choice is needed, or a range: min and max (step and default optional)"
        )
    if option.min > option.max:
        raise ValueError(f"the {what} min is larger than its max")
    # The max must be reachable: a number field steps from its min, and a max the steps skip would
    # be offered by the form's bounds yet refused by the resolver.
    if (option.max - option.min) % option.range_step:
        raise ValueError(f"the {what} max must be min plus a whole number of steps, so that it can be chosen")
    if option.default is not None and not option.in_range(option.default):
        raise ValueError(f"the {what} default must be min plus a whole number of steps, and at most max")
    if option.guarantee is not None and option.guarantee > option.min:
        raise ValueError(
            f"the {what} guarantee is larger than the {what} min; a limit must never be below the guarantee"
        )


def _check_choices(option: CpuOption | MemoryOption, what: str) -> None:
    _ids_unique(option.choices, what)
    if option.guarantee is not None and option.guarantee > min(c.value for c in option.choices):
        raise ValueError(
            f"the {what} guarantee is larger than the smallest {what} choice; "
            "a limit must never be below the guarantee"
        )
    ids = [c.value for c in option.choices]
    if option.default is not None and option.default not in ids:
        raise ValueError(f"default {option.default!r} is not one of the {what} choices")
    if option.default_choice().groups:
        raise ValueError(
            f"the default {what} is limited to groups; "
            "a default must be open to everyone admitted to the profile"
        )


class CpuOption(_QuantityOption):
    """CPU: the choice is the limit; ``guarantee`` is the request (the limit itself when absent).
    Choices, or a range from ``min`` to ``max`` in steps of ``step`` (default one core)."""

    default_step = 1000

    choices: tuple[CpuChoice, ...] = ()
    min: Millicores | None = None
    max: Millicores | None = None
    step: Millicores | None = None
    default: Millicores | None = None
    guarantee: Millicores | None = None

    @model_validator(mode="after")
    def _check(self) -> CpuOption:
        _check_quantities(self, "cpu")
        return self

    def default_choice(self) -> CpuChoice:
        """The choice taken when a request names no CPU count (options with choices only)."""
        return next((c for c in self.choices if c.value == self.default), self.choices[0])


class MemoryOption(_QuantityOption):
    """Memory: the choice is the limit; ``guarantee`` is the request (the limit itself when absent).
    Choices, or a range from ``min`` to ``max`` in steps of ``step`` (default 1Gi)."""

    default_step = 2**30

    choices: tuple[MemoryChoice, ...] = ()
    min: Bytes | None = None
    max: Bytes | None = None
    step: Bytes | None = None
    default: Bytes | None = None
    guarantee: Bytes | None = None

    @model_validator(mode="after")
    def _check(self) -> MemoryOption:
        _check_quantities(self, "memory")
        return self

    def default_choice(self) -> MemoryChoice:
        """The choice taken when a request names no memory size (options with choices only)."""
        return next((c for c in self.choices if c.value == self.default), self.choices[0])


# --- GPUs --------------------------------------------------------------------------------------


class Toleration(_Strict):
    """A Kubernetes toleration, as in a pod spec but with snake_case keys."""

    key: StrictStr | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: StrictStr | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Toleration:
        if self.key is not None:
            _check_label_key(self.key)
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists takes no value")
        return self


class GpuType(_Strict):
    """A kind of GPU on the cluster (instance-wide): how to request it and where it runs."""

    display_name: Text
    resource: Annotated[
        StrictStr,
        _full(_EXTENDED_RESOURCE, "an extended resource name such as nvidia.com/gpu", 253),
    ]
    node_selector: dict[StrictStr, StrictStr] = {}
    tolerations: tuple[Toleration, ...] = ()
    description: Text | None = None
    pod: PodSettings = PodSettings()

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)


_GpuCountInt = Annotated[StrictInt, Field(ge=1, le=64)]


class GpuCount(_Strict):
    """The GPU counts a user may ask for: ``min`` to ``max`` in steps of ``step`` (the max must be
    reachable); ``default`` (else ``min``) when a request names none."""

    min: _GpuCountInt = 1
    max: _GpuCountInt
    step: _GpuCountInt = 1
    default: _GpuCountInt | None = None

    @model_validator(mode="after")
    def _check(self) -> GpuCount:
        if self.min > self.max:
            raise ValueError("the count's min is larger than its max")
        if (self.max - self.min) % self.step:
            raise ValueError(
                "the count's max must be min plus a whole number of steps, so that it can be chosen"
            )
        if self.default is not None and self.default not in self.values():
            raise ValueError("the count's default must be min plus a whole number of steps, and at most max")
        return self

    def values(self) -> range:
        return range(self.min, self.max + 1, self.step)


class GpuChoice(_Strict):
    """A GPU type offered by a profile (``none`` for no GPU), with its count and, optionally, the
    CPU and memory that come with it (which then replace the profile's).

    The count: 1 to ``max_count``, or a range ``count: {min, max, step, default}`` (then
    ``max_count`` is its max and is not written)."""

    scalar_schema = {"type": "string", "description": "a GPU type id, or 'none'"}

    id: ChoiceId
    max_count: Annotated[StrictInt, Field(ge=1, le=64)] = 1
    count: GpuCount | None = None
    groups: Groups = ()
    cpu: CpuOption | None = None
    memory: MemoryOption | None = None

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"id": data}
        if isinstance(data, dict) and isinstance(data.get("count"), dict):
            if "max_count" in data:
                raise ValueError("give either max_count or a count range, not both")
            largest = data["count"].get("max")
            if isinstance(largest, int) and not isinstance(largest, bool):
                data = {**data, "max_count": largest}  # one bound for everything that reads it
        return data

    @model_validator(mode="after")
    def _check(self) -> GpuChoice:
        if self.id == NO_GPU and (self.max_count != 1 or self.count is not None):
            raise ValueError("'none' takes no max_count and no count")
        return self

    def counts(self) -> range:
        """The counts a request may name for this type (none: only 0)."""
        if self.id == NO_GPU:
            return range(0, 1)
        return self.count.values() if self.count is not None else range(1, self.max_count + 1)

    def default_count(self) -> int:
        """The count taken when a request names none."""
        if self.id == NO_GPU:
            return 0
        if self.count is None:
            return 1
        return self.count.default if self.count.default is not None else self.count.min


class GpuOption(_Strict):
    """The GPU: a fixed type (a scalar), or choices with a default (``none`` when absent)."""

    scalar_schema = {
        "anyOf": [
            {"type": "string", "description": "a fixed GPU type id, or 'none'"},
            {"type": "array", "description": "choices; the first is the default", "minItems": 1},
        ]
    }

    choices: tuple[GpuChoice, ...] = (GpuChoice(id=NO_GPU),)
    default: ChoiceId | None = None

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"choices": data}
        return {"choices": [data]} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self) -> GpuOption:
        _ids_unique(self.choices, "gpu")
        _default_is_open(self, "gpu")
        return self

    def default_choice(self) -> GpuChoice:
        return next((c for c in self.choices if c.id == self.default), self.choices[0])

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1 and self.choices[0].max_count == 1
