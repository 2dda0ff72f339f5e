"""The GPU part of the options form: GPU types with their counts, cluster figures and prices.

Pure, a part of one profile's view (:mod:`.form_profile` asks :class:`GpuFieldBuilder` for it).
Also here: which GPU types a user can see at all (:func:`capacity_types`, whose figures are worth
asking the backend for, :mod:`.capacity`) and the JSON body of the hub's GPU route
(:func:`capacity_figures`), worded as the form words them, from which the page's script refreshes
the "N of M free" figures in place; the form works the same without the script.

A GPU type of which the backend's figures show none (or too few for its least count) is shown
disabled with the reason, and "Number of GPUs" offers no more than the cluster's total; without
figures nothing is disabled or bounded. A busy type stays selectable: the backend's fail-fast
message explains why a start waits or fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from .backend import GpuCapacity
from .form_fields import field_name
from .form_resources import Pricer, cpu_label, memory_label
from .form_view import Fixed, GpuView, Option, Select
from .models import NO_GPU, GpuChoice, Instance, Profile
from .options import UserContext, granted, quantity_option
from .profiles import ProfileSet

__all__ = [
    "NONE_ON_CLUSTER",
    "GpuField",
    "GpuFieldBuilder",
    "capacity_figures",
    "capacity_types",
]

NONE_ON_CLUSTER = "none on this cluster"


def capacity_types(profiles: ProfileSet, user: UserContext) -> tuple[str, ...]:
    """The GPU types this user can see on the form (whose capacity is worth asking for)."""
    seen: list[str] = []
    for profile in profiles.profiles:
        if not granted(profile.groups, user, profiles.instance):
            continue
        for choice in profile.gpu.choices:
            if (
                choice.id != NO_GPU
                and choice.id not in seen
                and granted(choice.groups, user, profiles.instance)
            ):
                seen.append(choice.id)
    return tuple(seen)


def capacity_figures(capacity: Mapping[str, GpuCapacity]) -> dict[str, dict[str, int | str]]:
    """The JSON body of the GPU route: free, total and the form's wording, by GPU type."""
    return {
        gpu: {"free": figures.free, "total": figures.total, "note": _capacity_note(figures)}
        for gpu, figures in sorted(capacity.items())
    }


def _capacity_note(capacity: GpuCapacity | None) -> str:
    if capacity is None:
        return ""  # the backend cannot tell
    if capacity.total == 0:
        return NONE_ON_CLUSTER
    return f"{capacity.free} of {capacity.total} free"


def _gpu_name(choice: GpuChoice, instance: Instance) -> str:
    if choice.id == NO_GPU:
        return "No GPU"
    return instance.gpu_types[choice.id].display_name


def _with_resources(choice: GpuChoice) -> str:
    parts = []
    if choice.cpu is not None and choice.cpu.fixed:
        parts.append(cpu_label(choice.cpu.default_value()))
    if choice.memory is not None and choice.memory.fixed:
        parts.append(memory_label(choice.memory.default_value()))
    return f"with {' and '.join(parts)}" if parts else ""


def _offered_counts(choice: GpuChoice, capacity: GpuCapacity | None) -> list[int]:
    """The counts the form offers for a GPU type: its own, none above the cluster's total when
    known (a count the cluster cannot hold at all could never start)."""
    counts = list(choice.counts())
    return counts if capacity is None else [n for n in counts if n <= capacity.total]


@dataclass(frozen=True, slots=True)
class GpuField:
    """The GPU part of one profile's form, and what it pre-selects (the cost line counts that):
    ``gpu`` is ``None`` where the form shows nothing about GPUs."""

    view: GpuView | Fixed | None
    gpu: str | None = None
    count: int = 0


