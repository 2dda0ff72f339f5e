"""The options form: what a user may see and choose, and form posts turned back into requests.

Pure, between the spawner and the resolver. :func:`build_form` turns (profiles, user, last
choices, GPU capacity) into a :class:`FormView`, a tree of frozen values that the Jinja2
template ``templates/form.html`` renders without deciding anything. :func:`request_from_form`
turns the posted form (a dict of lists of strings) into the flat request keys of the REST API,
which :func:`einfra_spawner.resolve_options` then validates exactly as it validates a REST
request: the form offers, the resolver decides.

The view also carries sentences about the user's usage and quotas (computed by the spawner from
the usage ledger) and the URL of the hub's JSON route from which the page's small script
refreshes the "N of M free" GPU figures in place; the form works the same without the script.

Field naming (several profiles on one page, no JavaScript needed)
----------------------------------------------------------------
Every profile the user may start is a ``<fieldset>`` with all of its own controls; one set of
radio buttons named ``profile`` says which profile to start. The controls of a profile are named
``<slug>--<key>``, where ``<key>`` is a request key (``image``, ``cpu``, ``memory``, ``gpu``,
``gpu_count``, ``home``, ``mounts``) or one of two helpers:

* ``<slug>--image-custom``: the text of a custom image, used when ``<slug>--image`` is
  ``:custom`` (a value no image choice id can take);
* ``<slug>--mounts-shown``: a hidden marker sent with the optional-mount checkboxes, so that
  "all unchecked" (the browser then sends nothing) reads as ``mounts: []`` rather than as
  "use the defaults".

Only the fields of the chosen profile are read, each by its exact name (names are never split,
so a slug that itself contains ``--`` is no problem); the others are ignored, so a user can look
at every profile, change several, and start the one they picked. Element ids follow the names;
radio buttons and checkboxes add ``:<value>``, and the profile radios are ``profile:<slug>``
(no slug contains ``:``), so ids never collide.

A fixed option (one choice open to the user) is shown as text and has no field; the request then
simply omits the key and the resolver takes the profile's value. The same holds for CPU and
memory when the chosen GPU type brings fixed values of its own.

Ranges, prices, GPU availability
--------------------------------
A CPU or memory range is a number field in a unit a person reads (cores; GiB, MiB...: the
largest unit in which the bounds and step are whole, :mod:`.form_resources`); a posted bare
number is read in that unit (``"16"`` -> ``"16Gi"``), which the same rule computes again, and
the resolver checks bounds and step exactly. The field's bounds and step are built from
:func:`~einfra_spawner.options.allowed_quantity`, the resolver's own rule, so the browser never
blocks what the resolver grants. Prices (:mod:`.pricing`, the usage report's rule) are printed
beside each value and GPU type and carried as exact fractions in data attributes, from which the
page's script keeps each profile's "Hourly cost of this choice" up to date. A GPU type of which
the backend's figures show none (or too few for its least count) is disabled with the reason;
without figures nothing is disabled. A backend that provides no extra mounts gets them listed as
not provided, as images are on a backend without images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Literal

from .backend import GpuCapacity
from .form_resources import (
    CPU_UNIT,
    Envelope,
    FieldUnit,
    Pricer,
    amount_text,
    cpu_label,
    envelope,
    memory_label,
    memory_unit,
    posted_quantity,
)
from .form_view import (
    Checkbox,
    CostLine,
    Fixed,
    FormView,
    GpuView,
    HomeView,
    ImageView,
    MountsView,
    NumberInput,
    Option,
    ProfileView,
    Select,
    TextInput,
)
from .models import NO_GPU, CpuOption, GpuChoice, Instance, MemoryOption, Mount, Profile
from .options import (
    AllowedQuantity,
    ResolvedOptions,
    UserContext,
    allowed_quantity,
    default_profile_for,
    granted,
    quantity_option,
)
from .pricing import hourly_cost
from .profiles import ProfileSet
from .quantities import format_cpu, format_memory, parse_cpu, parse_memory
from .storage import format_duration

__all__ = [
    "CUSTOM_IMAGE_VALUE",
    "IMAGES_DO_NOT_APPLY",
    "MOUNTS_NOT_PROVIDED",
    "NONE_ON_CLUSTER",
    "RESET_LABEL",
    "RESET_LABEL_DELETES",
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
    "build_form",
    "capacity_figures",
    "capacity_types",
    "cpu_label",
    "default_profile_for",
    "field_name",
    "memory_label",
    "request_from_form",
    "request_from_query",
]

#: The value of the image control that means "use the custom image typed below".
CUSTOM_IMAGE_VALUE = ":custom"
_SEPARATOR = "--"
_CUSTOM_SUFFIX = "image-custom"
_MOUNTS_MARKER = "mounts-shown"
RESET_LABEL = "Reset my home (your current home is kept aside)"
RESET_LABEL_DELETES = "Reset my home (your current home is deleted)"
RESET_LABEL_KEPT = "Reset my home (your current home is kept for a while)"
IMAGES_DO_NOT_APPLY = "Images do not apply on this hub"
MOUNTS_NOT_PROVIDED = "Extra storage is not provided on this hub"
NONE_ON_CLUSTER = "none on this cluster"
_RESOURCE_KEYS: tuple[Literal["cpu", "memory"], ...] = ("cpu", "memory")


def field_name(slug: str, key: str) -> str:
    """The form field of profile ``slug`` for request key (or helper) ``key``."""
    return f"{slug}{_SEPARATOR}{key}"


# --- labels ------------------------------------------------------------------------------------


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


def _capacity_note(capacity: GpuCapacity | None) -> str:
    if capacity is None:
        return ""  # the backend cannot tell
    if capacity.total == 0:
        return NONE_ON_CLUSTER
    return f"{capacity.free} of {capacity.total} free"


def _offered_counts(choice: GpuChoice, capacity: GpuCapacity | None) -> list[int]:
    """The counts the form offers for a GPU type: its own, none above the cluster's total when
    known (a count the cluster cannot hold at all could never start)."""
    counts = list(choice.counts())
    return counts if capacity is None else [n for n in counts if n <= capacity.total]


# --- building the view -------------------------------------------------------------------------


def _register_first(mount: Mount) -> str:
    """What the user must register before a mount with a per-user secret can work."""
    source = mount.pv or mount.csi
    if source is None or source.secret is None:
        return ""
    return source.register_first or "Needs your credentials registered first."


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


class _ProfileBuilder:
    """The view of one profile for one user; a class only to keep its inputs at hand."""

    def __init__(
        self,
        profile: Profile,
        user: UserContext,
        instance: Instance,
        last: Mapping[str, object],
        capacity: Mapping[str, GpuCapacity],
    ) -> None:
        self.profile = profile
        self.user = user
        self.instance = instance
        self.last = last
        self.capacity = capacity
        self.gpus = [c for c in profile.gpu.choices if self.open(c.groups)]
        self.pricer = Pricer(instance.prices)
        # What the form pre-selects, as the fields are built (for the cost line).
        self.selected: dict[str, int | str] = {}

    def open(self, groups: Sequence[str]) -> bool:
        return granted(groups, self.user, self.instance)

    def name(self, key: str) -> str:
        return field_name(self.profile.slug, key)

    def image(self) -> ImageView | Fixed:
        option = self.profile.image
        choices = [c for c in option.choices if self.open(c.groups)]
        custom = option.custom if option.custom and self.open(option.custom.groups) else None
        if len(choices) == 1 and custom is None:
            only = choices[0]
            return Fixed(label="Image", text=only.display_name or only.image)
        last = self.last.get("image")
        last_id = last if isinstance(last, str) else option.default_choice().id
        is_custom = custom is not None and last_id not in {c.id for c in choices}
        options = [
            Option(
                value=c.id,
                label=c.display_name or c.image,
                note=c.image if c.display_name else "",
                selected=c.id == last_id and not is_custom,
            )
            for c in choices
        ]
        text_input = None
        if custom is not None:
            options.append(
                Option(
                    value=CUSTOM_IMAGE_VALUE,
                    label="A custom image (enter it below)",
                    selected=is_custom,
                )
            )
            text_input = TextInput(
                name=self.name(_CUSTOM_SUFFIX),
                id=self.name(_CUSTOM_SUFFIX),
                label="Custom image",
                value=last_id if is_custom else "",
                placeholder="registry/name:tag",
                hint=custom.message or f"It must match {custom.pattern} as a whole.",
            )
        select = Select(name=self.name("image"), id=self.name("image"), label="Image", options=tuple(options))
        return ImageView(select=select, custom=text_input)

    def quantity(self, key: Literal["cpu", "memory"]) -> Select | NumberInput | Fixed:
        """CPU or memory: the profile's choices or range, or those the GPU types bring with them."""
        is_cpu = key == "cpu"
        label_of = cpu_label if is_cpu else memory_label
        value_of = format_cpu if is_cpu else format_memory
        price_of = self.pricer.cpu if is_cpu else self.pricer.memory
        base: CpuOption | MemoryOption = self.profile.cpu if is_cpu else self.profile.memory
        in_play = self.options_in_play(key)
        allowed = [allowed_quantity(o, self.open) for o in in_play]
        values: list[int] = []
        for option in allowed:
            values.extend(v for v in option.values if v not in values)
        title = "CPU" if is_cpu else "Memory"
        by_gpu = in_play != [base]
        if all(o.fixed for o in in_play) and len({o.default_value() for o in in_play}) == 1:
            only = in_play[0].default_value()
            self.selected[key] = only
            note = self.pricer.per_hour(price_of(only))
            text = f"{label_of(only)} ({note})" if note else label_of(only)
            return Fixed(label=title, text=text, part=key, price=self.pricer.exact(price_of(only)))
        if len(values) == 1 and not any(a.is_range for a in allowed):
            self.selected[key] = values[0]
            note = self.pricer.per_hour(price_of(values[0]))
            text = f"{label_of(values[0])} ({note})" if note else label_of(values[0])
            return Fixed(label=title, text=text, part=key, price=self.pricer.exact(price_of(values[0])))
        if by_gpu and all(o.fixed for o in in_play):
            return Fixed(label=title, text="comes with the GPU type (see each GPU type)")
        hint = "The GPU type decides which values are allowed." if by_gpu else ""
        last = self.last.get(key)
        default = base.default_value()
        field = envelope(allowed)
        if field is not None:
            return self.number(key, field, allowed, last, default, hint)
        selected = last if isinstance(last, str) and last in map(value_of, values) else value_of(default)
        self.selected[key] = next((v for v in values if value_of(v) == selected), default)
        return Select(
            name=self.name(key),
            id=self.name(key),
            label=f"{title} (limit)",
            options=tuple(
                Option(
                    value=value_of(v),
                    label=label_of(v),
                    selected=value_of(v) == selected,
                    note=self.pricer.per_hour(price_of(v)),
                    price=self.pricer.exact(price_of(v)),
                )
                for v in sorted(values)
            ),
            hint=hint,
            part=key,
        )

    def options_in_play(self, key: Literal["cpu", "memory"]) -> list[CpuOption | MemoryOption]:
        """The profile's option and those the user's GPU types bring, each once."""
        in_play: list[CpuOption | MemoryOption] = []
        for gpu in self.gpus:
            option = quantity_option(self.profile, gpu, key)
            if option not in in_play:
                in_play.append(option)
        return in_play

    def unit(self, key: Literal["cpu", "memory"]) -> FieldUnit:
        """The unit of the number field of ``key`` (cores; the largest memory unit that fits)."""
        if key == "cpu":
            return CPU_UNIT
        field = envelope([allowed_quantity(o, self.open) for o in self.options_in_play(key)])
        return memory_unit((field.minimum, field.step) if field is not None else ())

    def number(
        self,
        key: Literal["cpu", "memory"],
        field: Envelope,
        allowed: Sequence[AllowedQuantity],
        last: object,
        default: int,
        hint: str,
    ) -> NumberInput:
        """A number field for a range: bounds and step in the field's unit, the price per unit."""
        unit = self.unit(key)
        chosen = default
        if isinstance(last, str):
            try:
                parsed = (parse_cpu if key == "cpu" else parse_memory)(last)
            except ValueError:
                parsed = default  # never from a resolved request; kept total all the same
            chosen = parsed if any(a.allows(parsed) for a in allowed) else default
        self.selected[key] = chosen
        price = (self.pricer.cpu if key == "cpu" else self.pricer.memory)(unit.size)
        per_unit = self.pricer.per_unit(price, "CPU" if key == "cpu" else unit.label)
        bounds = f"{amount_text(field.minimum, unit)} to {amount_text(field.maximum, unit)} {unit.label}"
        steps = f"in steps of {amount_text(field.step, unit)}"
        return NumberInput(
            name=self.name(key),
            id=self.name(key),
            label=f"{'CPU' if key == 'cpu' else 'Memory'} (limit, {unit.label})",
            value=amount_text(chosen, unit),
            minimum=amount_text(field.minimum, unit),
            maximum=amount_text(field.maximum, unit),
            step=amount_text(field.step, unit),
            unit=unit.label,
            hint=" ".join(p for p in (f"{bounds}, {steps}.", f"{per_unit}." if per_unit else "", hint) if p),
            part=key,
            unit_price=self.pricer.exact(price),
        )

    def gpu(self) -> GpuView | Fixed | None:
        if [c.id for c in self.gpus] == [NO_GPU]:
            return None  # nothing to choose and nothing to say: no GPU
        if len(self.gpus) == 1 and self.gpus[0].max_count == 1:
            only = self.gpus[0]
            self.selected["gpu"], self.selected["gpu_count"] = only.id, only.default_count()
            price = self.pricer.per_unit(self.pricer.gpu(only.id), "GPU") if only.id != NO_GPU else ""
            note = ", ".join(n for n in (_capacity_note(self.capacity.get(only.id)), price) if n)
            text = " ".join(p for p in (_gpu_name(only, self.instance), _with_resources(only)) if p)
            exact = self.pricer.exact(self.pricer.gpu(only.id)) if only.id != NO_GPU else ""
            return Fixed(label="GPU", text=f"{text} ({note})" if note else text, part="gpu", price=exact)
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
        options = [self.gpu_option(c, offered[c.id], c.id in closed, c.id == selected) for c in self.gpus]
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
        self.selected["gpu"] = selected
        self.selected["gpu_count"] = int(last_count) if selected != NO_GPU else 0
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
        return GpuView(legend="GPU", name=self.name("gpu"), options=tuple(options), count=count)

    def gpu_option(self, choice: GpuChoice, counts: list[int], closed: bool, selected: bool) -> Option:
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
        # field (``_effective_fixed``): the type carries that price itself.
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

    def home(self) -> HomeView | None:
        home = self.profile.home
        if home is None:
            return None
        size = memory_label(home.size)
        if home.reset == "always":
            return HomeView(
                text=f"A fresh home of {size} at every start: "
                "your work there is erased when the server stops."
            )
        text = f"A persistent home of {size} at {home.mount_path}."
        if home.reset != "allowed":
            return HomeView(text=text)
        # Never pre-checked, whatever was chosen last time: a reset must be asked for each time.
        if self.reset_keeps_old_home:
            label, hint = (
                RESET_LABEL,
                "Starts this server with an empty home; the current one is moved aside, not deleted.",
            )
        elif self.instance.homes.reset.keep_for > 0:
            kept = format_duration(self.instance.homes.reset.keep_for)
            label, hint = (
                RESET_LABEL_KEPT,
                f"Starts this server with an empty home; the current one is kept for {kept}, "
                "then deleted (ask the operators for it in that time).",
            )
        else:
            label, hint = (
                RESET_LABEL_DELETES,
                "Starts this server with an empty home; everything in the current one is erased.",
            )
        reset = Checkbox(name=self.name("home"), id=self.name("home"), value="reset", label=label, hint=hint)
        return HomeView(text=text, reset=reset)

    def mounts(self) -> MountsView | None:
        mounts = [m for m in self.profile.mounts if self.open(m.groups)]
        if not mounts:
            return None
        if self.mounts_note:
            # As images: nothing to choose where the backend provides none (the local backend).
            return MountsView(
                legend="Extra storage",
                name=self.name("mounts"),
                marker=self.name(_MOUNTS_MARKER),
                options=(),
                unavailable=tuple(f"{m.display_name or m.id} ({m.mount_path})" for m in mounts),
                note=self.mounts_note,
            )
        last = self.last.get("mounts")
        chosen = (
            {m for m in last if isinstance(m, str)}
            if isinstance(last, (list, tuple))
            else {m.id for m in mounts if m.optional and m.default}
        )
        options = tuple(
            Option(
                value=m.id,
                label=m.display_name or m.id,
                note=" ".join(p for p in (m.description or "", f"({m.mount_path})", _register_first(m)) if p),
                selected=m.id in chosen,
                id=f"{self.name('mounts')}:{m.id}",
            )
            for m in mounts
            if m.optional
        )
        always = tuple(f"{m.display_name or m.id} ({m.mount_path})" for m in mounts if not m.optional)
        return MountsView(
            legend="Extra storage",
            name=self.name("mounts"),
            marker=self.name(_MOUNTS_MARKER),
            options=options,
            always=always,
        )

    #: Whether the backend keeps an old home aside on reset (local) or deletes it (Kubernetes).
    reset_keeps_old_home = True
    #: Why extra mounts are not provided (a backend without them); "" where they are.
    mounts_note = ""

    def cost(self) -> CostLine | None:
        """The hourly cost of what the form pre-selects (after the GPU and resources are built)."""
        if not self.pricer.shown:
            return None
        chosen = self.selected
        gpu = str(chosen.get("gpu", NO_GPU))
        amount = hourly_cost(
            self.instance.prices,
            cpu_millicores=int(chosen.get("cpu", 0)),
            memory_bytes=int(chosen.get("memory", 0)),
            gpu=None if gpu == NO_GPU else gpu,
            gpu_count=int(chosen.get("gpu_count", 0)),
        )
        return CostLine(currency=self.pricer.currency, text=self.pricer.total(amount))

    def build(self, checked: bool, images_apply: bool) -> ProfileView:
        # The GPU first: a type may bring the CPU and memory the cost line counts.
        gpu = self.gpu()
        choice = next((c for c in self.gpus if c.id == self.selected.get("gpu")), None)
        cpu, memory = self.quantity("cpu"), self.quantity("memory")
        if choice is not None:
            for key in _RESOURCE_KEYS:
                option = quantity_option(self.profile, choice, key)
                if option.fixed:
                    self.selected[key] = option.default_value()
        return ProfileView(
            slug=self.profile.slug,
            display_name=self.profile.display_name,
            description=self.profile.description,
            radio_id=f"profile:{self.profile.slug}",
            checked=checked,
            image=self.image() if images_apply else None,
            cpu=cpu,
            memory=memory,
            gpu=gpu,
            home=self.home(),
            mounts=self.mounts(),
            cost=self.cost(),
        )


