"""Validation of created and updated objects: the OpenAPI schema plus the checks it misses.

Every object the fake API server stores is checked against the real Kubernetes OpenAPI schema
shipped by kubernetes-validate (strict variant: unknown fields are errors), and then by our own
rules that the schema cannot express: DNS-1123 names, label keys and values, resource
quantities, limits >= requests, extended resources (GPUs) with requests == limits, volume
mounts that name a volume. Failures become one 422 ``Invalid`` Status with a cause per field.

kubernetes-validate reloads the schema on every call (5-8 ms per pod); here the compiled
validator is cached per (version, kind), which brings a pod down to a fraction of a
millisecond. kubernetes-validate is imported lazily, so the harness imports without it when
validation is switched off.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from importlib import resources as importlib_resources
from typing import TYPE_CHECKING, Any

from ._kinds import ResourceInfo
from ._names import (
    config_key_error,
    dns1123_label_error,
    dns1123_subdomain_error,
    label_value_error,
    qualified_name_error,
)
from ._quantities import QuantityError, format_quantity, parse_quantity
from ._status import invalid

if TYPE_CHECKING:  # pragma: no cover
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

JsonDict = dict[str, Any]
Cause = JsonDict

DEFAULT_SCHEMA_VERSION = "1.33"
_MAX_CAUSES = 25
_STANDARD_CONTAINER_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})
_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")


def _q(value: object) -> str:
    """A value quoted the way the real server's messages quote it."""
    return json.dumps(value, sort_keys=True)


def _cause(reason: str, field: str, message: str) -> Cause:
    return {"reason": reason, "message": message, "field": field}


def _invalid_value(field: str, value: object, why: str) -> Cause:
    return _cause("FieldValueInvalid", field, f"Invalid value: {_q(value)}: {why}")


def _required(field: str, why: str = "") -> Cause:
    return _cause("FieldValueRequired", field, "Required value" + (f": {why}" if why else ""))


def _dict(value: object) -> JsonDict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def is_extended_resource(name: str) -> bool:
    """GPUs, MIG slices and other device-plugin resources: no overcommit, whole numbers."""
    if "/" not in name or "kubernetes.io/" in name:
        return False
    return not name.startswith("requests.")


# --- the OpenAPI schema ----------------------------------------------------------------------


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


def _schema_causes(version: str, kind: str, obj: JsonDict) -> list[Cause]:
    validator = _schema_validator(version, kind)
    causes: list[Cause] = []
    for error in validator.iter_errors(obj):
        field = _schema_path(error.absolute_path)
        if error.validator == "additionalProperties":
            for name in re.findall(r"'([^']+)'", error.message.split("(", 1)[-1]):
                full = f"{field}.{name}" if field else name
                causes.append(_cause("FieldValueNotSupported", full, f'unknown field "{full}"'))
        elif error.validator == "required":
            names = re.findall(r"^'([^']+)'", error.message)
            full = f"{field}.{names[0]}" if names and field else (names[0] if names else field)
            causes.append(_required(full))
        elif error.validator == "enum":
            allowed = ", ".join(_q(value) for value in error.validator_value if value is not None)
            causes.append(
                _cause(
                    "FieldValueNotSupported",
                    field,
                    f"Unsupported value: {_q(error.instance)}: supported values: {allowed}",
                )
            )
        elif error.validator in ("type", "oneOf", "anyOf"):
            causes.append(
                _cause(
                    "FieldValueTypeInvalid", field, f"Invalid value: {_q(error.instance)}: {error.message}"
                )
            )
        else:
            causes.append(_invalid_value(field, error.instance, error.message))
    return causes


def preload_schema(version: str = DEFAULT_SCHEMA_VERSION) -> None:
    """Compile the validators up front so the first request does not pay for it."""
    for kind in ("Pod", "PersistentVolumeClaim", "Secret", "ConfigMap", "Event", "Node", "Namespace"):
        _schema_validator(version, kind)


# --- our own checks --------------------------------------------------------------------------


def _check_metadata(info: ResourceInfo, metadata: JsonDict, causes: list[Cause]) -> None:
    name = metadata.get("name")
    if not name:
        causes.append(_required("metadata.name", "name or generateName is required"))
    elif isinstance(name, str):
        check = dns1123_label_error if info.name_is_label else dns1123_subdomain_error
        error = check(name)
        if error is not None:
            causes.append(_invalid_value("metadata.name", name, error))
    for key, value in _dict(metadata.get("labels")).items():
        error = qualified_name_error(key)
        if error is not None:
            causes.append(_invalid_value("metadata.labels", key, error))
        if isinstance(value, str):
            error = label_value_error(value)
            if error is not None:
                causes.append(_invalid_value(f"metadata.labels[{key}]", value, error))
    annotations = _dict(metadata.get("annotations"))
    for key in annotations:
        error = qualified_name_error(key)
        if error is not None:
            causes.append(_invalid_value("metadata.annotations", key, error))
    size = sum(len(str(key)) + len(str(value)) for key, value in annotations.items())
    if size > 256 * 1024:
        causes.append(
            _cause("FieldValueTooLong", "metadata.annotations", "Too long: must have at most 262144 bytes")
        )


