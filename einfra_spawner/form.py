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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from .backend import GpuCapacity
from .models import NO_GPU, CpuOption, GpuChoice, Instance, MemoryOption, Profile
from .options import ResolvedOptions, UserContext, default_profile_for, granted, quantity_option
from .profiles import ProfileSet
from .quantities import format_cpu, format_memory

__all__ = [
    "CUSTOM_IMAGE_VALUE",
    "IMAGES_DO_NOT_APPLY",
    "RESET_LABEL",
    "RESET_LABEL_DELETES",
    "Checkbox",
    "Fixed",
    "FormView",
    "GpuView",
    "HomeView",
    "ImageView",
    "MountsView",
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
IMAGES_DO_NOT_APPLY = "Images do not apply on this hub"


def field_name(slug: str, key: str) -> str:
    """The form field of profile ``slug`` for request key (or helper) ``key``."""
    return f"{slug}{_SEPARATOR}{key}"


# --- the view model ----------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Fixed:
    """An option with nothing to choose, shown as information."""

    kind: ClassVar[str] = "fixed"
    label: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Select:
    """A ``<select>`` with its ``<label>``."""

    kind: ClassVar[str] = "select"
    name: str
    id: str
    label: str
    options: tuple[Option, ...]
    hint: str = ""


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
    """Optional mounts as checkboxes (with the marker field) and the mounts always present."""

    legend: str
    name: str
    marker: str
    options: tuple[Option, ...]
    always: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileView:
    """One profile on the form: its radio button and its controls."""

    slug: str
    display_name: str
    description: str
    radio_id: str
    checked: bool
    image: ImageView | Fixed | None
    cpu: Select | Fixed
    memory: Select | Fixed
    gpu: GpuView | Fixed | None
    home: HomeView | None
    mounts: MountsView | None


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


# --- labels ------------------------------------------------------------------------------------


def cpu_label(millicores: int) -> str:
    """``2000`` -> ``2 CPUs``, ``500`` -> ``0.5 CPU``."""
    if millicores % 1000 == 0:
        count = millicores // 1000
        return f"{count} CPU" if count == 1 else f"{count} CPUs"
    return f"{millicores / 1000:g} CPU"


def memory_label(size: int) -> str:
    """``8589934592`` -> ``8 GiB``."""
    text = format_memory(size)
    if text.endswith("i"):
        return f"{text[:-2]} {text[-2:]}B"
    return f"{text} bytes"


def _gpu_name(choice: GpuChoice, instance: Instance) -> str:
    if choice.id == NO_GPU:
        return "No GPU"
    return instance.gpu_types[choice.id].display_name


def _with_resources(choice: GpuChoice) -> str:
    parts = []
    if choice.cpu is not None and choice.cpu.fixed:
        parts.append(cpu_label(choice.cpu.choices[0].value))
    if choice.memory is not None and choice.memory.fixed:
        parts.append(memory_label(choice.memory.choices[0].value))
    return f"with {' and '.join(parts)}" if parts else ""


def _capacity_note(capacity: GpuCapacity | None) -> str:
    if capacity is None:
        return ""  # the backend cannot tell
    if capacity.total == 0:
        return "none available"
    return f"{capacity.free} of {capacity.total} free"


# --- building the view -------------------------------------------------------------------------


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

    def quantity(self, key: str) -> Select | Fixed:
        """CPU or memory: the profile's choices, or those the GPU types bring with them."""
        is_cpu = key == "cpu"
        label_of = cpu_label if is_cpu else memory_label
        value_of = format_cpu if is_cpu else format_memory
        base: CpuOption | MemoryOption = self.profile.cpu if is_cpu else self.profile.memory
        in_play: list[CpuOption | MemoryOption] = []
        for gpu in self.gpus:
            option = (gpu.cpu if is_cpu else gpu.memory) or base
            if option not in in_play:
                in_play.append(option)
        values: list[int] = []
        for option in in_play:
            for choice in option.choices:
                if self.open(choice.groups) and choice.value not in values:
                    values.append(choice.value)
        title = "CPU" if is_cpu else "Memory"
        by_gpu = in_play != [base]
        if len(values) == 1:
            return Fixed(label=title, text=label_of(values[0]))
        if by_gpu and all(o.fixed for o in in_play):
            return Fixed(label=title, text="comes with the GPU type (see each GPU type)")
        last = self.last.get(key)
        default = value_of(base.default_choice().value)
        selected = last if isinstance(last, str) and last in map(value_of, values) else default
        return Select(
            name=self.name(key),
            id=self.name(key),
            label=f"{title} (limit)",
            options=tuple(
                Option(value=value_of(v), label=label_of(v), selected=value_of(v) == selected)
                for v in sorted(values)
            ),
            hint="The GPU type decides which values are allowed." if by_gpu else "",
        )

    def gpu(self) -> GpuView | Fixed | None:
        if [c.id for c in self.gpus] == [NO_GPU]:
            return None  # nothing to choose and nothing to say: no GPU
        if len(self.gpus) == 1 and self.gpus[0].max_count == 1:
            only = self.gpus[0]
            note = _capacity_note(self.capacity.get(only.id))
            text = " ".join(p for p in (_gpu_name(only, self.instance), _with_resources(only)) if p)
            return Fixed(label="GPU", text=f"{text} ({note})" if note else text)
        last = self.last.get("gpu")
        selected = last if last in {c.id for c in self.gpus} else self.profile.gpu.default_choice().id
        options = []
        for choice in self.gpus:
            extras = [_with_resources(choice)]
            if choice.max_count > 1:
                extras.append(f"up to {choice.max_count}")
            static = ", ".join(e for e in extras if e)
            live = _capacity_note(self.capacity.get(choice.id))
            options.append(
                Option(
                    value=choice.id,
                    label=_gpu_name(choice, self.instance),
                    note=", ".join(e for e in (static, live) if e),
                    selected=choice.id == selected,
                    id=f"{self.name('gpu')}:{choice.id}",
                    static_note=static,
                    capacity_note=live,
                    capacity_of=choice.id if live else "",
                )
            )
        most = max(c.max_count for c in self.gpus)
        count = None
        if most > 1:
            last_count = str(self.last.get("gpu_count", "1"))
            count = Select(
                name=self.name("gpu_count"),
                id=self.name("gpu_count"),
                label="Number of GPUs",
                options=tuple(
                    Option(value=str(n), label=str(n), selected=str(n) == last_count)
                    for n in range(1, most + 1)
                ),
                hint="Up to the number shown for the chosen type; ignored without a GPU.",
            )
        return GpuView(legend="GPU", name=self.name("gpu"), options=tuple(options), count=count)

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
                note=" ".join(p for p in (m.description or "", f"({m.mount_path})") if p),
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

    def build(self, checked: bool, images_apply: bool) -> ProfileView:
        return ProfileView(
            slug=self.profile.slug,
            display_name=self.profile.display_name,
            description=self.profile.description,
            radio_id=f"profile:{self.profile.slug}",
            checked=checked,
            image=self.image() if images_apply else None,
            cpu=self.quantity("cpu"),
            memory=self.quantity("memory"),
            gpu=self.gpu(),
            home=self.home(),
            mounts=self.mounts(),
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
    usage: Sequence[str] = (),
    gpus_url: str = "",
) -> FormView:
    """The form for ``user``: only what their groups grant, the defaults pre-selected, and, in
    the profile they used last, their last choices (``last``: their previous request resolved
    again now, ``None`` when it is no longer valid).

    ``capacity`` holds the free/total figures the backend gave for each GPU type (missing types
    show none); ``images_apply`` is false on a backend that runs no images, whose
    ``servers_run_as`` (e.g. "local processes") then says why. ``reset_keeps_old_home`` words
    the reset box: kept aside (local backend) or deleted (a Kubernetes volume). ``usage`` holds
    sentences about the user's cost and quotas, shown above the profiles; ``gpus_url`` is the
    JSON route the page's script refreshes the GPU figures from.
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
    for builder in builders:
        builder.reset_keeps_old_home = reset_keeps_old_home
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
    keys: tuple[Literal["cpu", "memory"], ...] = ("cpu", "memory")
    for key in keys:
        value = field(key)
        if value is not None and not _effective_fixed(profile, gpu, key):
            request[key] = value
    home = field("home")
    if home is not None:
        request["home"] = home
    if field(_MOUNTS_MARKER) is not None:
        request["mounts"] = list(formdata.get(field_name(profile.slug, "mounts"), []))
    return request


def request_from_query(query: Mapping[str, Sequence[str]]) -> dict[str, object]:
    """The request that ``/hub/spawn?opt-<key>=<value>`` asks for (flat request keys, each
    value a list of strings as JupyterHub passes it). Not validated here: the resolver does."""
    request: dict[str, object] = {}
    for key, values in query.items():
        if key == "mounts":
            request[key] = [v for v in values if v]
        else:
            request[key] = _single(values)
    return request
