"""List responses of the fake API server: selectors, and pages with continue tokens.

:meth:`._resources.ResourceApi.list` answers a LIST request with :func:`list_objects`: the
stored objects of one resource that match the label and field selectors, as a ``<Kind>List``
at the store's current resourceVersion. With ``limit`` the answer is a page whose
``metadata.continue`` token names the last key returned, and the next page starts after it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ._kinds import ResourceInfo
from ._selectors import FieldSelector, LabelSelector
from ._status import bad_request
from ._store import Store

JsonDict = dict[str, Any]


def _encode_continue(namespace: str, name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([namespace, name]).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error) as error:
        raise bad_request(f"invalid continue token: {error}") from error
    return str(namespace), str(name)


def _without_type_meta(obj: JsonDict) -> JsonDict:
    # Items of a real list response carry no apiVersion/kind of their own.
    return {key: value for key, value in obj.items() if key not in ("apiVersion", "kind")}


def list_objects(
    store: Store,
    info: ResourceInfo,
    namespace: str | None,
    labels: LabelSelector,
    fields: FieldSelector,
    *,
    limit: int | None = None,
    continue_token: str | None = None,
) -> JsonDict:
    """A ``<Kind>List``; with ``limit``, pages continue after the last key returned (the
    pages are not one consistent snapshot, unlike a real server's)."""
    objects = store.items(info.name, namespace if info.namespaced else None)
    if continue_token:
        after = _decode_continue(continue_token)
        objects = [
            obj for obj in objects if (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) > after
        ]
    items: list[JsonDict] = []
    metadata: JsonDict = {"resourceVersion": str(store.resource_version)}
    for index, obj in enumerate(objects):
        if labels.matches(obj) and fields.matches(obj):
            if limit is not None and len(items) == limit:
                last = items[-1]["metadata"]
                metadata["continue"] = _encode_continue(last.get("namespace", ""), last["name"])
                metadata["remainingItemCount"] = sum(
                    1 for rest in objects[index:] if labels.matches(rest) and fields.matches(rest)
                )
                break
            items.append(_without_type_meta(obj))
    return {"kind": info.list_kind, "apiVersion": "v1", "metadata": metadata, "items": items}