def _check_quantity(field: str, value: object, causes: list[Cause]) -> Fraction | None:
    try:
        quantity = parse_quantity(value)
    except QuantityError as error:
        causes.append(_invalid_value(field, value, str(error)))
        return None
    if quantity < 0:
        causes.append(_invalid_value(field, value, "must be greater than or equal to 0"))
        return None
    return quantity


def _check_resources(path: str, resources: JsonDict, causes: list[Cause]) -> None:
    parsed: dict[str, dict[str, Fraction]] = {"limits": {}, "requests": {}}
    for section in ("limits", "requests"):
        for name, value in _dict(resources.get(section)).items():
            field = f"{path}.{section}[{name}]"
            if "/" in name:
                error = qualified_name_error(name)
                if error is not None:
                    causes.append(_invalid_value(field, name, error))
                    continue
            elif name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
                causes.append(
                    _invalid_value(field, name, "must be a standard resource type or fully qualified")
                )
                continue
            quantity = _check_quantity(field, value, causes)
            if quantity is None:
                continue
            if is_extended_resource(name) and quantity.denominator != 1:
                causes.append(_invalid_value(field, value, "must be an integer"))
                continue
            parsed[section][name] = quantity
    limits = parsed["limits"]
    for name, request in parsed["requests"].items():
        limit = limits.get(name)
        if is_extended_resource(name):
            if name not in _dict(resources.get("limits")):
                causes.append(
                    _required(f"{path}.limits", "Limit must be set for non overcommitable resources")
                )
            elif limit is not None and request != limit:
                causes.append(
                    _invalid_value(
                        f"{path}.requests",
                        format_quantity(request),
                        f"must be equal to {name} limit of {format_quantity(limit)}",
                    )
                )
        elif limit is not None and request > limit:
            causes.append(
                _invalid_value(
                    f"{path}.requests",
                    format_quantity(request),
                    f"must be less than or equal to {name} limit of {format_quantity(limit)}",
                )
            )


def _check_volumes(spec: JsonDict, causes: list[Cause]) -> set[str]:
    names: set[str] = set()
    for index, volume in enumerate(_list(spec.get("volumes"))):
        volume = _dict(volume)
        path = f"spec.volumes[{index}]"
        name = volume.get("name")
        if not isinstance(name, str) or not name:
            causes.append(_required(f"{path}.name"))
            continue
        error = dns1123_label_error(name)
        if error is not None:
            causes.append(_invalid_value(f"{path}.name", name, error))
        if name in names:
            causes.append(_cause("FieldValueDuplicate", f"{path}.name", f"Duplicate value: {_q(name)}"))
        names.add(name)
        size_limit = _dict(volume.get("emptyDir")).get("sizeLimit")
        if size_limit is not None:
            _check_quantity(f"{path}.emptyDir.sizeLimit", size_limit, causes)
        claim = volume.get("persistentVolumeClaim")
        if claim is not None and not _dict(claim).get("claimName"):
            causes.append(_required(f"{path}.persistentVolumeClaim.claimName"))
    return names


def _check_containers(spec: JsonDict, volumes: set[str], causes: list[Cause]) -> None:
    seen: set[str] = set()
    if not _list(spec.get("containers")):
        causes.append(_required("spec.containers"))
    for group in ("initContainers", "containers"):
        for index, container in enumerate(_list(spec.get(group))):
            container = _dict(container)
            path = f"spec.{group}[{index}]"
            name = container.get("name")
            if not isinstance(name, str) or not name:
                causes.append(_required(f"{path}.name"))
            else:
                error = dns1123_label_error(name)
                if error is not None:
                    causes.append(_invalid_value(f"{path}.name", name, error))
                if name in seen:
                    causes.append(
                        _cause("FieldValueDuplicate", f"{path}.name", f"Duplicate value: {_q(name)}")
                    )
                seen.add(name)
            if not container.get("image"):
                causes.append(_required(f"{path}.image"))
            _check_resources(f"{path}.resources", _dict(container.get("resources")), causes)
            for mount_index, mount in enumerate(_list(container.get("volumeMounts"))):
                mount = _dict(mount)
                mount_path = f"{path}.volumeMounts[{mount_index}]"
                if mount.get("name") not in volumes:
                    causes.append(
                        _cause(
                            "FieldValueNotFound", f"{mount_path}.name", f"Not found: {_q(mount.get('name'))}"
                        )
                    )
                if not mount.get("mountPath"):
                    causes.append(_required(f"{mount_path}.mountPath"))
            for port_index, port in enumerate(_list(container.get("ports"))):
                number = _dict(port).get("containerPort")
                if isinstance(number, int) and not 0 < number < 65536:
                    causes.append(
                        _invalid_value(
                            f"{path}.ports[{port_index}].containerPort",
                            number,
                            "must be between 1 and 65535, inclusive",
                        )
                    )


