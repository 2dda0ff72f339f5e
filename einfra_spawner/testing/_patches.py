"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902) on raw object dicts."""

from __future__ import annotations

from typing import Any

from ._status import ApiError, bad_request

JsonDict = dict[str, Any]


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """Merge ``patch`` into ``target``: objects merge recursively, null deletes a key."""
    if not isinstance(patch, dict):
        return patch
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ApiError(422, "Invalid", f"the path {path!r} does not exist")
    return node


def apply_json_patch(doc: JsonDict, operations: Any) -> JsonDict:
    """Apply ``add``, ``replace``, ``remove`` and ``test`` operations (what clients use)."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    for operation in operations:
        if not isinstance(operation, dict) or "path" not in operation:
            raise bad_request(f"invalid JSON patch operation {operation!r}")
        op, path = operation.get("op"), str(operation["path"])
        parts = _pointer(path)
        if not parts:
            raise bad_request("a JSON patch may not replace the whole object")
        parent, key = _parent(doc, parts, path), parts[-1]
        if op in ("add", "replace"):
            value = operation.get("value")
            if isinstance(parent, dict):
                if op == "replace" and key not in parent:
                    raise ApiError(422, "Invalid", f"the path {path!r} does not exist")
                parent[key] = value
            elif isinstance(parent, list):
                if key == "-" and op == "add":
                    parent.append(value)
                elif key.isdigit() and int(key) <= len(parent):
                    if op == "add":
                        parent.insert(int(key), value)
                    elif int(key) < len(parent):
                        parent[int(key)] = value
                else:
                    raise ApiError(422, "Invalid", f"the path {path!r} does not exist")
        elif op == "remove":
            if isinstance(parent, dict) and key in parent:
                del parent[key]
            elif isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
                del parent[int(key)]
            else:
                raise ApiError(422, "Invalid", f"the path {path!r} does not exist")
        elif op == "test":
            actual = parent.get(key) if isinstance(parent, dict) else None
            if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
                actual = parent[int(key)]
            if actual != operation.get("value"):
                raise ApiError(422, "Invalid", f"the test of {path!r} failed")
        else:
            raise bad_request(f"unsupported JSON patch operation {op!r}")
    return doc
