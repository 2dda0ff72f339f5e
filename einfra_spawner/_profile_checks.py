"""The checks no single profile file can make: across an instance's files, and on the whole.

Where it sits in the data flow: :func:`einfra_spawner.profiles.parse_profile_set` reads each file
with :mod:`._profile_parse`, then asks here which files make up the instance
(:func:`listed_profile_files`), what is wrong across them (:func:`cross_check`: slugs unique, GPU
choices of known and priced types, the default profile present), what the instance's Pod Security
level forbids (:func:`nfs_problems`) and what is valid but probably not meant
(:func:`profile_warnings`). Pure: parsed data and models in, :class:`~einfra_spawner.errors.Problem`
records out.

The cross-file checks read the raw data, not the models, so that they run even when a file has
schema errors: an operator fixes a broken folder in one pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ._model_base import ChoiceId, Slug
from .errors import Problem
from .models import NO_GPU, Instance, Profile

__all__ = ["INSTANCE_FILE", "cross_check", "listed_profile_files", "nfs_problems", "profile_warnings"]

INSTANCE_FILE = "instance.yaml"


@dataclass(frozen=True, slots=True)
class _InstanceView:
    """What the cross-file checks need from ``instance.yaml``, read from its raw data, so that they
    run even when the file has schema errors. ``None``: that part cannot be read, and the checks
    that need it are skipped (a check on a guess would report problems that are not there)."""

    gpu_types: frozenset[str] | None = None
    #: The GPU types with a price; ``None`` when there are no prices (nothing to check) or they
    #: cannot be read.
    priced_gpus: frozenset[str] | None = None
    default_profile: str | None = None


@dataclass(frozen=True, slots=True)
class _ProfileView:
    """What the cross-file checks need from one profile file, read as for :class:`_InstanceView`."""

    file: str
    slug: str | None
    #: (index in ``gpu.choices``, id) of each GPU choice whose id can be read.
    gpu_choices: tuple[tuple[int, str], ...] = ()


_SLUG = TypeAdapter(Slug)
_CHOICE_ID = TypeAdapter(ChoiceId)


def _valid(adapter: TypeAdapter[str], value: Any) -> str | None:
    """``value`` when it is valid on its own (its own problems are reported by the schema check)."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _string_keys(value: Any) -> frozenset[str] | None:
    return frozenset(k for k in value if isinstance(k, str)) if isinstance(value, dict) else None


def _instance_view(data: Any) -> _InstanceView:
    if not isinstance(data, dict):
        return _InstanceView()
    prices = data.get("prices")
    priced = _string_keys(prices.get("gpu_hour", {})) if isinstance(prices, dict) else None
    return _InstanceView(
        gpu_types=_string_keys(data.get("gpu_types", {})),
        priced_gpus=priced,
        default_profile=_valid(_SLUG, data.get("default_profile")),
    )


def _profile_view(name: str, data: Any) -> _ProfileView:
    if not isinstance(data, dict):
        return _ProfileView(name, None)
    # The short forms of GpuOption and GpuChoice: a scalar, a list of choices, a mapping.
    gpu = data.get("gpu")
    choices = gpu.get("choices") if isinstance(gpu, dict) else [gpu] if isinstance(gpu, str) else gpu
    found = []
    for index, choice in enumerate(choices if isinstance(choices, list) else []):
        raw_id = choice.get("id") if isinstance(choice, dict) else choice
        choice_id = _valid(_CHOICE_ID, raw_id)
        if choice_id is not None:
            found.append((index, choice_id))
    return _ProfileView(name, _valid(_SLUG, data.get("slug")), tuple(found))


