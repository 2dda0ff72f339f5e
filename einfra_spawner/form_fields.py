"""The options form's fields: what each control is named, and what a CPU or memory field spans.

Pure, shared by both directions of the form so that they cannot drift: :mod:`.form_profile`
(with :mod:`.form_gpu` and :mod:`.form_storage`) names and builds the controls,
:mod:`.form_request` reads a posted form back by the same names, and reads a number field in the
unit that :func:`quantity_field` computes for the builder.

Field naming (several profiles on one page, no JavaScript needed)
----------------------------------------------------------------
Every profile the user may start is a ``<fieldset>`` with all of its own controls; one set of
radio buttons named ``profile`` says which profile to start. The controls of a profile are named
``<slug>--<key>`` (:func:`field_name`), where ``<key>`` is a request key (``image``, ``cpu``,
``memory``, ``gpu``, ``gpu_count``, ``home``, ``mounts``) or one of two helpers:

* ``<slug>--image-custom`` (:data:`CUSTOM_IMAGE_FIELD`): the text of a custom image, used when
  ``<slug>--image`` is :data:`CUSTOM_IMAGE_VALUE` (a value no image choice id can take);
* ``<slug>--mounts-shown`` (:data:`MOUNTS_MARKER_FIELD`): a hidden marker sent with the
  optional-mount checkboxes, so that "all unchecked" (the browser then sends nothing) reads as
  ``mounts: []`` rather than as "use the defaults".

Only the fields of the chosen profile are read, each by its exact name (names are never split,
so a slug that itself contains ``--`` is no problem); the others are ignored, so a user can look
at every profile, change several, and start the one they picked. Element ids follow the names;
radio buttons and checkboxes add ``:<value>``, and the profile radios are ``profile:<slug>``
(no slug contains ``:``), so ids never collide.

A fixed option (one choice open to the user) is shown as text and has no field; the request then
simply omits the key and the resolver takes the profile's value. The same holds for CPU and
memory when the chosen GPU type brings fixed values of its own.

CPU and memory fields
---------------------
The options in play for CPU (or memory) are the profile's and those the user's GPU types bring
(:func:`~einfra_spawner.options.quantity_option`, the resolver's rule). When one of them is a
range, the field is a number field in a unit a person reads (cores; GiB, MiB...: the largest unit
in which its least value and step are whole, :mod:`.form_resources`); a posted bare number is read
in that unit (``"16"`` -> ``"16Gi"``), and the resolver checks bounds and step exactly. The
field's bounds and step come from :func:`~einfra_spawner.options.allowed_quantity`, the
resolver's own rule, so the browser never blocks what the resolver grants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .form_resources import CPU_UNIT, Envelope, FieldUnit, envelope, memory_unit
from .models import CpuOption, GpuChoice, Instance, MemoryOption, Profile
from .options import AllowedQuantity, UserContext, allowed_quantity, granted, quantity_option

__all__ = [
    "CUSTOM_IMAGE_FIELD",
    "CUSTOM_IMAGE_VALUE",
    "MOUNTS_MARKER_FIELD",
    "RESOURCE_KEYS",
    "QuantityField",
    "field_name",
    "open_gpus",
    "quantity_field",
]

#: The value of the image control that means "use the custom image typed below".
CUSTOM_IMAGE_VALUE = ":custom"
#: The helper key of the custom image's text field.
CUSTOM_IMAGE_FIELD = "image-custom"
#: The helper key of the hidden marker sent with the optional-mount checkboxes.
MOUNTS_MARKER_FIELD = "mounts-shown"
#: The request keys that a GPU type may fix (and that are then not read from the form).
RESOURCE_KEYS: tuple[Literal["cpu", "memory"], ...] = ("cpu", "memory")
_SEPARATOR = "--"


def field_name(slug: str, key: str) -> str:
    """The form field of profile ``slug`` for request key (or helper) ``key``."""
    return f"{slug}{_SEPARATOR}{key}"


def open_gpus(profile: Profile, user: UserContext, instance: Instance) -> list[GpuChoice]:
    """The GPU choices of ``profile`` that ``user``'s groups grant, in the profile's order."""
    return [c for c in profile.gpu.choices if granted(c.groups, user, instance)]


@dataclass(frozen=True, slots=True)
class QuantityField:
    """What the form offers for CPU or memory in one profile to one user.

    ``in_play``: the profile's option and those the user's GPU types bring, each once;
    ``allowed``: what each of those allows the user; ``span``: the number field's bounds and step
    when a range is in play, ``None`` when the form shows the values as a select."""

    key: Literal["cpu", "memory"]
    in_play: tuple[CpuOption | MemoryOption, ...]
    allowed: tuple[AllowedQuantity, ...]
    span: Envelope | None

    @property
    def unit(self) -> FieldUnit:
        """The number field's unit: cores; for memory the largest unit in which the least value
        and the step are whole."""
        if self.key == "cpu":
            return CPU_UNIT
        return memory_unit((self.span.minimum, self.span.step) if self.span is not None else ())


def quantity_field(
    profile: Profile,
    gpus: Sequence[GpuChoice],
    key: Literal["cpu", "memory"],
    is_open: Callable[[Sequence[str]], bool],
) -> QuantityField:
    """The CPU or memory field of ``profile`` for a user with the GPU choices ``gpus`` and whose
    groups ``is_open`` tests (the same rule builds the field and reads it back)."""
    in_play: list[CpuOption | MemoryOption] = []
    for gpu in gpus:
        option = quantity_option(profile, gpu, key)
        if option not in in_play:
            in_play.append(option)
    allowed = tuple(allowed_quantity(o, is_open) for o in in_play)
    return QuantityField(key=key, in_play=tuple(in_play), allowed=allowed, span=envelope(allowed))
