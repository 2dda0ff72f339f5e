"""What a PATCH or a PUT asks for: the new object, before the fake API server stores it.

Functions of the stored object and the request that never touch the store: JSON patches and
merge patches (:mod:`._patches`), a replacement body, the resourceVersion a client may send as
a precondition (409 Conflict when it is stale), and the rules of an update on a real server:
server-set metadata and the status (written only through the status subresource) are kept from
the stored object, and the spec of a pod or a PVC may not change here.
:class:`._resources.ResourceApi` validates and stores the result.
"""

from __future__ import annotations

import json
from typing import Any

from ._defaults import copy_json, default_secret
from ._kinds import ResourceInfo
from ._patches import apply_json_patch, apply_merge_patch
from ._status import ApiError, bad_request, conflict, invalid

JsonDict = dict[str, Any]

# Kinds whose spec a PATCH or PUT may not change here (the real server allows a few spec
# fields of a pod, such as an image; a spawner never needs that).
_SPEC_IMMUTABLE = ("Pod", "PersistentVolumeClaim")
# Metadata only the server writes: an update keeps the stored object's values.
_KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "resourceVersion",
)
_MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


def patched(info: ResourceInfo, old: JsonDict, body: bytes, content_type: str) -> JsonDict:
    """The object a PATCH of ``old`` with ``body`` (of media type ``content_type``) asks for."""
    name = old["metadata"]["name"]
    try:
        patch = json.loads(body or b"null")
    except ValueError as error:
        raise bad_request(f"invalid JSON in the patch: {error}") from error
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json-patch+json":
        return apply_json_patch(copy_json(old), patch)
    if kind in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        # Strategic merge behaves like a JSON merge patch for the maps (labels,
        # annotations) a spawner patches; list merge keys are not emulated.
        if not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != old["metadata"]["resourceVersion"]:
            raise conflict(info.name, name, _MODIFIED)
        merged: JsonDict = apply_merge_patch(copy_json(old), patch)
        return merged
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media "
        f"types include: application/json-patch+json, "
        f"application/merge-patch+json, "
        f"application/strategic-merge-patch+json; got {content_type!r}",
    )


def replacement(info: ResourceInfo, old: JsonDict, name: str, body: object) -> JsonDict:
    """The object a PUT of ``body`` to ``name`` (stored as ``old``) asks for."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        raise bad_request("the body of the request was in an unknown format")
    if body["metadata"].get("name") != name:
        raise bad_request("the name of the object does not match the name on the URL")
    wanted_rv = body["metadata"].get("resourceVersion")
    if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
        raise conflict(info.name, name, _MODIFIED)
    body.setdefault("apiVersion", "v1")
    body.setdefault("kind", info.kind)
    if info.kind == "Secret":
        default_secret(body)
    return body


def apply_update_rules(info: ResourceInfo, old: JsonDict, new: JsonDict) -> None:
    """Keep in ``new`` what only the server writes (taken from ``old``); refuse a changed spec
    of a kind whose spec is immutable here."""
    metadata = new.get("metadata")
    if not isinstance(metadata, dict):
        raise bad_request("metadata must be an object")
    for key in _KEPT_METADATA:
        if key in old["metadata"]:
            metadata[key] = old["metadata"][key]
        else:
            metadata.pop(key, None)
    if "status" in old:
        new["status"] = old["status"]  # status is only written through the status subresource
    else:
        new.pop("status", None)
    if info.kind in _SPEC_IMMUTABLE and new.get("spec") != old.get("spec"):
        raise invalid(
            info.kind,
            metadata["name"],
            [
                {
                    "reason": "FieldValueForbidden",
                    "field": "spec",
                    "message": "Forbidden: the fake API server only allows changes to metadata of "
                    f"{info.name} (labels, annotations, finalizers)",
                }
            ],
        )