def build_form(
    profiles: ProfileSet,
    user: UserContext,
    *,
    last: ResolvedOptions | None = None,
    capacity: Mapping[str, GpuCapacity] | None = None,
    images_apply: bool = True,
    servers_run_as: str = "",
    reset_keeps_old_home: bool = True,
    mounts_apply: bool = True,
    usage: Sequence[str] = (),
    gpus_url: str = "",
) -> FormView:
    """The form for ``user``: only what their groups grant, the defaults pre-selected, and, in
    the profile they used last, their last choices (``last``: their previous request resolved
    again now, ``None`` when it is no longer valid).

    ``capacity`` holds the free/total figures the backend gave for each GPU type (missing types
    show none); ``images_apply`` is false on a backend that runs no images, whose
    ``servers_run_as`` (e.g. "local processes") then says why. ``reset_keeps_old_home`` words
    the reset box: kept aside (local backend) or deleted (a Kubernetes volume); ``mounts_apply``
    is false on a backend that provides no extra mounts (they are then listed as not provided).
    ``usage`` holds sentences about the user's cost and quotas, shown above the profiles;
    ``gpus_url`` is the JSON route the page's script refreshes the GPU figures from.

    GPU types of which ``capacity`` says the cluster has none (or fewer than the type's least
    count) are shown disabled with the reason, and "Number of GPUs" offers no more than the
    cluster's total; without figures nothing is disabled or bounded. Where the instance has
    ``prices``, each CPU and memory value and each GPU type shows its hourly price, and each
    profile the hourly cost of its current choice (kept up to date by the page's script).
    """
    instance = profiles.instance
    images_note = ""
    if not images_apply:
        why = f" (its servers run as {servers_run_as})" if servers_run_as else ""
        images_note = f"{IMAGES_DO_NOT_APPLY}{why}."
    allowed = [p for p in profiles.profiles if granted(p.groups, user, instance)]
    if not allowed:
        return FormView(
            instance=instance.display_name,
            profiles=(),
            images_apply=images_apply,
            images_note=images_note,
            empty_message="No profile of this hub is open to your groups. "
            "Ask the hub's operators for access.",
            usage=tuple(usage),
        )
    chosen = last.profile if last is not None else None
    if chosen not in {p.slug for p in allowed}:
        default = default_profile_for(profiles, user)
        chosen = default.slug if default is not None else allowed[0].slug
    remembered = last.user_options() if last is not None else {}
    builders = [
        _ProfileBuilder(profile, user, instance, remembered if profile.slug == chosen else {}, capacity or {})
        for profile in allowed
    ]
    why = f" (its servers run as {servers_run_as})" if servers_run_as else ""
    for builder in builders:
        builder.reset_keeps_old_home = reset_keeps_old_home
        builder.mounts_note = "" if mounts_apply else f"{MOUNTS_NOT_PROVIDED}{why}."
    views = tuple(b.build(b.profile.slug == chosen, images_apply) for b in builders)
    return FormView(
        instance=instance.display_name,
        profiles=views,
        images_apply=images_apply,
        images_note=images_note,
        usage=tuple(usage),
        gpus_url=gpus_url,
    )


