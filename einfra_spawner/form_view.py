"""The options form's view model: frozen values that ``templates/form.html`` renders as they are.

:mod:`einfra_spawner.form` (one profile at a time, :mod:`.form_profile`) builds these from the
profiles, the user, the backend's features and GPU figures, and the instance's prices; the
template decides nothing. Field names and ids are explained in :mod:`.form_fields`.

Prices travel twice: as text for the reader (``note``, ``hint``: "1.40 CZK/h"), and as exact
fractions (``price``, ``unit_price``: ``"7/5"``) in data attributes, from which the page's script
adds up the hourly cost of the current choice without restating any price or rule
(:mod:`einfra_spawner.pricing`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "Checkbox",
    "CostLine",
    "Fixed",
    "FormView",
    "GpuView",
    "HomeView",
    "ImageView",
    "MountsView",
    "NumberInput",
    "Option",
    "ProfileView",
    "Select",
    "TextInput",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """One entry of a select, a radio group or a checkbox group."""

    value: str
    label: str
    selected: bool = False
    note: str = ""
    id: str = ""
    # GPU types only: the "N of M free" part of ``note`` and what comes before it, kept apart so
    # that the form's script can refresh the figures in place (``capacity_of`` names the type).
    static_note: str = ""
    capacity_note: str = ""
    capacity_of: str = ""
    #: GPU types only: "38.00 CZK per GPU-hour" (also in ``note``), printed after the figures.
    price_note: str = ""
    #: A GPU type the cluster has none of (or too few for the least count): shown, not selectable.
    disabled: bool = False
    #: The exact hourly price of this entry (a CPU or memory value; one GPU of a type), "" if unpriced.
    price: str = ""
    #: GPU types only: the largest count the form offers for the type (``max_count``, bounded
    #: by the cluster's total when known), so that the script can bound "Number of GPUs".
    count_bound: int = 0
    #: GPU types that bring fixed CPU or memory: the hourly price of those, which then replace
    #: the CPU and memory fields (which the form does not read with this type).
    cpu_price: str = ""
    memory_price: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fixed:
    """An option with nothing to choose, shown as information."""

    kind: ClassVar[str] = "fixed"
    label: str
    text: str
    #: ``cpu`` or ``memory`` when it is one of those (the script's cost line reads ``price``).
    part: str = ""
    price: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Select:
    """A ``<select>`` with its ``<label>``."""

    kind: ClassVar[str] = "select"
    name: str
    id: str
    label: str
    options: tuple[Option, ...]
    hint: str = ""
    #: ``cpu``, ``memory`` or ``gpu_count`` for the script's cost line; "" otherwise.
    part: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NumberInput:
    """A number ``<input>`` for a range (CPU in cores, memory in ``unit``) with its ``<label>``.

    ``minimum``, ``maximum``, ``step`` and ``value`` are in ``unit``; the browser checks them, and
    the resolver checks the posted value again, exactly."""

    kind: ClassVar[str] = "number"
    name: str
    id: str
    label: str
    value: str
    minimum: str
    maximum: str
    step: str
    unit: str
    hint: str = ""
    part: str = ""
    #: The exact hourly price of one ``unit``, "" if unpriced.
    unit_price: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TextInput:
    """A text ``<input>`` with its ``<label>``."""

    name: str
    id: str
    label: str
    value: str = ""
    placeholder: str = ""
    hint: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkbox:
    """A single checkbox with its ``<label>``."""

    name: str
    id: str
    value: str
    label: str
    checked: bool = False
    hint: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageView:
    """The image choices, and the custom image field where the profile allows one."""

    kind: ClassVar[str] = "image"
    select: Select
    custom: TextInput | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuView:
    """GPU types as radio buttons (with "N of M free" where known) and the GPU count."""

    kind: ClassVar[str] = "gpu"
    legend: str
    name: str
    options: tuple[Option, ...]
    count: Select | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeView:
    """What the home is, and the reset checkbox where the profile allows a reset."""

    text: str
    reset: Checkbox | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MountsView:
    """Optional mounts as checkboxes (with the marker field) and the mounts always present.

    On a backend that provides no extra mounts, ``unavailable`` names them and ``note`` says why,
    and nothing can be chosen (as images on such a backend)."""

    legend: str
    name: str
    marker: str
    options: tuple[Option, ...]
    always: tuple[str, ...] = ()
    unavailable: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CostLine:
    """The hourly cost of a profile's current choice: ``text`` for the options pre-selected
    (the script recomputes it from the prices in the data attributes whenever a field changes)."""

    currency: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileView:
    """One profile on the form: its radio button and its controls."""

    slug: str
    display_name: str
    description: str
    radio_id: str
    checked: bool
    image: ImageView | Fixed | None
    cpu: Select | NumberInput | Fixed
    memory: Select | NumberInput | Fixed
    gpu: GpuView | Fixed | None
    home: HomeView | None
    mounts: MountsView | None
    cost: CostLine | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FormView:
    """Everything the template shows."""

    instance: str
    profiles: tuple[ProfileView, ...]
    images_apply: bool
    images_note: str = ""
    empty_message: str = ""
    # The user's cost over the usage window and their quotas, one sentence each.
    usage: tuple[str, ...] = ()
    # Where the script refreshes GPU figures (the hub's JSON route); empty: no script.
    gpus_url: str = ""
