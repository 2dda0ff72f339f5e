"""Loading instance folders into a validated :class:`ProfileSet`, and the JSON Schema.

``load_profiles`` is the only function here that reads files; it hands their text to
``parse_profile_set``, which is pure. Every problem is collected, not just the first, and each
names the file, the key path, the bad value and what is allowed, so an operator fixes a broken
folder in one pass. Loading happens once, at hub start.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from ._model_base import ChoiceId, Slug
from .errors import Problem, ProfileError, describe_value
from .models import NO_GPU, Instance, Profile
from .render_pod import pod_patch_problems

__all__ = [
    "INSTANCE_FILE",
    "ProfileSet",
    "check_paths",
    "load_profiles",
    "parse_profile_set",
    "validate_paths",
]

INSTANCE_FILE = "instance.yaml"
_MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class ProfileSet:
    """An instance and its profiles, validated together. Immutable; shared by every spawn."""

    instance: Instance
    profiles: tuple[Profile, ...]
    source: str = ""
    #: What is valid but probably not meant; worth telling the operator, not worth refusing.
    warnings: tuple[Problem, ...] = field(default=(), compare=False)
    _by_slug: Mapping[str, Profile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_slug", types.MappingProxyType({p.slug: p for p in self.profiles}))

    def profile(self, slug: str) -> Profile | None:
        """The profile called ``slug``, or ``None``."""
        return self._by_slug.get(slug)

    @property
    def default_profile(self) -> Profile:
        """The instance's default profile (its ``default_profile``, else the first)."""
        chosen = self.instance.default_profile
        return self._by_slug.get(chosen, self.profiles[0]) if chosen else self.profiles[0]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys instead of keeping the last one silently."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


_UNREADABLE = object()


def _parse_yaml(name: str, text: str, problems: list[Problem]) -> Any:
    """The YAML document, or ``_UNREADABLE`` (with the problem recorded)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problems.append(Problem(name, where, f"not valid YAML: {getattr(exc, 'problem', exc)}"))
        return _UNREADABLE


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (Annotated and Optional removed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class found by following ``loc`` from ``root``, for listing its allowed keys."""
    candidates: list[Any] = [root]
    for part in loc:
        following: list[Any] = []
        for current in candidates:
            if isinstance(current, type) and issubclass(current, BaseModel):
                if isinstance(part, str) and part in current.model_fields:
                    following += _unwrap(current.model_fields[part].annotation)
            elif typing.get_origin(current) is tuple and isinstance(part, int):
                following += _unwrap(typing.get_args(current)[0])
            elif typing.get_origin(current) is dict and isinstance(part, str):
                following += _unwrap(typing.get_args(current)[1])
        candidates = following
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if models else None


