"""Label and field selectors, parsed once and matched against raw object dicts.

A list or a watch carries ``labelSelector`` (``=``, ``==``, ``!=``, ``in``, ``notin``, exists,
``!key``, ``>``/``<``) and ``fieldSelector`` (``=``, ``==``, ``!=`` on the fields the real
server supports for each resource). A syntax error or an unsupported field is a 400 BadRequest,
as on a real cluster. Parsed selectors are cached: a benchmark issues the same selector
thousands of times.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ._names import label_value_error, qualified_name_error
from ._status import bad_request

JsonDict = dict[str, Any]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_EXISTS = re.compile(rf"^(?P<neg>!)?\s*(?P<key>{_KEY})$")
_EQUALITY = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)$")
_SET = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_NUMERIC = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>[<>])\s*(?P<value>-?[0-9]+)$")


@dataclass(frozen=True, slots=True)
class _Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!", "gt", "lt"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "in":
            return present and labels[self.key] in self.values
        if self.op == "notin":
            # Like the real server: an object without the key matches "!=" and "notin".
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        try:
            actual = int(labels[self.key])
        except ValueError:
            return False
        (bound,) = self.values
        return actual > int(bound) if self.op == "gt" else actual < int(bound)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed ``labelSelector``; the empty selector matches everything."""

    requirements: tuple[_Requirement, ...]

    def matches(self, obj: JsonDict) -> bool:
        if not self.requirements:
            return True
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(requirement.matches(labels) for requirement in self.requirements)


def _split_requirements(text: str) -> list[str]:
    """Split at commas that are not inside an ``in (...)`` value list."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _check_key(key: str, text: str) -> None:
    error = qualified_name_error(key)
    if error is not None:
        raise bad_request(f"unable to parse requirement: {text!r}: invalid label key {key!r}: {error}")


def _check_value(value: str, text: str) -> None:
    error = label_value_error(value)
    if error is not None:
        raise bad_request(f"unable to parse requirement: {text!r}: invalid label value {value!r}: {error}")


def _parse_requirement(text: str) -> _Requirement:
    match = _EXISTS.match(text)
    if match:
        _check_key(match["key"], text)
        return _Requirement(match["key"], "!" if match["neg"] else "exists", frozenset())
    match = _EQUALITY.match(text)
    if match:
        _check_key(match["key"], text)
        _check_value(match["value"], text)
        op = "notin" if match["op"] == "!=" else "in"
        return _Requirement(match["key"], op, frozenset((match["value"],)))
    match = _SET.match(text)
    if match:
        _check_key(match["key"], text)
        values = [value.strip() for value in match["values"].split(",")]
        for value in values:
            _check_value(value, text)
        return _Requirement(match["key"], match["op"], frozenset(values))
    match = _NUMERIC.match(text)
    if match:
        _check_key(match["key"], text)
        op = "gt" if match["op"] == ">" else "lt"
        return _Requirement(match["key"], op, frozenset((match["value"],)))
    raise bad_request(f"unable to parse requirement: found {text!r}, expected a label requirement")


@lru_cache(maxsize=1024)
def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a ``labelSelector`` query parameter (raises 400 ApiError on a syntax error)."""
    if not text or not text.strip():
        return LabelSelector(())
    parts = _split_requirements(text)
    if any(not part for part in parts):
        raise bad_request(f"unable to parse requirement: empty requirement in {text!r}")
    return LabelSelector(tuple(_parse_requirement(part) for part in parts))


# --- field selectors -------------------------------------------------------------------------

_FieldGetter = Callable[[JsonDict], str]


def _path_getter(path: str, default: str = "") -> _FieldGetter:
    keys = path.split(".")

    def get(obj: JsonDict) -> str:
        value: Any = obj
        for key in keys:
            if not isinstance(value, dict):
                return default
            value = value.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return get


_COMMON_FIELDS = ("metadata.name", "metadata.namespace")

# The fields each resource supports in field selectors, as in the real API server.
_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "secrets": ("type",),
    "nodes": ("spec.unschedulable",),
    "namespaces": ("status.phase",),
    "persistentvolumeclaims": (),
    "persistentvolumes": (),
    "configmaps": (),
}

_DEFAULTS = {"spec.unschedulable": "false", "spec.hostNetwork": "false"}


def _getter_for(resource: str, field: str) -> _FieldGetter:
    if field not in _COMMON_FIELDS and field not in _FIELDS.get(resource, ()):
        raise bad_request(f"field label not supported: {field}")
    if field == "source":
        return _path_getter("source.component")
    return _path_getter(field, _DEFAULTS.get(field, ""))


@dataclass(frozen=True, slots=True)
class _FieldRequirement:
    get: _FieldGetter
    value: str
    equal: bool


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """A parsed ``fieldSelector``; the empty selector matches everything."""

    requirements: tuple[_FieldRequirement, ...]

    def matches(self, obj: JsonDict) -> bool:
        return all((req.get(obj) == req.value) == req.equal for req in self.requirements)


_FIELD_TERM = re.compile(r"^(?P<field>[A-Za-z.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$")


@lru_cache(maxsize=1024)
def parse_field_selector(resource: str, text: str | None) -> FieldSelector:
    """Parse a ``fieldSelector`` for one resource (400 ApiError on unsupported fields)."""
    if not text or not text.strip():
        return FieldSelector(())
    requirements = []
    for term in text.split(","):
        match = _FIELD_TERM.match(term.strip())
        if match is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        requirements.append(
            _FieldRequirement(
                _getter_for(resource, match["field"]),
                match["value"].strip(),
                match["op"] != "!=",
            )
        )
    return FieldSelector(tuple(requirements))
