"""The harness's own validation rules: what the OpenAPI schema cannot express.

The schema (:mod:`._schema`) checks shapes and types; a real API server checks much more in its
hand-written validation, and a spawner must pass that too. These rules re-implement the part a
spawner's objects meet: DNS-1123 names, label keys and values, resource quantities, limits >=
requests, extended resources (GPUs) with requests == limits, volume mounts that name a volume,
PVC access modes and storage, Secret and ConfigMap keys. They use the harness's own names and
quantities (:mod:`._names`, :mod:`._quantities`), never einfra_spawner's, so that they stay an
independent oracle. :mod:`._validate` calls :func:`own_causes` for every object it validates.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from ._causes import Cause, JsonDict, cause, invalid_value, quoted, required
from ._kinds import ResourceInfo
from ._names import (
    config_key_error,
    dns1123_label_error,
    dns1123_subdomain_error,
    label_value_error,
    qualified_name_error,
)
from ._quantities import QuantityError, format_quantity, parse_quantity

_STANDARD_CONTAINER_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})
_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")


def _dict(value: object) -> JsonDict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def is_extended_resource(name: str) -> bool:
    """GPUs, MIG slices and other device-plugin resources: no overcommit, whole numbers."""
    if "/" not in name or "kubernetes.io/" in name:
        return False
    return not name.startswith("requests.")


def _check_metadata(info: ResourceInfo, metadata: JsonDict, causes: list[Cause]) -> None:
    name = metadata.get("name")
    if not name:
        causes.append(required("metadata.name", "name or generateName is required"))
    elif isinstance(name, str):
        check = dns1123_label_error if info.name_is_label else dns1123_subdomain_error
        error = check(name)
        if error is not None:
            causes.append(invalid_value("metadata.name", name, error))
    for key, value in _dict(metadata.get("labels")).items():
        error = qualified_name_error(key)
        if error is not None:
            causes.append(invalid_value("metadata.labels", key, error))
        if isinstance(value, str):
            error = label_value_error(value)
            if error is not None:
                causes.append(invalid_value(f"metadata.labels[{key}]", value, error))
    annotations = _dict(metadata.get("annotations"))
    for key in annotations:
        error = qualified_name_error(key)
        if error is not None:
            causes.append(invalid_value("metadata.annotations", key, error))
    size = sum(len(str(key)) + len(str(value)) for key, value in annotations.items())
    if size > 256 * 1024:
        causes.append(
            cause("FieldValueTooLong", "metadata.annotations", "Too long: must have at most 262144 bytes")
        )


def _check_quantity(field: str, value: object, causes: list[Cause]) -> Fraction | None:
    try:
        quantity = parse_quantity(value)
    except QuantityError as error:
        causes.append(invalid_value(field, value, str(error)))
        return None
    if quantity < 0:
        causes.append(invalid_value(field, value, "must be greater than or equal to 0"))
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
                    causes.append(invalid_value(field, name, error))
                    continue
            elif name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
                causes.append(
                    invalid_value(field, name, "must be a standard resource type or fully qualified")
                )
                continue
            quantity = _check_quantity(field, value, causes)
            if quantity is None:
                continue
            if is_extended_resource(name) and quantity.denominator != 1:
                causes.append(invalid_value(field, value, "must be an integer"))
                continue
            parsed[section][name] = quantity
    limits = parsed["limits"]
    for name, request in parsed["requests"].items():
        limit = limits.get(name)
        if is_extended_resource(name):
            if name not in _dict(resources.get("limits")):
                causes.append(
                    required(f"{path}.limits", "Limit must be set for non overcommitable resources")
                )
            elif limit is not None and request != limit:
                causes.append(
                    invalid_value(
                        f"{path}.requests",
                        format_quantity(request),
                        f"must be equal to {name} limit of {format_quantity(limit)}",
                    )
                )
        elif limit is not None and request > limit:
            causes.append(
                invalid_value(
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
            causes.append(required(f"{path}.name"))
            continue
        error = dns1123_label_error(name)
        if error is not None:
            causes.append(invalid_value(f"{path}.name", name, error))
        if name in names:
            causes.append(cause("FieldValueDuplicate", f"{path}.name", f"Duplicate value: {quoted(name)}"))
        names.add(name)
        size_limit = _dict(volume.get("emptyDir")).get("sizeLimit")
        if size_limit is not None:
            _check_quantity(f"{path}.emptyDir.sizeLimit", size_limit, causes)
        claim = volume.get("persistentVolumeClaim")
        if claim is not None and not _dict(claim).get("claimName"):
            causes.append(required(f"{path}.persistentVolumeClaim.claimName"))
    return names


def _check_containers(spec: JsonDict, volumes: set[str], causes: list[Cause]) -> None:
    seen: set[str] = set()
    if not _list(spec.get("containers")):
        causes.append(required("spec.containers"))
    for group in ("initContainers", "containers"):
        for index, container in enumerate(_list(spec.get(group))):
            container = _dict(container)
            path = f"spec.{group}[{index}]"
            name = container.get("name")
            if not isinstance(name, str) or not name:
                causes.append(required(f"{path}.name"))
            else:
                error = dns1123_label_error(name)
                if error is not None:
                    causes.append(invalid_value(f"{path}.name", name, error))
                if name in seen:
                    causes.append(
                        cause("FieldValueDuplicate", f"{path}.name", f"Duplicate value: {quoted(name)}")
                    )
                seen.add(name)
            if not container.get("image"):
                causes.append(required(f"{path}.image"))
            _check_resources(f"{path}.resources", _dict(container.get("resources")), causes)
            for mount_index, mount in enumerate(_list(container.get("volumeMounts"))):
                mount = _dict(mount)
                mount_path = f"{path}.volumeMounts[{mount_index}]"
                if mount.get("name") not in volumes:
                    causes.append(
                        cause(
                            "FieldValueNotFound",
                            f"{mount_path}.name",
                            f"Not found: {quoted(mount.get('name'))}",
                        )
                    )
                if not mount.get("mountPath"):
                    causes.append(required(f"{mount_path}.mountPath"))
            for port_index, port in enumerate(_list(container.get("ports"))):
                number = _dict(port).get("containerPort")
                if isinstance(number, int) and not 0 < number < 65536:
                    causes.append(
                        invalid_value(
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
        allowed = ", ".join(quoted(value) for value in _RESTART_POLICIES)
        causes.append(
            cause(
                "FieldValueNotSupported",
                "spec.restartPolicy",
                f"Unsupported value: {quoted(policy)}: supported values: {allowed}",
            )
        )
    for key, value in _dict(spec.get("nodeSelector")).items():
        error = qualified_name_error(key)
        if error is not None:
            causes.append(invalid_value("spec.nodeSelector", key, error))
        if isinstance(value, str) and label_value_error(value) is not None:
            causes.append(invalid_value(f"spec.nodeSelector[{key}]", value, label_value_error(value) or ""))


def _check_pvc(obj: JsonDict, causes: list[Cause]) -> None:
    spec = _dict(obj.get("spec"))
    modes = _list(spec.get("accessModes"))
    if not modes:
        causes.append(required("spec.accessModes", "at least 1 access mode is required"))
    for mode in modes:
        if mode not in _ACCESS_MODES:
            allowed = ", ".join(quoted(value) for value in _ACCESS_MODES)
            causes.append(
                cause(
                    "FieldValueNotSupported",
                    "spec.accessModes",
                    f"Unsupported value: {quoted(mode)}: supported values: {allowed}",
                )
            )
    requests = _dict(_dict(spec.get("resources")).get("requests"))
    if "storage" not in requests:
        causes.append(required("spec.resources[storage]"))
    else:
        storage = _check_quantity("spec.resources[storage]", requests["storage"], causes)
        if storage is not None and storage <= 0:
            causes.append(
                invalid_value("spec.resources[storage]", requests["storage"], "must be greater than zero")
            )


def _check_data(obj: JsonDict, binary_key: str, causes: list[Cause]) -> None:
    for section in (binary_key, "stringData" if binary_key == "data" else "data"):
        for key, value in _dict(obj.get(section)).items():
            error = config_key_error(key)
            if error is not None:
                causes.append(invalid_value(f"{section}[{key}]", key, error))
            if section == binary_key and isinstance(value, str):
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    causes.append(invalid_value(f"{section}[{key}]", "<redacted>", "illegal base64 data"))


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


def own_causes(info: ResourceInfo, obj: JsonDict) -> list[Cause]:
    """What the harness's own rules find wrong with ``obj``, an object of the kind ``info`` names."""
    causes: list[Cause] = []
    _check_metadata(info, _dict(obj.get("metadata")), causes)
    check = _KIND_CHECKS.get(info.kind)
    if check is not None:
        check(obj, causes)
    return causes
