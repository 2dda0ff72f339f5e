"""Option resolution: (profiles, user, request) -> ``ResolvedOptions``, or ``OptionsError``.

The one place where a user's request meets the operator's rules. Pure and total: any request of
any shape gives either frozen ``ResolvedOptions`` or an ``OptionsError`` naming the key, the value
and what is allowed. Nothing here mutates a spawner, so one spawn's choices cannot leak into the
next. Form posts (strings, or lists of strings) and REST ``user_options`` (JSON values) both come
through here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from .errors import OptionsError
from .models import (
    IMAGE_REFERENCE,
    NO_GPU,
    CpuOption,
    CsiSource,
    GpuChoice,
    ImageChoice,
    MemoryOption,
    NfsSource,
    Profile,
    PvcSource,
    PvTemplate,
)
from .options import (
    CUSTOM_IMAGE,
    ResolvedGpu,
    ResolvedHome,
    ResolvedMount,
    ResolvedOptions,
    UserContext,
    allowed_quantity,
    default_profile_for,
    granted,
    quantity_option,
)
from .pod_settings import merge_pod_settings
from .profiles import ProfileSet
from .quantities import format_cpu, format_memory, parse_cpu, parse_memory

__all__ = [
    "REQUEST_KEYS",
    "ResolvedGpu",
    "ResolvedHome",
    "ResolvedMount",
    "ResolvedOptions",
    "UserContext",
    "granted",
    "resolve_options",
]

#: Every key a request may carry.
REQUEST_KEYS = ("profile", "image", "cpu", "memory", "gpu", "gpu_count", "home", "mounts")
_HOME_VALUES = ("keep", "reset")
_MAX_VALUE_CHARS = 512
_MAX_MOUNTS = 64


def _scalar(key: str, value: object) -> str | int | float:
    """One value: a form sends a list of one string, JSON sends a string or a number."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise OptionsError(key, value, reason="must be a single value")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise OptionsError(key, value, reason="must be a string or a number")
    if isinstance(value, str):
        if len(value) > _MAX_VALUE_CHARS:
            raise OptionsError(key, value, reason="is too long")
        return value.strip()
    return value


def _text(key: str, value: object) -> str:
    scalar = _scalar(key, value)
    if not isinstance(scalar, str):
        raise OptionsError(key, scalar, reason="must be a string")
    return scalar


def _id_list(key: str, value: object) -> tuple[str, ...]:
    items: Sequence[object] = value if isinstance(value, (list, tuple)) else (value,)
    if len(items) > _MAX_MOUNTS:
        raise OptionsError(key, value, reason="has too many entries")
    result: list[str] = []
    for item in items:
        text = _text(key, item)
        if text and text not in result:
            result.append(text)
    return tuple(result)


def _checked_request(request: object) -> Mapping[str, object]:
    if not isinstance(request, Mapping):
        raise OptionsError("request", request, reason="must be a mapping of request keys")
    for key in request:
        if not isinstance(key, str) or key not in REQUEST_KEYS:
            raise OptionsError(str(key)[:40], request[key], REQUEST_KEYS, reason="is not a request key")
    return request


