"""One profile file's text to a validated model, with every problem named by file and key path.

Where it sits in the data flow: :func:`einfra_spawner.profiles.parse_profile_set` hands each
file's text here, then runs the cross-file checks of :mod:`._profile_checks` on what it read.
Pure: text in, a model or :class:`~einfra_spawner.errors.Problem` records out. The YAML is read
by a safe loader that refuses duplicate keys (YAML keeps the last one silently), and pydantic's
errors are rewritten for an operator: the key path, the bad value, and for an unknown key the
keys allowed there.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import Problem, describe_value

__all__ = ["parse_yaml", "validate_model"]


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


#: What :func:`parse_yaml` returns for a file that is not valid YAML (its problem recorded).
_UNREADABLE = object()


def parse_yaml(name: str, text: str, problems: list[Problem]) -> Any:
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


def validate_model(name: str, model: type[BaseModel], data: Any, problems: list[Problem]) -> Any:
    """``data`` (what :func:`parse_yaml` gave) validated as ``model``, or ``None`` with its
    problems recorded (an unreadable file's problem is recorded already)."""
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
