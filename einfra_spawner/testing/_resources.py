"""The API semantics of the fake server: create, get, list, delete, patch, replace.

Everything here is synchronous and works on raw dicts: the HTTP layer parses a request,
calls one of these methods and serialises the result once. The fake scheduler, kubelet and
controllers use :meth:`ResourceApi.update` and :meth:`ResourceApi.remove` for their writes.

Deletion follows the real server: an object with finalizers only gets a
``deletionTimestamp`` (MODIFIED) until the last finalizer is removed; a scheduled pod is
deleted gracefully (``deletionTimestamp`` plus ``deletionGracePeriodSeconds``) and removed by
the fake kubelet once its containers have stopped; an unscheduled or finished pod, or a grace
period of 0, is removed at once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from ._defaults import (
    PVC_PROTECTION,
    copy_json,
    default_namespace,
    default_pod,
    default_pvc,
    default_secret,
    initial_status,
    name_suffix,
    new_uid,
    now,
    timestamp_in,
)
from ._kinds import RESOURCES, ResourceInfo
from ._patches import apply_json_patch, apply_merge_patch
from ._selectors import FieldSelector, LabelSelector
from ._status import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
    resource_not_found,
    success_status,
)
from ._store import Store
from ._validate import ObjectValidator

JsonDict = dict[str, Any]
PodDeletionHook = Callable[[JsonDict], None]

_SERVER_SET_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
    "generation",
)
_DEFAULTERS: dict[str, Callable[[JsonDict], None]] = {
    "Pod": default_pod,
    "PersistentVolumeClaim": default_pvc,
    "Secret": default_secret,
    "Namespace": default_namespace,
}
_TERMINAL_PHASES = ("Succeeded", "Failed")
# Kinds whose spec a PATCH or PUT may not change here (the real server allows a few spec
# fields of a pod, such as an image; a spawner never needs that).
_SPEC_IMMUTABLE = ("Pod", "PersistentVolumeClaim")


def resource_info(resource: str) -> ResourceInfo:
    info = RESOURCES.get(resource)
    if info is None:
        raise resource_not_found()
    return info


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


class ResourceApi:
    """API operations over a :class:`Store`, with validation when a validator is given."""

    def __init__(self, store: Store, validator: ObjectValidator | None) -> None:
        self.store = store
        self.validator = validator
        # Called when a scheduled pod starts graceful deletion; set by the fake kubelet.
        self.on_pod_deletion: PodDeletionHook | None = None
        # Pods whose containers are stopped but whose finalizers still hold the object.
        self._pods_stopped: set[str] = set()

    # --- helpers -------------------------------------------------------------------------

    def _require_namespace(self, namespace: str, *, for_create: bool) -> None:
        ns = self.store.get("namespaces", "", namespace)
        if ns is None:
            raise not_found("namespaces", namespace)
        if for_create and ns["metadata"].get("deletionTimestamp"):
            raise forbidden(
                "namespaces",
                namespace,
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def _get(self, info: ResourceInfo, namespace: str, name: str) -> JsonDict:
        obj = self.store.get(info.name, namespace if info.namespaced else "", name)
        if obj is None:
            raise not_found(info.name, name)
        return obj

    # --- create --------------------------------------------------------------------------

    def create(self, resource: str, namespace: str, body: object, *, trusted: bool = False) -> JsonDict:
        """Create an object; ``trusted`` skips validation for objects the harness makes itself."""
        info = resource_info(resource)
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        if body.get("kind") not in (None, info.kind) or body.get("apiVersion") not in (None, "v1"):
            raise bad_request(
                f'{body.get("kind")} in version "{body.get("apiVersion")}" cannot be handled as a {info.kind}'
            )
        body["apiVersion"] = "v1"
        body["kind"] = info.kind
        metadata = body.get("metadata")
        if metadata is None:
            metadata = body["metadata"] = {}
        if not isinstance(metadata, dict):
            raise bad_request("metadata must be an object")
        ns = ""
        if info.namespaced:
            if metadata.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            metadata["namespace"] = ns = namespace
            self._require_namespace(namespace, for_create=True)
        else:
            metadata.pop("namespace", None)
        for key in _SERVER_SET_METADATA:
            metadata.pop(key, None)
        generate = metadata.get("generateName")
        if not metadata.get("name") and isinstance(generate, str) and generate:
            name = generate + name_suffix()
            while self.store.get(resource, ns, name) is not None:
                name = generate + name_suffix()
            metadata["name"] = name
        if not trusted:
            body.pop("status", None)  # status is written by controllers, never on create
        defaulter = _DEFAULTERS.get(info.kind)
        if defaulter is not None:
            defaulter(body)
        if self.validator is not None and not trusted:
            self.validator.validate(info, body)
        name = metadata["name"]
        if self.store.get(resource, ns, name) is not None:
            raise already_exists(resource, name)
        metadata["uid"] = new_uid()
        metadata["creationTimestamp"] = now()
        if info.kind == "PersistentVolumeClaim":
            finalizers = metadata.setdefault("finalizers", [])
            if PVC_PROTECTION not in finalizers:
                finalizers.append(PVC_PROTECTION)
        status = initial_status(info.kind, body)
        if status is not None and "status" not in body:
            body["status"] = status
        self.store.add(resource, ns, body)
        return body

    # --- reads ---------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> JsonDict:
        return self._get(resource_info(resource), namespace, name)

    def list(
        self,
        resource: str,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> JsonDict:
        """A ``<Kind>List``; with ``limit``, pages continue after the last key returned (the
        pages are not one consistent snapshot, unlike a real server's)."""
        info = resource_info(resource)
        objects = self.store.items(resource, namespace if info.namespaced else None)
        if continue_token:
            after = _decode_continue(continue_token)
            objects = [
                obj
                for obj in objects
                if (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) > after
            ]
        items: list[JsonDict] = []
        metadata: JsonDict = {"resourceVersion": str(self.store.resource_version)}
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

    # --- internal writes (scheduler, kubelet, controllers) --------------------------------

    def update(
        self,
        resource: str,
        namespace: str,
        name: str,
        mutate: Callable[[JsonDict], None],
        *,
        uid: str | None = None,
    ) -> JsonDict | None:
        """Write a changed copy of an object; None if it is gone (or replaced: other uid)."""
        old = self.store.get(resource, namespace, name)
        if old is None or (uid is not None and old["metadata"]["uid"] != uid):
            return None
        new: JsonDict = copy_json(old)
        mutate(new)
        self.store.replace(resource, namespace, new)
        return new

    def remove(self, resource: str, namespace: str, name: str, *, uid: str | None = None) -> bool:
        old = self.store.get(resource, namespace, name)
        if old is None or (uid is not None and old["metadata"]["uid"] != uid):
            return False
        self._pods_stopped.discard(old["metadata"]["uid"])
        self.store.remove(resource, namespace, name)
        return True

    def pod_stopped(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet has stopped a deleted pod's containers: remove it unless finalizers hold it."""
        pod = self.store.get("pods", namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        if pod["metadata"].get("finalizers"):
            self._pods_stopped.add(uid)
        else:
            self.remove("pods", namespace, name, uid=uid)

    def _removable(self, info: ResourceInfo, obj: JsonDict) -> bool:
        """Whether an object being deleted may now go: no finalizers, containers stopped."""
        metadata = obj["metadata"]
        if not metadata.get("deletionTimestamp") or metadata.get("finalizers"):
            return False
        if info.kind == "Pod":
            return (
                metadata["uid"] in self._pods_stopped
                or not obj.get("spec", {}).get("nodeName")
                or obj.get("status", {}).get("phase") in _TERMINAL_PHASES
            )
        return True

    # --- delete --------------------------------------------------------------------------

    def delete(
        self,
        resource: str,
        namespace: str,
        name: str,
        *,
        grace_period: int | None = None,
        preconditions: JsonDict | None = None,
    ) -> JsonDict:
        info = resource_info(resource)
        ns = namespace if info.namespaced else ""
        obj = self._get(info, namespace, name)
        metadata = obj["metadata"]
        if preconditions:
            for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = preconditions.get(key)
                if wanted is not None and wanted != metadata.get(key):
                    raise conflict(
                        resource,
                        name,
                        f"Precondition failed: {label} in precondition: {wanted}, {label} in "
                        f"object meta: {metadata.get(key)}",
                    )
        if grace_period is not None and grace_period < 0:
            grace_period = 0
        if info.kind == "Pod":
            result = self._delete_pod(obj, grace_period)
        elif info.kind == "Namespace":
            result = self._delete_namespace(obj)
        elif metadata.get("finalizers"):
            result = obj
            if not metadata.get("deletionTimestamp"):
                result = self._mark_deleting(info, ns, obj, 0)
        else:
            self.store.remove(resource, ns, name)
            result = obj
        if info.returns_deleted_object:
            return result
        return success_status(info.name, name, metadata["uid"])

    def _mark_deleting(self, info: ResourceInfo, ns: str, obj: JsonDict, grace: int) -> JsonDict:
        def mark(new: JsonDict) -> None:
            new["metadata"]["deletionTimestamp"] = timestamp_in(grace)
            new["metadata"]["deletionGracePeriodSeconds"] = grace

        updated = self.update(info.name, ns, obj["metadata"]["name"], mark)
        assert updated is not None  # the object was read just before
        return updated

    def _delete_pod(self, pod: JsonDict, grace_period: int | None) -> JsonDict:
        metadata = pod["metadata"]
        ns, name = metadata["namespace"], metadata["name"]
        spec, status = pod.get("spec", {}), pod.get("status", {})
        grace = grace_period
        if grace is None:
            grace = int(spec.get("terminationGracePeriodSeconds", 30))
        if not spec.get("nodeName") or status.get("phase") in _TERMINAL_PHASES:
            grace = 0  # nothing runs: a real server deletes such pods at once
        current = metadata.get("deletionGracePeriodSeconds")
        if metadata.get("deletionTimestamp") and current is not None and grace >= current:
            return pod  # already terminating at least as fast
        if grace == 0 and not metadata.get("finalizers"):
            final = self.store.remove("pods", ns, name).obj
            self._pods_stopped.discard(metadata["uid"])
            return final
        updated = self._mark_deleting(RESOURCES["pods"], ns, pod, grace)
        if spec.get("nodeName") and self.on_pod_deletion is not None:
            self.on_pod_deletion(updated)
        elif self._removable(RESOURCES["pods"], updated):
            self.remove("pods", ns, name)
        return updated

    def _delete_namespace(self, namespace: JsonDict) -> JsonDict:
        name = namespace["metadata"]["name"]

        def terminating(new: JsonDict) -> None:
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["status"] = {"phase": "Terminating"}

        updated = self.update("namespaces", "", name, terminating) or namespace
        # The namespace controller: everything in it goes at once, then the namespace.
        for info in RESOURCES.values():
            if info.namespaced:
                for obj in self.store.items(info.name, name):
                    self.store.remove(info.name, name, obj["metadata"]["name"])
        self.store.remove("namespaces", "", name)
        return updated

    # --- patch and replace ---------------------------------------------------------------

    def patch(self, resource: str, namespace: str, name: str, body: bytes, content_type: str) -> JsonDict:
        info = resource_info(resource)
        old = self._get(info, namespace, name)
        try:
            patch = json.loads(body or b"null")
        except ValueError as error:
            raise bad_request(f"invalid JSON in the patch: {error}") from error
        kind = content_type.split(";")[0].strip().lower()
        if kind == "application/json-patch+json":
            new = apply_json_patch(copy_json(old), patch)
        elif kind in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            # Strategic merge behaves like a JSON merge patch for the maps (labels,
            # annotations) a spawner patches; list merge keys are not emulated.
            if not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")
            wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and wanted_rv != old["metadata"]["resourceVersion"]:
                raise conflict(
                    resource,
                    name,
                    "the object has been modified; please apply your "
                    "changes to the latest version and try again",
                )
            new = apply_merge_patch(copy_json(old), patch)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media "
                f"types include: application/json-patch+json, "
                f"application/merge-patch+json, "
                f"application/strategic-merge-patch+json; got {content_type!r}",
            )
        return self._write_update(info, namespace, old, new)

    def replace(self, resource: str, namespace: str, name: str, body: object) -> JsonDict:
        info = resource_info(resource)
        old = self._get(info, namespace, name)
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise bad_request("the body of the request was in an unknown format")
        if body["metadata"].get("name") != name:
            raise bad_request("the name of the object does not match the name on the URL")
        wanted_rv = body["metadata"].get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise conflict(
                resource,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        body.setdefault("apiVersion", "v1")
        body.setdefault("kind", info.kind)
        if info.kind == "Secret":
            default_secret(body)
        return self._write_update(info, namespace, old, body)

    def _write_update(self, info: ResourceInfo, namespace: str, old: JsonDict, new: JsonDict) -> JsonDict:
        ns = namespace if info.namespaced else ""
        metadata = new.get("metadata")
        if not isinstance(metadata, dict):
            raise bad_request("metadata must be an object")
        for key in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ):
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
        if self.validator is not None:
            self.validator.validate(info, new)
        if new == old:
            return old  # a no-op write does not bump the resourceVersion, as on a real server
        self.store.replace(info.name, ns, new)
        if self._removable(info, new):
            self.remove(info.name, ns, metadata["name"])
        return new
