"""The storage part of the options form: the home (and its reset box) and the extra mounts.

Pure, a part of one profile's view (:mod:`.form_profile` calls :func:`home_view` and
:func:`mounts_view`). What is said depends on the backend as well as the profile: the reset box
says whether the current home is kept aside (the local backend), kept for a while, or deleted (a
Kubernetes volume); a backend that provides no extra mounts gets them listed as not provided, as
images are on a backend without images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .form_fields import MOUNTS_MARKER_FIELD, field_name
from .form_resources import memory_label
from .form_view import Checkbox, HomeView, MountsView, Option
from .models import Instance, Mount, Profile
from .storage import format_duration

__all__ = [
    "MOUNTS_NOT_PROVIDED",
    "RESET_LABEL",
    "RESET_LABEL_DELETES",
    "RESET_LABEL_KEPT",
    "home_view",
    "mounts_view",
]

RESET_LABEL = "Reset my home (your current home is kept aside)"
RESET_LABEL_DELETES = "Reset my home (your current home is deleted)"
RESET_LABEL_KEPT = "Reset my home (your current home is kept for a while)"
MOUNTS_NOT_PROVIDED = "Extra storage is not provided on this hub"


def home_view(profile: Profile, instance: Instance, *, reset_keeps_old_home: bool) -> HomeView | None:
    """What the home of ``profile`` is, with the reset box where the profile allows a reset;
    ``reset_keeps_old_home``: the backend moves an old home aside instead of deleting it."""
    home = profile.home
    if home is None:
        return None
    size = memory_label(home.size)
    if home.reset == "always":
        return HomeView(
            text=f"A fresh home of {size} at every start: your work there is erased when the server stops."
        )
    text = f"A persistent home of {size} at {home.mount_path}."
    if home.reset != "allowed":
        return HomeView(text=text)
    # Never pre-checked, whatever was chosen last time: a reset must be asked for each time.
    if reset_keeps_old_home:
        label, hint = (
            RESET_LABEL,
            "Starts this server with an empty home; the current one is moved aside, not deleted.",
        )
    elif instance.homes.reset.keep_for > 0:
        kept = format_duration(instance.homes.reset.keep_for)
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
    name = field_name(profile.slug, "home")
    return HomeView(text=text, reset=Checkbox(name=name, id=name, value="reset", label=label, hint=hint))


def _register_first(mount: Mount) -> str:
    """What the user must register before a mount with a per-user secret can work."""
    source = mount.pv or mount.csi
    if source is None or source.secret is None:
        return ""
    return source.register_first or "Needs your credentials registered first."


def mounts_view(
    profile: Profile, mounts: Sequence[Mount], last: Mapping[str, object], *, not_provided: str
) -> MountsView | None:
    """The extra mounts of ``profile`` open to the user (``mounts``): the optional ones as
    checkboxes, checked as in ``last`` (their previous request) or by default, and those always
    mounted. ``not_provided`` says why the backend provides none ("" where it does)."""
    if not mounts:
        return None
    name = field_name(profile.slug, "mounts")
    marker = field_name(profile.slug, MOUNTS_MARKER_FIELD)
    if not_provided:
        # As images: nothing to choose where the backend provides none (the local backend).
        return MountsView(
            legend="Extra storage",
            name=name,
            marker=marker,
            options=(),
            unavailable=tuple(f"{m.display_name or m.id} ({m.mount_path})" for m in mounts),
            note=not_provided,
        )
    previous = last.get("mounts")
    chosen = (
        {m for m in previous if isinstance(m, str)}
        if isinstance(previous, (list, tuple))
        else {m.id for m in mounts if m.optional and m.default}
    )
    options = tuple(
        Option(
            value=m.id,
            label=m.display_name or m.id,
            note=" ".join(p for p in (m.description or "", f"({m.mount_path})", _register_first(m)) if p),
            selected=m.id in chosen,
            id=f"{name}:{m.id}",
        )
        for m in mounts
        if m.optional
    )
    always = tuple(f"{m.display_name or m.id} ({m.mount_path})" for m in mounts if not m.optional)
    return MountsView(legend="Extra storage", name=name, marker=marker, options=options, always=always)
