"""The OpenAPI schema check: a stored object against the real Kubernetes schema of its kind.

kubernetes-validate ships the OpenAPI schemas of Kubernetes releases as JSON Schema; the strict
variant is used, in which an unknown field is an error. Each schema error becomes a Status
cause worded like the server's (:mod:`._causes`); :mod:`._validate` adds these causes to those
of the harness's own checks (:mod:`._checks`).

kubernetes-validate reloads the schema on every call (5-8 ms per pod); here the compiled
validator is cached per (version, kind), which brings a pod down to a fraction of a
millisecond. kubernetes-validate is imported lazily, so the harness imports without it when
validation is switched off.
"""

from __future__ import annotations

import json
import re
import sys
from functools import lru_cache
from importlib import resources as importlib_resources
from typing import TYPE_CHECKING, Any

from ._causes import Cause, JsonDict, cause, invalid_value, quoted, required

if TYPE_CHECKING:  # pragma: no cover
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable


def _schema_root() -> Traversable:
    # Python 3.10's Traversable.joinpath takes a single name, hence one call per level.
    return importlib_resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")


def _schema_directory(version: str) -> str:
    """The newest strict schema directory kubernetes-validate ships that is <= ``version``."""
    base = _schema_root()
    wanted = tuple(int(part) for part in version.lstrip("v").split(".")[:2])
    available: list[tuple[tuple[int, int], str]] = []
    for entry in base.iterdir():
        match = re.match(r"^v(\d+)\.(\d+)\.\d+-local-strict$", entry.name)
        if match:
            available.append(((int(match[1]), int(match[2])), entry.name))
    candidates = sorted(item for item in available if item[0] <= wanted)
    if not candidates:
        raise ValueError(f"kubernetes-validate ships no schema for Kubernetes {version}")
    return candidates[-1][1]


@lru_cache(maxsize=32)
def _schema_validator(version: str, kind: str) -> Any:
    """A compiled Draft 2020-12 validator for one kind, built once per process."""
    import jsonschema  # type: ignore[import-untyped]  # jsonschema ships no type hints
    from referencing import Registry, Resource

    directory = _schema_root().joinpath(_schema_directory(version))
    schema = json.loads(directory.joinpath(f"{kind.lower()}-v1.json").read_text())
    definitions = _definitions(_schema_directory(version))
    # The kind schemas refer to "/api/_definitions.json"; both documents carry their own ids.
    registry: Any = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


@lru_cache(maxsize=4)
def _definitions(directory_name: str) -> Any:
    """The shared definitions (about 4 MB of JSON), loaded once per schema version."""
    path = _schema_root().joinpath(directory_name).joinpath("_definitions.json")
    return json.loads(path.read_text())


def _schema_path(path: Any) -> str:
    field = ""
    for element in path:
        if isinstance(element, int):
            field += f"[{element}]"
        else:
            field += ("." if field else "") + str(element)
    return field


def schema_causes(version: str, kind: str, obj: JsonDict) -> list[Cause]:
    """What the OpenAPI schema of ``kind`` finds wrong with ``obj``, one cause per field."""
    validator = _schema_validator(version, kind)
    causes: list[Cause] = []
    for error in validator.iter_errors(obj):
        field = _schema_path(error.absolute_path)
        if error.validator == "additionalProperties":
            for name in re.findall(r"'([^']+)'", error.message.split("(", 1)[-1]):
                full = f"{field}.{name}" if field else name
                causes.append(cause("FieldValueNotSupported", full, f'unknown field "{full}"'))
        elif error.validator == "required":
            names = re.findall(r"^'([^']+)'", error.message)
            full = f"{field}.{names[0]}" if names and field else (names[0] if names else field)
            causes.append(required(full))
        elif error.validator == "enum":
            allowed = ", ".join(quoted(value) for value in error.validator_value if value is not None)
            causes.append(
                cause(
                    "FieldValueNotSupported",
                    field,
                    f"Unsupported value: {quoted(error.instance)}: supported values: {allowed}",
                )
            )
        elif error.validator in ("type", "oneOf", "anyOf"):
            causes.append(
                cause(
                    "FieldValueTypeInvalid",
                    field,
                    f"Invalid value: {quoted(error.instance)}: {error.message}",
                )
            )
        else:
            causes.append(invalid_value(field, error.instance, error.message))
    return causes


def preload_schema(version: str) -> None:
    """Compile the validators up front so the first request does not pay for it."""
    for kind in ("Pod", "PersistentVolumeClaim", "Secret", "ConfigMap", "Event", "Node", "Namespace"):
        _schema_validator(version, kind)