def capacity_figures(capacity: Mapping[str, GpuCapacity]) -> dict[str, dict[str, int | str]]:
    """The JSON body of the GPU route: free, total and the form's wording, by GPU type."""
    return {
        gpu: {"free": figures.free, "total": figures.total, "note": _capacity_note(figures)}
        for gpu, figures in sorted(capacity.items())
    }


# --- reading the posted form -------------------------------------------------------------------


def _single(values: Sequence[str]) -> str | Sequence[str]:
    """A form field's values: one string, or the list itself (the resolver refuses it)."""
    return values[0] if len(values) == 1 else values


def _effective_fixed(profile: Profile, gpu: object, key: Literal["cpu", "memory"]) -> bool:
    """Whether ``key`` (cpu or memory) is fixed with the GPU type the form asks for (the
    resolver's rule, :func:`~einfra_spawner.options.quantity_option`)."""
    choice = next((c for c in profile.gpu.choices if c.id == gpu), None)
    if choice is None:
        choice = profile.gpu.default_choice() if gpu is None else None
    if choice is None:
        return False  # an unknown GPU: the resolver refuses it and says why
    return quantity_option(profile, choice, key).fixed


def _posted_quantity(
    profile: Profile, user: UserContext, instance: Instance, key: Literal["cpu", "memory"], value: object
) -> object:
    """A CPU or memory field's value as a quantity: a number field posts a bare number in its
    unit (the unit the form chose for this user, computed again by the same rule)."""
    builder = _ProfileBuilder(profile, user, instance, {}, {})
    allowed = [allowed_quantity(o, builder.open) for o in builder.options_in_play(key)]
    if envelope(allowed) is None:
        return value  # a select: its values are quantities already
    return posted_quantity(value, builder.unit(key))


