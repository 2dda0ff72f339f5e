"""One profile on the options form: its image, CPU and memory fields, and its hourly cost line.

Pure, below :func:`einfra_spawner.form.build_form`, which builds one :class:`ProfileBuilder` per
profile the user may start. The builder asks :mod:`.form_gpu` for the GPU part first (a GPU type
may bring the CPU and memory the cost line counts) and :mod:`.form_storage` for the home and
mounts, and assembles a :class:`~einfra_spawner.form_view.ProfileView`. Field names and what a
CPU or memory field spans come from :mod:`.form_fields`, the rules the form's reader
(:mod:`.form_request`) applies too.

CPU and memory are a select of the values open to the user, or a number field where a range is
in play, or text where there is nothing to choose (one value; or fixed values that each GPU type
brings). Prices (:mod:`.pricing`, the usage report's rule) are printed beside each value and
carried as exact fractions in data attributes, from which the page's script keeps each profile's
"Hourly cost of this choice" up to date.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from .backend import GpuCapacity
from .form_fields import (
    CUSTOM_IMAGE_FIELD,
    CUSTOM_IMAGE_VALUE,
    RESOURCE_KEYS,
    QuantityField,
    field_name,
    open_gpus,
    quantity_field,
)
from .form_gpu import GpuFieldBuilder
from .form_resources import Pricer, amount_text, cpu_label, memory_label
from .form_storage import home_view, mounts_view
from .form_view import CostLine, Fixed, ImageView, NumberInput, Option, ProfileView, Select, TextInput
from .models import NO_GPU, CpuOption, Instance, MemoryOption, Profile
from .options import UserContext, granted, quantity_option
from .pricing import hourly_cost
from .quantities import format_cpu, format_memory, parse_cpu, parse_memory

__all__ = ["ProfileBuilder"]


class ProfileBuilder:
    """The view of one profile for one user; a class only to keep its inputs at hand.

    ``last`` holds the keys of the user's previous request where this is the profile they used
    last (else nothing); ``capacity`` the backend's GPU figures by type. ``reset_keeps_old_home``
    and ``mounts_note`` describe the backend (:func:`.form_storage.home_view`, ``mounts_view``).
    """

    def __init__(
        self,
        profile: Profile,
        user: UserContext,
        instance: Instance,
        last: Mapping[str, object],
        capacity: Mapping[str, GpuCapacity],
        *,
        reset_keeps_old_home: bool = True,
        mounts_note: str = "",
    ) -> None:
        self.profile = profile
        self.user = user
        self.instance = instance
        self.last = last
        self.capacity = capacity
        self.reset_keeps_old_home = reset_keeps_old_home
        self.mounts_note = mounts_note
        self.gpus = open_gpus(profile, user, instance)
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
                name=self.name(CUSTOM_IMAGE_FIELD),
                id=self.name(CUSTOM_IMAGE_FIELD),
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
        field = quantity_field(self.profile, self.gpus, key, self.open)
        in_play, allowed = field.in_play, field.allowed
        values: list[int] = []
        for option in allowed:
            values.extend(v for v in option.values if v not in values)
        title = "CPU" if is_cpu else "Memory"
        by_gpu = in_play != (base,)
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
        if field.span is not None:
            return self.number(field, last, default, hint)
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

    def number(self, field: QuantityField, last: object, default: int, hint: str) -> NumberInput:
        """A number field for a range: bounds and step in the field's unit, the price per unit."""
        key, span, unit = field.key, field.span, field.unit
        assert span is not None  # a number field is built only where a range is in play
        chosen = default
        if isinstance(last, str):
            try:
                parsed = (parse_cpu if key == "cpu" else parse_memory)(last)
            except ValueError:
                parsed = default  # never from a resolved request; kept total all the same
            chosen = parsed if any(a.allows(parsed) for a in field.allowed) else default
        self.selected[key] = chosen
        price = (self.pricer.cpu if key == "cpu" else self.pricer.memory)(unit.size)
        per_unit = self.pricer.per_unit(price, "CPU" if key == "cpu" else unit.label)
        bounds = f"{amount_text(span.minimum, unit)} to {amount_text(span.maximum, unit)} {unit.label}"
        steps = f"in steps of {amount_text(span.step, unit)}"
        return NumberInput(
            name=self.name(key),
            id=self.name(key),
            label=f"{'CPU' if key == 'cpu' else 'Memory'} (limit, {unit.label})",
            value=amount_text(chosen, unit),
            minimum=amount_text(span.minimum, unit),
            maximum=amount_text(span.maximum, unit),
            step=amount_text(span.step, unit),
            unit=unit.label,
            hint=" ".join(p for p in (f"{bounds}, {steps}.", f"{per_unit}." if per_unit else "", hint) if p),
            part=key,
            unit_price=self.pricer.exact(price),
        )

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
        gpu = GpuFieldBuilder(self.profile, self.gpus, self.instance, self.last, self.capacity, self.pricer)
        gpu_field = gpu.build()
        if gpu_field.gpu is not None:
            self.selected["gpu"], self.selected["gpu_count"] = gpu_field.gpu, gpu_field.count
        choice = next((c for c in self.gpus if c.id == gpu_field.gpu), None)
        cpu, memory = self.quantity("cpu"), self.quantity("memory")
        if choice is not None:
            for key in RESOURCE_KEYS:
                option = quantity_option(self.profile, choice, key)
                if option.fixed:
                    self.selected[key] = option.default_value()
        mounts = [m for m in self.profile.mounts if self.open(m.groups)]
        return ProfileView(
            slug=self.profile.slug,
            display_name=self.profile.display_name,
            description=self.profile.description,
            radio_id=f"profile:{self.profile.slug}",
            checked=checked,
            image=self.image() if images_apply else None,
            cpu=cpu,
            memory=memory,
            gpu=gpu_field.view,
            home=home_view(self.profile, self.instance, reset_keeps_old_home=self.reset_keeps_old_home),
            mounts=mounts_view(self.profile, mounts, self.last, not_provided=self.mounts_note),
            cost=self.cost(),
        )
