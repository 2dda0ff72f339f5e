"""The options form read back: a posted form, or a spawn URL's query, as the flat request keys.

Pure, between the spawner (and :mod:`.asked`, which reads the request of a start) and the
resolver. :func:`request_from_form` turns the posted form (a dict of lists of strings) into the
flat request keys of the REST API (``user_options``), which
:func:`einfra_spawner.resolve_options` then validates exactly as it validates a REST request: the
form offers, the resolver decides. Nothing is validated here; a forged value goes through to the
resolver and is refused there with a message.

The fields are read by the names, and a number field in the unit, that :mod:`.form_fields`
gives the builder (:mod:`.form_profile`), so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from .form_fields import (
    CUSTOM_IMAGE_FIELD,
    CUSTOM_IMAGE_VALUE,
    MOUNTS_MARKER_FIELD,
    RESOURCE_KEYS,
    field_name,
    open_gpus,
    quantity_field,
)
from .form_resources import posted_quantity
from .models import NO_GPU, Instance, Profile
from .options import UserContext, default_profile_for, granted, quantity_option
from .profiles import ProfileSet

__all__ = ["request_from_form", "request_from_query"]


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
    field = quantity_field(
        profile, open_gpus(profile, user, instance), key, lambda groups: granted(groups, user, instance)
    )
    if field.span is None:
        return value  # a select: its values are quantities already
    return posted_quantity(value, field.unit)


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
        custom = field(CUSTOM_IMAGE_FIELD)
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
    for key in RESOURCE_KEYS:
        value = field(key)
        if value is not None and not _effective_fixed(profile, gpu, key):
            request[key] = _posted_quantity(profile, user, profiles.instance, key, value)
    home = field("home")
    if home is not None:
        request["home"] = home
    if field(MOUNTS_MARKER_FIELD) is not None:
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