def _key_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problems_from(name: str, model: type[BaseModel], error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        value: str | None = describe_value(item.get("input"))
        if item["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = sorted(f.alias or k for k, f in parent.model_fields.items()) if parent else []
            message = "unknown key; allowed keys: " + ", ".join(allowed)
            value = None
        elif item["type"] == "missing":
            value = None
        elif isinstance(item.get("input"), dict) or (
            item["type"] == "value_error" and isinstance(item.get("input"), list)
        ):
            value = None  # a whole mapping, or a list our own check describes, says nothing more
        problems.append(Problem(name, _key_path(loc), message, value))
    return problems


def _validate(name: str, model: type[BaseModel], data: Any, problems: list[Problem]) -> Any:
    if data is _UNREADABLE:
        return None
    if not isinstance(data, dict):
        problems.append(Problem(name, "", "the file must hold a mapping of keys", describe_value(data)))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems_from(name, model, exc))
        return None


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


def _cross_check(instance: _InstanceView, profiles: list[_ProfileView], problems: list[Problem]) -> None:
    """What no single file can check: names across files, GPU types, prices."""
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


def _nfs_problems(instance: Instance, profiles: list[tuple[str, Profile]]) -> list[Problem]:
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


def _profile_warnings(name: str, profile: Profile) -> list[Problem]:
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


def _profile_files(instance: Any, files: Mapping[str, str], problems: list[Problem]) -> list[str]:
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


def parse_profile_set(files: Mapping[str, str], source: str = "") -> ProfileSet:
    """Validate an instance from file texts (``instance.yaml`` and profile files, by file name).

    Pure. Raises :class:`ProfileError` with every problem found.
    """
    problems: list[Problem] = []
    if INSTANCE_FILE not in files:
        raise ProfileError([Problem(source or ".", "", f"there is no {INSTANCE_FILE}")])
    instance_data = _parse_yaml(INSTANCE_FILE, files[INSTANCE_FILE], problems)
    instance = _validate(INSTANCE_FILE, Instance, instance_data, problems)
    names = _profile_files(instance_data, files, problems)
    profiles: list[tuple[str, Profile]] = []
    views: list[_ProfileView] = []
    for name in names:
        data = _parse_yaml(name, files[name], problems)
        profile = _validate(name, Profile, data, problems)
        if profile is not None:
            profiles.append((name, profile))
        views.append(_profile_view(name, data))
    if not names:
        problems.append(Problem(source or ".", "", "the instance has no profile files"))
    # Run even when files have schema errors, on what can be read: every problem in one pass.
    _cross_check(_instance_view(instance_data), views, problems)
    if problems or instance is None:
        raise ProfileError(problems)
    # Only on valid files: the patches are applied to a pod rendered from the settings.
    problems = _nfs_problems(instance, profiles) + pod_patch_problems(instance, profiles)
    if problems:
        raise ProfileError(problems)
    warnings = tuple(w for name, profile in profiles for w in _profile_warnings(name, profile))
    return ProfileSet(
        instance=instance, profiles=tuple(p for _, p in profiles), source=source, warnings=warnings
    )


def _read_folder(folder: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            if path.stat().st_size > _MAX_FILE_BYTES:
                raise ProfileError([Problem(str(path), "", "the file is larger than 1 MB")])
            files[path.name] = path.read_text(encoding="utf-8")
    return files


def load_profiles(folder: str | Path) -> ProfileSet:
    """Read and validate an instance folder. Raises :class:`ProfileError` listing every problem."""
    path = Path(folder)
    if not path.is_dir():
        raise ProfileError([Problem(str(path), "", "not a folder (an instance folder is needed)")])
    try:
        files = _read_folder(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError([Problem(str(path), "", f"cannot be read: {exc}")]) from None

    def located(problem: Problem) -> Problem:
        """The problem with its file as a path, not a bare file name."""
        if problem.file not in files:
            return problem
        return Problem(str(path / problem.file), problem.path, problem.message, problem.value)

    try:
        profiles = parse_profile_set(files, source=str(path))
    except ProfileError as exc:
        raise ProfileError([located(p) for p in exc.problems]) from None
    return dataclasses.replace(profiles, warnings=tuple(located(w) for w in profiles.warnings))


def _check_file(path: Path) -> tuple[list[Problem], list[Problem]]:
    """A lone profile file: checked against the model (and its folder, when that is an instance)."""
    if (path.parent / INSTANCE_FILE).is_file():
        in_folder, warnings = _check_folder(path.parent)
        return in_folder, [w for w in warnings if w.file == str(path)]
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem(str(path), "", f"cannot be read: {exc}")], []
    model: type[BaseModel] = Instance if path.name == INSTANCE_FILE else Profile
    checked = _validate(str(path), model, _parse_yaml(str(path), text, problems), problems)
    if isinstance(checked, Profile):
        return problems, _profile_warnings(str(path), checked)
    return problems, []


def _check_folder(path: Path) -> tuple[list[Problem], list[Problem]]:
    try:
        profiles = load_profiles(path)
    except ProfileError as exc:
        return list(exc.problems), []
    return [], list(profiles.warnings)


def check_paths(paths: Iterable[str | Path]) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) of the given instance folders or profile files.

    Problems make a folder unusable; warnings point at what is valid but probably not meant.
    """
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, warned = _check_folder(path)
        elif path.is_file():
            found, warned = _check_file(path)
        else:
            found, warned = [Problem(str(path), "", "no such file or folder")], []
        problems.extend(found)
        warnings.extend(warned)
    return problems, warnings


def validate_paths(paths: Iterable[str | Path]) -> list[Problem]:
    """Every problem in the given instance folders or profile files (empty when all are valid)."""
    return check_paths(paths)[0]
