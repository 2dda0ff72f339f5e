"""The API semantics of the fake server: create, get, list, delete, patch, replace.

Everything here is synchronous and works on raw dicts: the HTTP layer (:mod:`._server`) parses a
request, calls one method of :class:`ResourceApi` and serialises the result once. The fake
scheduler, kubelet and controllers use :meth:`ResourceApi.update` and :meth:`ResourceApi.remove`
for their writes. :class:`ResourceApi` is the one entry point; it creates and reads objects
itself and leaves the rest to its helpers: list pages to :mod:`._listing`, what a PATCH or PUT
asks for to :mod:`._updates`, and deletion (grace periods, finalizers, the namespace controller)
to :mod:`._deletion`.
"""

from __future__ import annotations

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
)
from ._deletion import Deletion, PodDeletionHook
from ._kinds import RESOURCES, ResourceInfo
from ._listing import list_objects
from ._selectors import FieldSelector, LabelSelector
from ._status import already_exists, bad_request, forbidden, not_found, resource_not_found, success_status
from ._store import Store
from ._updates import apply_update_rules, patched, replacement
from ._validate import ObjectValidator

JsonDict = dict[str, Any]

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


def resource_info(resource: str) -> ResourceInfo:
    info = RESOURCES.get(resource)
    if info is None:
        raise resource_not_found()
    return info


class ResourceApi:
    """API operations over a :class:`Store`, with validation when a validator is given."""

    def __init__(self, store: Store, validator: ObjectValidator | None) -> None:
        self.store = store
        self.validator = validator
        self._deletion = Deletion(store, self.update)

    @property
    def on_pod_deletion(self) -> PodDeletionHook | None:
        """Called when a scheduled pod starts graceful deletion; set by the fake kubelet."""
        return self._deletion.on_pod_deletion

    @on_pod_deletion.setter
    def on_pod_deletion(self, hook: PodDeletionHook | None) -> None:
        self._deletion.on_pod_deletion = hook

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
        """A ``<Kind>List`` (see :func:`._listing.list_objects`)."""
        return list_objects(
            self.store,
            resource_info(resource),
            namespace,
            labels,
            fields,
            limit=limit,
            continue_token=continue_token,
        )

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
        """Remove an object now; False if it is gone (or replaced: other uid)."""
        return self._deletion.remove(resource, namespace, name, uid=uid)

    def pod_stopped(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet has stopped a deleted pod's containers: remove it unless finalizers hold it."""
        self._deletion.pod_stopped(namespace, name, uid)

    # --- delete, patch and replace ---------------------------------------------------------

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
        obj = self._get(info, namespace, name)
        result = self._deletion.delete(
            info,
            namespace if info.namespaced else "",
            obj,
            grace_period=grace_period,
            preconditions=preconditions,
        )
        if info.returns_deleted_object:
            return result
        return success_status(info.name, name, obj["metadata"]["uid"])

    def patch(self, resource: str, namespace: str, name: str, body: bytes, content_type: str) -> JsonDict:
        info = resource_info(resource)
        old = self._get(info, namespace, name)
        return self._write_update(info, namespace, old, patched(info, old, body, content_type))

    def replace(self, resource: str, namespace: str, name: str, body: object) -> JsonDict:
        info = resource_info(resource)
        old = self._get(info, namespace, name)
        return self._write_update(info, namespace, old, replacement(info, old, name, body))

    def _write_update(self, info: ResourceInfo, namespace: str, old: JsonDict, new: JsonDict) -> JsonDict:
        ns = namespace if info.namespaced else ""
        apply_update_rules(info, old, new)
        if self.validator is not None:
            self.validator.validate(info, new)
        if new == old:
            return old  # a no-op write does not bump the resourceVersion, as on a real server
        self.store.replace(info.name, ns, new)
        if self._deletion.removable(info, new):
            self.remove(info.name, ns, new["metadata"]["name"])
        return new
