"""The options form: what a user may see and choose, and form posts turned back into requests.

Pure, between the spawner and the resolver; this module is the form's public face.
:func:`build_form` turns (profiles, user, last choices, GPU capacity) into a :class:`FormView`, a
tree of frozen values (:mod:`.form_view`) that the Jinja2 template ``templates/form.html``
renders without deciding anything. :func:`request_from_form` (:mod:`.form_request`) turns the
posted form back into the flat request keys of the REST API, which
:func:`einfra_spawner.resolve_options` then validates exactly as it validates a REST request: the
form offers, the resolver decides.

The parts, each its own module:

* :mod:`.form_fields`: the names of the controls and what a CPU or memory field spans, the
  rules the builder and the reader share (field naming is explained there);
* :mod:`.form_profile`: one profile's view (image, CPU and memory, the hourly cost line), with
  :mod:`.form_gpu` (GPU types, counts and the cluster's figures) and :mod:`.form_storage` (the
  home, its reset box and the extra mounts);
* :mod:`.form_resources` and :mod:`.pricing`: labels, number-field units and prices;
* :mod:`.form_request`: a posted form or a spawn URL's query read back as a request.

The view also carries sentences about the user's usage and quotas (computed by the spawner from
the usage ledger) and the URL of the hub's JSON route from which the page's small script
refreshes the "N of M free" GPU figures in place (:func:`capacity_figures`); the form works the
same without the script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .backend import GpuCapacity
from .form_fields import CUSTOM_IMAGE_VALUE, field_name
from .form_gpu import NONE_ON_CLUSTER, capacity_figures, capacity_types
from .form_profile import ProfileBuilder
from .form_request import request_from_form, request_from_query
from .form_resources import cpu_label, memory_label
from .form_storage import MOUNTS_NOT_PROVIDED, RESET_LABEL, RESET_LABEL_DELETES
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
from .options import ResolvedOptions, UserContext, default_profile_for, granted
from .profiles import ProfileSet

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

IMAGES_DO_NOT_APPLY = "Images do not apply on this hub"


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
    why = f" (its servers run as {servers_run_as})" if servers_run_as else ""
    images_note = "" if images_apply else f"{IMAGES_DO_NOT_APPLY}{why}."
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
    mounts_note = "" if mounts_apply else f"{MOUNTS_NOT_PROVIDED}{why}."
    builders = [
        ProfileBuilder(
            profile,
            user,
            instance,
            remembered if profile.slug == chosen else {},
            capacity or {},
            reset_keeps_old_home=reset_keeps_old_home,
            mounts_note=mounts_note,
        )
        for profile in allowed
    ]
    views = tuple(b.build(b.profile.slug == chosen, images_apply) for b in builders)
    return FormView(
        instance=instance.display_name,
        profiles=views,
        images_apply=images_apply,
        images_note=images_note,
        usage=tuple(usage),
        gpus_url=gpus_url,
    )
