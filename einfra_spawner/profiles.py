"""Loading instance folders into a validated :class:`ProfileSet`, and checking paths for the CLI.

``load_profiles`` reads a folder's files and hands their text to ``parse_profile_set``, which is
pure: each file is parsed and validated by :mod:`._profile_parse`, then checked across files by
:mod:`._profile_checks`. Every problem is collected, not just the first, and each names the file,
the key path, the bad value and what is allowed, so an operator fixes a broken folder in one pass.
Loading happens once, at hub start; the :class:`ProfileSet` is then shared by every spawn.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ._profile_checks import INSTANCE_FILE, cross_check, listed_profile_files, nfs_problems, profile_warnings
from ._profile_parse import parse_yaml, validate_model
from .errors import Problem, ProfileError
from .models import Instance, Profile
from .render_pod import pod_patch_problems

__all__ = [
    "INSTANCE_FILE",
    "ProfileSet",
    "check_paths",
    "load_profiles",
    "parse_profile_set",
    "validate_paths",
]

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


def parse_profile_set(files: Mapping[str, str], source: str = "") -> ProfileSet:
    """Validate an instance from file texts (``instance.yaml`` and profile files, by file name).

    Pure. Raises :class:`ProfileError` with every problem found.
    """
    problems: list[Problem] = []
    if INSTANCE_FILE not in files:
        raise ProfileError([Problem(source or ".", "", f"there is no {INSTANCE_FILE}")])
    instance_data = parse_yaml(INSTANCE_FILE, files[INSTANCE_FILE], problems)
    instance = validate_model(INSTANCE_FILE, Instance, instance_data, problems)
    names = listed_profile_files(instance_data, files, problems)
    profiles: list[tuple[str, Profile]] = []
    parsed: list[tuple[str, Any]] = []
    for name in names:
        data = parse_yaml(name, files[name], problems)
        profile = validate_model(name, Profile, data, problems)
        if profile is not None:
            profiles.append((name, profile))
        parsed.append((name, data))
    if not names:
        problems.append(Problem(source or ".", "", "the instance has no profile files"))
    # Run even when files have schema errors, on what can be read: every problem in one pass.
    cross_check(instance_data, parsed, problems)
    if problems or instance is None:
        raise ProfileError(problems)
    # Only on valid files: the patches are applied to a pod rendered from the settings.
    problems = nfs_problems(instance, profiles) + pod_patch_problems(instance, profiles)
    if problems:
        raise ProfileError(problems)
    warnings = tuple(w for name, profile in profiles for w in profile_warnings(name, profile))
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
    checked = validate_model(str(path), model, parse_yaml(str(path), text, problems), problems)
    if isinstance(checked, Profile):
        return problems, profile_warnings(str(path), checked)
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