def request_from_form(
    formdata: Mapping[str, Sequence[str]], profiles: ProfileSet, user: UserContext
) -> dict[str, object]:
    """The request (REST ``user_options`` keys) that a posted form asks for.

    Reads only the chosen profile's fields; does not validate (the resolver does): a forged
    value goes through to the resolver and is refused there with a message.
    """
    request: dict[str, object] = {}
    if "profile" in formdata:
        raw = _single(formdata["profile"])
        request["profile"] = raw
        profile = profiles.profile(raw) if isinstance(raw, str) else None
        if profile is None:
            return request  # an unknown or forged profile: nothing else to read
    else:
        profile = default_profile_for(profiles, user)
        if profile is None:
            return request

    def field(key: str) -> str | Sequence[str] | None:
        values = formdata.get(field_name(profile.slug, key))
        return None if values is None else _single(values)

    image = field("image")
    if image == CUSTOM_IMAGE_VALUE:
        custom = field(_CUSTOM_SUFFIX)
        request["image"] = custom if custom is not None else ""
    elif image is not None:
        request["image"] = image
    gpu = field("gpu")
    if gpu is not None:
        request["gpu"] = gpu
    count = field("gpu_count")
    gpu_chosen = gpu if gpu is not None else profile.gpu.default_choice().id
    if count is not None and gpu_chosen != NO_GPU:
        request["gpu_count"] = count
    for key in _RESOURCE_KEYS:
        value = field(key)
        if value is not None and not _effective_fixed(profile, gpu, key):
            request[key] = _posted_quantity(profile, user, profiles.instance, key, value)
    home = field("home")
    if home is not None:
        request["home"] = home
    if field(_MOUNTS_MARKER) is not None:
        request["mounts"] = list(formdata.get(field_name(profile.slug, "mounts"), []))
    return request


def request_from_query(query: Mapping[str, Sequence[str]]) -> dict[str, object]:
    """The request that ``/hub/spawn?opt-<key>=<value>`` asks for (flat request keys, each
    value a list of strings), from the option keys as JupyterHub 6 passes them on
    (:func:`einfra_spawner.asked.query_options` reads them so from JupyterHub 5's or from the
    raw query). Not validated here: the resolver does."""
    request: dict[str, object] = {}
    for key, values in query.items():
        if key == "mounts":
            request[key] = [v for v in values if v]
        else:
            request[key] = _single(values)
    return request