def _check_pod(obj: JsonDict, causes: list[Cause]) -> None:
    spec = _dict(obj.get("spec"))
    volumes = _check_volumes(spec, causes)
    _check_containers(spec, volumes, causes)
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in _RESTART_POLICIES:
        allowed = ", ".join(_q(value) for value in _RESTART_POLICIES)
        causes.append(
            _cause(
                "FieldValueNotSupported",
                "spec.restartPolicy",
                f"Unsupported value: {_q(policy)}: supported values: {allowed}",
            )
        )
    for key, value in _dict(spec.get("nodeSelector")).items():
        error = qualified_name_error(key)
        if error is not None:
            causes.append(_invalid_value("spec.nodeSelector", key, error))
        if isinstance(value, str) and label_value_error(value) is not None:
            causes.append(_invalid_value(f"spec.nodeSelector[{key}]", value, label_value_error(value) or ""))


def _check_pvc(obj: JsonDict, causes: list[Cause]) -> None:
    spec = _dict(obj.get("spec"))
    modes = _list(spec.get("accessModes"))
    if not modes:
        causes.append(_required("spec.accessModes", "at least 1 access mode is required"))
    for mode in modes:
        if mode not in _ACCESS_MODES:
            allowed = ", ".join(_q(value) for value in _ACCESS_MODES)
            causes.append(
                _cause(
                    "FieldValueNotSupported",
                    "spec.accessModes",
                    f"Unsupported value: {_q(mode)}: supported values: {allowed}",
                )
            )
    requests = _dict(_dict(spec.get("resources")).get("requests"))
    if "storage" not in requests:
        causes.append(_required("spec.resources[storage]"))
    else:
        storage = _check_quantity("spec.resources[storage]", requests["storage"], causes)
        if storage is not None and storage <= 0:
            causes.append(
                _invalid_value("spec.resources[storage]", requests["storage"], "must be greater than zero")
            )


def _check_data(obj: JsonDict, binary_key: str, causes: list[Cause]) -> None:
    for section in (binary_key, "stringData" if binary_key == "data" else "data"):
        for key, value in _dict(obj.get(section)).items():
            error = config_key_error(key)
            if error is not None:
                causes.append(_invalid_value(f"{section}[{key}]", key, error))
            if section == binary_key and isinstance(value, str):
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    causes.append(_invalid_value(f"{section}[{key}]", "<redacted>", "illegal base64 data"))


def _check_secret(obj: JsonDict, causes: list[Cause]) -> None:
    _check_data(obj, "data", causes)


def _check_configmap(obj: JsonDict, causes: list[Cause]) -> None:
    _check_data(obj, "binaryData", causes)


_KIND_CHECKS: dict[str, Callable[[JsonDict, list[Cause]], None]] = {
    "Pod": _check_pod,
    "PersistentVolumeClaim": _check_pvc,
    "Secret": _check_secret,
    "ConfigMap": _check_configmap,
}


def _map_keys_as_dots(field: str) -> str:
    """``requests[cpu]`` (the server's style) as ``requests.cpu`` (the schema paths' style)."""
    return re.sub(r"\[([^\]0-9][^\]]*)\]", r".\1", field)


class ObjectValidator:
    """Validates objects of the served kinds; raises a 422 ``ApiError`` when one is invalid.

    ``schema_version`` selects the OpenAPI schema (e.g. ``"1.33"``); None skips the schema and
    keeps only the harness's own checks (names, quantities, resources).
    """

    def __init__(self, *, schema_version: str | None = DEFAULT_SCHEMA_VERSION) -> None:
        self.schema_version = schema_version
        if schema_version is not None:
            try:
                preload_schema(schema_version)
            except ModuleNotFoundError as error:
                raise RuntimeError(
                    "schema validation needs kubernetes-validate: install einfra-spawner[test], "
                    "or pass validate=False to the fake API server"
                ) from error

    def validate(self, info: ResourceInfo, obj: JsonDict) -> None:
        causes: list[Cause] = []
        _check_metadata(info, _dict(obj.get("metadata")), causes)
        check = _KIND_CHECKS.get(info.kind)
        if check is not None:
            check(obj, causes)
        if self.schema_version is not None:
            # Our message for a field wins over the schema's generic one for the same field.
            own_fields = {_map_keys_as_dots(cause["field"]) for cause in causes}
            for cause in _schema_causes(self.schema_version, info.kind, obj):
                field = cause["field"]
                if field not in own_fields and not any(field.startswith(own + ".") for own in own_fields):
                    causes.append(cause)
        if causes:
            name = _dict(obj.get("metadata")).get("name") or ""
            raise invalid(info.kind, str(name), causes[:_MAX_CAUSES])