def cross_check(instance_data: Any, profile_data: list[tuple[str, Any]], problems: list[Problem]) -> None:
    """What no single file can check: names across files, GPU types, prices. Reads the parsed
    YAML of ``instance.yaml`` and of each profile file (by file name), whatever its schema errors."""
    instance = _instance_view(instance_data)
    profiles = [_profile_view(name, data) for name, data in profile_data]
    seen: dict[str, str] = {}
    for profile in profiles:
        name = profile.file
        if profile.slug is not None:
            if profile.slug in seen:
                problems.append(
                    Problem(name, "slug", f"slug is used by {seen[profile.slug]} too", repr(profile.slug))
                )
            seen.setdefault(profile.slug, name)
        for index, choice_id in profile.gpu_choices:
            if choice_id == NO_GPU or instance.gpu_types is None:
                continue
            if choice_id not in instance.gpu_types:
                known = ", ".join([NO_GPU, *sorted(instance.gpu_types)])
                problems.append(
                    Problem(
                        name,
                        f"gpu.choices[{index}].id",
                        f"not a GPU type of this instance; allowed: {known}",
                        repr(choice_id),
                    )
                )
            elif instance.priced_gpus is not None and choice_id not in instance.priced_gpus:
                problems.append(
                    Problem(
                        INSTANCE_FILE,
                        "prices.gpu_hour",
                        f"no price for GPU type {choice_id!r}, which {name} offers",
                    )
                )
    # A profile whose slug cannot be read may be the default one: then nothing can be said.
    all_known = all(p.slug is not None for p in profiles)
    if instance.default_profile is not None and instance.default_profile not in seen and all_known:
        problems.append(
            Problem(
                INSTANCE_FILE,
                "default_profile",
                "not the slug of a profile; allowed: " + ", ".join(sorted(seen)),
                repr(instance.default_profile),
            )
        )


def nfs_problems(instance: Instance, profiles: list[tuple[str, Profile]]) -> list[Problem]:
    """An inline NFS volume breaks the restricted Pod Security Standard (it allows only claims,
    CSI, emptyDir, projected, config map, secret and downward API volumes): a namespace that
    enforces it would refuse every pod with the mount, so the file is refused at load instead."""
    if instance.pod_security.level != "restricted":
        return []
    return [
        Problem(
            name,
            f"mounts.{index}.nfs",
            "an inline NFS volume is not allowed under the restricted Pod Security Standard: mount "
            "a PersistentVolumeClaim bound to the NFS export instead (`pvc:` with `sub_path`, or a "
            "`pv:` template), or set `pod_security: baseline` in instance.yaml on purpose",
        )
        for name, profile in profiles
        for index, mount in enumerate(profile.mounts)
        if mount.nfs is not None
    ]


def profile_warnings(name: str, profile: Profile) -> list[Problem]:
    """A custom pattern that matches the image of a choice limited to groups.

    The resolver refuses that very reference to users outside the groups, but the pattern most
    likely admits other tags and digests of the same repository too, which it cannot tell apart.
    """
    custom = profile.image.custom
    if custom is None:
        return []
    open_to_all = {c.image for c in profile.image.choices if not c.groups}
    warnings: list[Problem] = []
    for choice in profile.image.choices:
        if not choice.groups or choice.image in open_to_all or not custom.matches(choice.image):
            continue
        if custom.groups and set(custom.groups) <= set(choice.groups):
            continue  # whoever may have custom images may have this choice too
        groups = ", ".join(choice.groups)
        warnings.append(
            Problem(
                name,
                "image.custom.pattern",
                f"matches {choice.image!r}, the image of choice {choice.id!r}, open only to groups "
                f"{groups}; that reference is refused to others, but other tags or digests of it are "
                "not: narrow the pattern",
            )
        )
    return warnings


def listed_profile_files(instance: Any, files: Mapping[str, str], problems: list[Problem]) -> list[str]:
    """The profile files of the instance: those its ``profiles`` key lists (each checked to exist),
    else every other file. Read from the raw data, so that a schema error elsewhere in
    ``instance.yaml`` does not change which files are checked."""
    listed = instance.get("profiles") if isinstance(instance, dict) else None
    if not isinstance(listed, list):
        return sorted(n for n in files if n != INSTANCE_FILE)
    names = []
    for index, name in enumerate(listed):
        if not isinstance(name, str):
            continue  # reported by the schema check
        if name in files:
            names.append(name)
        else:
            problems.append(Problem(INSTANCE_FILE, f"profiles[{index}]", "no such file", repr(name)))
    return names