class _Resolver:
    """One resolution; a class only to keep the user and the request at hand."""

    def __init__(self, profiles: ProfileSet, user: UserContext, request: Mapping[str, object]):
        self.profiles = profiles
        self.instance = profiles.instance
        self.user = user
        self.request = request

    def open(self, groups: Sequence[str]) -> bool:
        return granted(groups, self.user, self.instance)

    def profile(self) -> Profile:
        allowed = [p for p in self.profiles.profiles if self.open(p.groups)]
        if "profile" not in self.request:
            default = default_profile_for(self.profiles, self.user)
            if default is not None:
                return default
            raise OptionsError(
                "profile",
                None,
                reason="cannot be chosen: no profile of this hub is open to your groups",
            )
        slug = _text("profile", self.request["profile"])
        chosen = self.profiles.profile(slug)
        if chosen is None or chosen not in allowed:
            raise OptionsError("profile", slug, [p.slug for p in allowed])
        return chosen

    def image(self, profile: Profile) -> tuple[str, str]:
        option = profile.image
        if "image" not in self.request:
            choice = option.default_choice()
            return choice.image, choice.id
        wanted = _text("image", self.request["image"])
        allowed = [c for c in option.choices if self.open(c.groups)]
        for choice in allowed:
            if choice.id == wanted:
                return choice.image, choice.id
        names = [c.id for c in allowed]
        _refuse_gated_image(wanted, option.choices, allowed, names)
        custom = option.custom
        if custom is not None and self.open(custom.groups):
            if custom.matches(wanted) and _is_image_reference(wanted):
                return wanted, CUSTOM_IMAGE
            hint = custom.message or f"a custom image must match {custom.pattern!r} as a whole"
            raise OptionsError("image", wanted, names, reason=f"is not allowed ({hint})")
        raise OptionsError("image", wanted, names)

    def gpu(self, profile: Profile) -> tuple[GpuChoice, ResolvedGpu | None]:
        option = profile.gpu
        allowed = [c for c in option.choices if self.open(c.groups)]
        if "gpu" in self.request:
            wanted = _text("gpu", self.request["gpu"])
            choice = next((c for c in allowed if c.id == wanted), None)
            if choice is None:
                raise OptionsError("gpu", wanted, [c.id for c in allowed])
        else:
            choice = option.default_choice()
        count = self.gpu_count(choice)
        if choice.id == NO_GPU:
            return choice, None
        gpu_type = self.instance.gpu_types[choice.id]
        return choice, ResolvedGpu(
            id=choice.id,
            display_name=gpu_type.display_name,
            resource=gpu_type.resource,
            count=count,
            node_selector=tuple(sorted(gpu_type.node_selector.items())),
            tolerations=gpu_type.tolerations,
        )

    def gpu_count(self, choice: GpuChoice) -> int:
        allowed_counts = [str(n) for n in choice.counts()]
        if "gpu_count" not in self.request:
            return choice.default_count()
        raw = _scalar("gpu_count", self.request["gpu_count"])
        # 2.0 from JSON is the count 2; inf, nan and 2.5 are no count at all (and int(inf) raises).
        text = str(int(raw)) if isinstance(raw, float) and raw.is_integer() else str(raw)
        if text not in allowed_counts:
            raise OptionsError("gpu_count", raw, _describe_counts(choice.counts()))
        return int(text)

    def quantity(self, key: Literal["cpu", "memory"], option: CpuOption | MemoryOption) -> tuple[int, int]:
        """(limit, guarantee) for CPU or memory: a choice open to the user's groups, or a value of
        the option's range (its bounds and step checked exactly, in millicores or bytes)."""
        fmt = format_cpu if key == "cpu" else format_memory
        allowed = allowed_quantity(option, self.open)
        if key in self.request:
            raw = _scalar(key, self.request[key])
            try:
                value = parse_cpu(raw) if key == "cpu" else parse_memory(raw)
            except ValueError:
                value = -1
            if not allowed.allows(value):
                raise OptionsError(key, raw, allowed.describe(fmt))
        else:
            value = allowed.default
        guarantee = value if option.guarantee is None else min(option.guarantee, value)
        return value, guarantee

    def home(self, profile: Profile) -> ResolvedHome | None:
        home = profile.home
        if home is None:
            if "home" in self.request:
                raise OptionsError(
                    "home",
                    self.request["home"],
                    reason="cannot be chosen: this profile has no persistent home",
                )
            return None
        allowed = {"never": ["keep"], "allowed": ["keep", "reset"], "always": ["reset"]}[home.reset]
        wanted = _text("home", self.request["home"]) if "home" in self.request else allowed[0]
        if wanted not in allowed:
            raise OptionsError("home", wanted, allowed)
        return ResolvedHome(
            size=home.size,
            storage_class=home.storage_class,
            mount_path=home.mount_path,
            access_modes=home.access_modes,
            ephemeral=home.reset == "always",
            reset=wanted == "reset" and home.reset == "allowed",
            keep_old_for=self.instance.homes.reset.keep_for,
        )

    def mounts(self, profile: Profile) -> tuple[ResolvedMount, ...]:
        allowed = [m for m in profile.mounts if self.open(m.groups)]
        optional = [m.id for m in allowed if m.optional]
        if "mounts" in self.request:
            wanted = _id_list("mounts", self.request["mounts"])
            known = {m.id for m in allowed}
            for mount_id in wanted:
                if mount_id not in known:
                    raise OptionsError("mounts", mount_id, optional)
        else:
            wanted = tuple(m.id for m in allowed if m.optional and m.default)
        return tuple(
            ResolvedMount(
                id=m.id,
                mount_path=m.mount_path,
                read_only=m.read_only,
                sub_path=m.sub_path,
                source=_source(m.pvc, m.nfs, m.csi, m.pv),
            )
            for m in allowed
            if not m.optional or m.id in wanted
        )

    def resolve(self) -> ResolvedOptions:
        profile = self.profile()
        image, image_choice = self.image(profile)
        gpu_choice, gpu = self.gpu(profile)
        cpu_limit, cpu_guarantee = self.quantity("cpu", quantity_option(profile, gpu_choice, "cpu"))
        memory_limit, memory_guarantee = self.quantity(
            "memory", quantity_option(profile, gpu_choice, "memory")
        )
        return ResolvedOptions(
            instance=self.instance.name,
            profile=profile.slug,
            profile_display_name=profile.display_name,
            image=image,
            image_choice=image_choice,
            cpu_limit=cpu_limit,
            cpu_guarantee=cpu_guarantee,
            memory_limit=memory_limit,
            memory_guarantee=memory_guarantee,
            gpu=gpu,
            home=self.home(profile),
            mounts=self.mounts(profile),
            env=tuple(sorted(profile.env.items())),
            default_url=profile.default_url,
            node_selector=tuple(sorted(profile.node_selector.items())),
            tolerations=profile.tolerations,
            pod_security=self.instance.pod_security,
            pod=merge_pod_settings(
                [self.instance.pod, profile.pod]
                + ([self.instance.gpu_types[gpu.id].pod] if gpu is not None else [])
            ),
            shm_size=_shm_size(profile, memory_limit),
        )


