"""Validation of created and updated objects: the OpenAPI schema plus the checks it misses.

Every object a client writes is checked (:mod:`._resources` calls :class:`ObjectValidator` on
each create, patch and replace; the harness's own writes, such as the kubelet's status updates
and trusted creates, are not): by the harness's own rules (:mod:`._checks`: names, labels,
quantities, limits >= requests, GPUs with requests == limits, volume mounts), then against the
real Kubernetes OpenAPI schema of its kind (:mod:`._schema`, from kubernetes-validate, strict
variant: unknown fields are errors). Failures become one 422 ``Invalid`` Status with a cause per
field (:mod:`._causes`).
"""

from __future__ import annotations

import re

from ._causes import JsonDict
from ._checks import own_causes
from ._kinds import ResourceInfo
from ._schema import preload_schema, schema_causes
from ._status import invalid

DEFAULT_SCHEMA_VERSION = "1.33"
_MAX_CAUSES = 25


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
        causes = own_causes(info, obj)
        if self.schema_version is not None:
            # Our message for a field wins over the schema's generic one for the same field.
            own_fields = {_map_keys_as_dots(cause["field"]) for cause in causes}
            for cause in schema_causes(self.schema_version, info.kind, obj):
                field = cause["field"]
                if field not in own_fields and not any(field.startswith(own + ".") for own in own_fields):
                    causes.append(cause)
        if causes:
            metadata = obj.get("metadata")
            name = (metadata.get("name") if isinstance(metadata, dict) else None) or ""
            raise invalid(info.kind, str(name), causes[:_MAX_CAUSES])