class GpuFieldBuilder:
    """The GPU part of one profile's view for one user; a class only to keep its inputs at hand.

    ``gpus`` are the profile's GPU choices open to the user, ``last`` their previous request's
    keys (or nothing), ``capacity`` the backend's figures by GPU type (missing: not known)."""

    def __init__(
        self,
        profile: Profile,
        gpus: list[GpuChoice],
        instance: Instance,
        last: Mapping[str, object],
        capacity: Mapping[str, GpuCapacity],
        pricer: Pricer,
    ) -> None:
        self.profile = profile
        self.gpus = gpus
        self.instance = instance
        self.last = last
        self.capacity = capacity
        self.pricer = pricer

    def name(self, key: str) -> str:
        return field_name(self.profile.slug, key)

    def build(self) -> GpuField:
        if [c.id for c in self.gpus] == [NO_GPU]:
            return GpuField(view=None)  # nothing to choose and nothing to say: no GPU
        if len(self.gpus) == 1 and self.gpus[0].max_count == 1:
            only = self.gpus[0]
            price = self.pricer.per_unit(self.pricer.gpu(only.id), "GPU") if only.id != NO_GPU else ""
            note = ", ".join(n for n in (_capacity_note(self.capacity.get(only.id)), price) if n)
            text = " ".join(p for p in (_gpu_name(only, self.instance), _with_resources(only)) if p)
            exact = self.pricer.exact(self.pricer.gpu(only.id)) if only.id != NO_GPU else ""
            fixed = Fixed(label="GPU", text=f"{text} ({note})" if note else text, part="gpu", price=exact)
            return GpuField(view=fixed, gpu=only.id, count=only.default_count())
        offered = {c.id: _offered_counts(c, self.capacity.get(c.id)) for c in self.gpus}
        # A type the cluster has none of (or too few for its least count) is shown, not offered;
        # a busy one stays selectable (the backend's fail-fast message explains). When every type
        # would be closed, none is: the figures may be wrong, and the backend will say why.
        closed = {c.id for c in self.gpus if c.id != NO_GPU and not offered[c.id]}
        if len(closed) == len(self.gpus):
            closed = set()
        last = self.last.get("gpu")
        selected = last if last in {c.id for c in self.gpus} else self.profile.gpu.default_choice().id
        if selected in closed:
            selected = next(c.id for c in self.gpus if c.id not in closed)
        options = [self.option(c, offered[c.id], c.id in closed, c.id == selected) for c in self.gpus]
        counts = sorted(
            {n for c in self.gpus if c.id not in closed and c.id != NO_GPU for n in offered[c.id]}
        )
        chosen_choice = next(c for c in self.gpus if c.id == selected)
        # The count pre-selected is one the chosen type is offered: the last, else its default,
        # else its least (the cost line counts what the form will post).
        own = [str(n) for n in offered[selected]]
        last_count = str(self.last.get("gpu_count", chosen_choice.default_count()))
        if last_count not in own:
            default_count = str(chosen_choice.default_count())
            last_count = default_count if default_count in own or not own else own[0]
        count = None
        if counts and counts != [1]:
            count = Select(
                name=self.name("gpu_count"),
                id=self.name("gpu_count"),
                label="Number of GPUs",
                options=tuple(
                    Option(value=str(n), label=str(n), selected=str(n) == last_count) for n in counts
                ),
                hint="Up to the number shown for the chosen type; ignored without a GPU.",
                part="gpu_count",
            )
        view = GpuView(legend="GPU", name=self.name("gpu"), options=tuple(options), count=count)
        return GpuField(view=view, gpu=selected, count=int(last_count) if selected != NO_GPU else 0)

    def option(self, choice: GpuChoice, counts: list[int], closed: bool, selected: bool) -> Option:
        """One GPU type: its resources, counts, cluster figures and price, closed or not."""
        capacity = self.capacity.get(choice.id)
        extras = [_with_resources(choice)]
        if closed and capacity is not None and capacity.total:
            extras.append(f"only {capacity.total} on this cluster, at least {choice.counts()[0]} needed")
        elif counts and counts[-1] > 1:
            extras.append(f"{counts[0]} to {counts[-1]}" if counts[0] > 1 else f"up to {counts[-1]}")
        static = ", ".join(e for e in extras if e)
        live = _capacity_note(capacity)
        price = Fraction(0) if choice.id == NO_GPU else self.pricer.gpu(choice.id)
        price_note = self.pricer.per_unit(price, "GPU")
        # Where the CPU or memory in force with this type is fixed, the form does not read the
        # field (form_request's ``_effective_fixed``): the type carries that price itself.
        cpu = quantity_option(self.profile, choice, "cpu")
        memory = quantity_option(self.profile, choice, "memory")
        return Option(
            value=choice.id,
            label=_gpu_name(choice, self.instance),
            note=", ".join(e for e in (static, live, price_note) if e),
            selected=selected,
            id=f"{self.name('gpu')}:{choice.id}",
            static_note=static,
            capacity_note=live,
            price_note=price_note,
            capacity_of=choice.id if live else "",
            disabled=closed,
            price=self.pricer.exact(price),
            count_bound=counts[-1] if counts else 0,
            cpu_price=self.pricer.exact(self.pricer.cpu(cpu.default_value())) if cpu.fixed else "",
            memory_price=self.pricer.exact(self.pricer.memory(memory.default_value()))
            if memory.fixed
            else "",
        )