def _describe_counts(counts: range) -> list[str]:
    """Allowed GPU counts for a refusal: each of a few, else "2 to 8 in steps of 2"."""
    if len(counts) <= 8:
        return [str(n) for n in counts]
    return [f"{counts[0]} to {counts[-1]} in steps of {counts.step}"]


def _shm_size(profile: Profile, memory_limit: int) -> int | None:
    """The size of ``/dev/shm``: the memory limit chosen, or the profile's size (never more
    than the memory limit: what it holds counts against the limit anyway)."""
    if profile.shm is None:
        return None
    size = profile.shm.size
    return memory_limit if size == "memory" else min(size, memory_limit)


def _source(
    *sources: PvcSource | NfsSource | CsiSource | PvTemplate | None,
) -> PvcSource | NfsSource | CsiSource | PvTemplate:
    return next(s for s in sources if s is not None)


def _refuse_gated_image(
    wanted: str, choices: Sequence[ImageChoice], allowed: Sequence[ImageChoice], names: Sequence[str]
) -> None:
    """Refuse the id or the image of a choice that the user's groups do not grant.

    A custom pattern may match a gated choice's reference too; without this check the user would
    get as a custom image what their groups refuse them as a choice (issue 11). An image that a
    granted choice offers as well is not restricted. An id is never read as a custom reference.
    """
    granted_ids = {c.id for c in allowed}
    open_images = {_canonical_image(c.image) for c in allowed}
    wanted_image = _canonical_image(wanted)
    for choice in choices:
        if choice.id in granted_ids:
            continue
        if choice.id == wanted:
            reason = f"is restricted: choice {choice.id!r} is not open to your groups"
        elif _canonical_image(choice.image) == wanted_image and wanted_image not in open_images:
            reason = f"is restricted: it is the image of choice {choice.id!r}, not open to your groups"
        else:
            continue
        raise OptionsError("image", wanted, names, reason=reason)


def _canonical_image(reference: str) -> str:
    """``reference`` as a container runtime reads it, so that two spellings of one image compare equal.

    The rules of the Docker reference grammar: a first component without ``.`` or ``:`` (and not
    ``localhost``, and in lower case) is a path on Docker Hub (``docker.io``, once
    ``index.docker.io``), whose one-component names live under ``library/``; no tag and no digest
    mean ``:latest``; a digest names the content and the tag beside it is ignored; registry names
    are host names, so their case does not matter. Not recognised: the same content under another
    tag or digest, or the same registry by another address (a port, a mirror). Total: any text gives
    some string.
    """
    name, _, digest = reference.partition("@")
    tag = ""
    if name.rfind(":") > name.rfind("/"):
        name, _, tag = name.rpartition(":")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = first.lower(), rest
    else:
        registry, path = "docker.io", name
    if registry == "index.docker.io":
        registry = "docker.io"
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return f"{registry}/{path}@{digest}" if digest else f"{registry}/{path}:{tag or 'latest'}"


def _is_image_reference(text: str) -> bool:
    return len(text) <= 255 and IMAGE_REFERENCE.fullmatch(text) is not None


def resolve_options(profiles: ProfileSet, user: UserContext, request: object) -> ResolvedOptions:
    """Resolve a request (form fields or REST ``user_options``) for ``user``.

    Missing keys take the profile's defaults; a missing ``profile`` takes the instance's default
    profile (or, when the user's groups do not admit it, the first profile they do admit), whose
    rules apply in full. Raises :class:`OptionsError` for anything not allowed.
    """
    return _Resolver(profiles, user, _checked_request(request)).resolve()
