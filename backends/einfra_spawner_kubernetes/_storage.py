"""What a pod needs before it is created, and what becomes of it later: the user's namespace,
the server's home volume, and the PersistentVolumes of ``pv`` mounts.

A start creates the namespace (with per-user namespaces) and the home PVC once and remembers it
in the server's state; a ``409 Conflict`` means an earlier start (or hub process) made it, which
is fine when the object carries this server's labels, and a refusal otherwise: nothing is ever
adopted that is not this hub's.

Homes are changed only by the request that asks (see ``ARCHITECTURE.md``). A reset waits until
the server's pod is gone, then either deletes the home PVC (``homes.reset.keep_for: 0``) or
*retires* it: relabels it with the reset time and the time it is kept until, and the server
gets a home of the next generation (a new PVC: a PVC cannot be renamed). Retired homes are
removed once their time is up (:func:`expired_homes`, by the reconciler). Deleting a server
(JupyterHub's ``delete_forever``) removes its per-server volumes, and its homes when the
instance says ``homes.on_delete: delete`` (:func:`remove_server_storage`).

Per-server PersistentVolumes (:class:`~einfra_spawner.render.UserVolume`) are created with
their claim at start: first the secret they need is checked (a missing one fails the start
with what the user must register), then the PV (cluster-wide, named per instance, user, server
and mount, bound to its claim by ``claimRef``), then the claim. A start interrupted between the
two leaves a PV labelled with the server's labels, which the next start completes and
``delete_forever`` removes.

The start path reads only where a create met a conflict (and a reset, a rare path); finding a
server's homes later (its current generation, what a delete removes, old homes whose time is
up) reads the shared PVC watch (an :class:`~._informer.Informer` of the PVCs with this
project's label).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from einfra_spawner import BackendError, ServerNames
from einfra_spawner.render import LABEL_SERVER, LABEL_USER, UserVolume
from einfra_spawner.storage import LABEL_HOME_GENERATION, LABEL_KEEP_UNTIL, LABEL_REMOVE, LABEL_RESET_AT

from ._api import KubeApi
from ._api_errors import Conflict, Forbidden, NotFound
from ._informer import Informer
from ._inventory import INSTANCE, MANAGED_BY

__all__ = [
    "COMPONENT",
    "HOME",
    "OLD_HOME",
    "VOLUME",
    "current_generation",
    "ensure_home",
    "ensure_namespace",
    "ensure_user_volume",
    "expired_homes",
    "remove_server_storage",
    "reset_home",
    "retire_home",
]

COMPONENT = "app.kubernetes.io/component"
#: The component label of a server's home, of a home kept after a reset, and of a PV mount.
HOME = "singleuser-home"
OLD_HOME = "singleuser-old-home"
VOLUME = "singleuser-volume"
_STAMP = "%Y%m%dT%H%M%SZ"


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime(_STAMP)


def _moment(stamp: str) -> float | None:
    try:
        return datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _is_servers(obj: dict[str, Any], names: ServerNames) -> bool:
    labels = _labels(obj)
    return (
        labels.get(MANAGED_BY[0]) == MANAGED_BY[1]
        and labels.get(LABEL_USER) == names.user_label
        and labels.get(LABEL_SERVER) == names.server_label
    )


async def _read(api: KubeApi, namespace: str, claim: str, deadline: float) -> dict[str, Any] | None:
    """A PVC as the API has it now (not the watch cache, which may lag behind a relabel made a
    moment ago); ``None`` when it does not exist."""
    try:
        return await api.get("persistentvolumeclaims", namespace, claim, deadline=deadline)
    except NotFound:
        return None


async def ensure_namespace(api: KubeApi, namespace: str, deadline: float) -> None:
    """Create a user's namespace, labelled as ours; fine if an earlier hub process made it."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}},
    }
    with contextlib.suppress(Conflict):
        await api.create_namespace(body, deadline=deadline)


async def ensure_home(
    api: KubeApi,
    namespace: str,
    home: dict[str, Any],
    names: ServerNames,
    deadline: float,
) -> None:
    """Create the server's home PVC; the home of an earlier start is kept as it is.

    A PVC of that name that is not this server's is refused. One that a reset retired is the
    server's current home again: that reset did not finish (the spawner kept the generation it
    had), so the home stays as it was."""
    try:
        await api.create("persistentvolumeclaims", namespace, home, deadline=deadline)
        return
    except Conflict:
        pass
    claim = home["metadata"]["name"]
    existing = await _read(api, namespace, claim, deadline)
    if existing is None:  # deleted in the meantime: the next start makes it
        raise BackendError("Your home volume is being removed; please try again in a minute.")
    if not _is_servers(existing, names):
        raise BackendError(
            f"Your home cannot be prepared: a volume named {claim!r} exists and is not this server's. "
            "Nothing was changed; please contact the operators."
        )
    if _labels(existing).get(COMPONENT) == OLD_HOME:
        await _relabel(api, namespace, claim, home["metadata"]["labels"], deadline)


async def _relabel(
    api: KubeApi, namespace: str, claim: str, labels: dict[str, str], deadline: float
) -> dict[str, Any]:
    """Give a PVC exactly ``labels`` (read, then a write that a newer version refuses)."""
    for _ in range(5):
        current = await api.get("persistentvolumeclaims", namespace, claim, deadline=deadline)
        body = copy.deepcopy(current)
        body["metadata"]["labels"] = dict(labels)
        try:
            return await api.replace("persistentvolumeclaims", namespace, body, deadline=deadline)
        except Conflict:
            continue  # changed between the read and the write (e.g. bound): read again
    raise BackendError("Your home volume keeps changing; please try again in a minute.")


async def retire_home(
    api: KubeApi,
    namespace: str,
    claim: str,
    names: ServerNames,
    *,
    now: float,
    keep_for: float,
    deadline: float,
) -> None:
    """Keep a home a reset replaces for ``keep_for`` seconds: relabel it with the reset time
    and the time it is kept until (its user and server labels stay). Fine if it is gone or
    retired already; a PVC of that name that is not this server's is refused."""
    existing = await _read(api, namespace, claim, deadline)
    if existing is None:
        return
    if not _is_servers(existing, names):
        raise BackendError(
            f"Your home cannot be reset: the volume {claim!r} is not labelled as this server's home. "
            "Nothing was changed; please contact the operators."
        )
    labels = _labels(existing)
    if labels.get(COMPONENT) == OLD_HOME:
        return
    labels[COMPONENT] = OLD_HOME
    labels[LABEL_RESET_AT] = _stamp(now)
    labels[LABEL_KEEP_UNTIL] = _stamp(now + keep_for)
    await _relabel(api, namespace, claim, labels, deadline)


async def reset_home(
    api: KubeApi,
    namespace: str,
    home: dict[str, Any],
    names: ServerNames,
    deadline: float,
    release_timeout: float,
) -> None:
    """Delete this server's home PVC (only one whose labels name this user and server) and
    wait up to ``release_timeout`` seconds until it is gone."""
    claim = home["metadata"]["name"]
    try:
        existing = await api.get("persistentvolumeclaims", namespace, claim, deadline=deadline)
    except NotFound:
        return
    labels = (existing.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_USER) != names.user_label or labels.get(LABEL_SERVER) != names.server_label:
        raise BackendError(
            f"Your home cannot be reset: the volume {claim!r} is not labelled as this server's home. "
            "Nothing was deleted; please contact the operators."
        )
    with contextlib.suppress(NotFound):
        await api.delete("persistentvolumeclaims", namespace, claim, deadline=deadline)
    # The claim lingers until its volume is released; a rare path, so a bounded re-read is fine.
    released = time.monotonic() + release_timeout
    delay = 0.05
    while time.monotonic() < released:
        try:
            await api.get("persistentvolumeclaims", namespace, claim, deadline=deadline)
        except NotFound:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise BackendError("Your old home is still being released; please try again in a minute.")


def _same_volume(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a PV found under our name is the one we would make: our labels, the same
    driver, handle and attributes, and a claim reference to our claim."""
    if _labels(existing) != wanted["metadata"]["labels"]:
        return False
    have, want = existing.get("spec") or {}, wanted["spec"]
    have_ref, want_ref = have.get("claimRef") or {}, want["claimRef"]
    return (
        have.get("csi", {}).get("driver") == want["csi"]["driver"]
        and have.get("csi", {}).get("volumeHandle") == want["csi"]["volumeHandle"]
        and have.get("csi", {}).get("volumeAttributes", {}) == want["csi"].get("volumeAttributes", {})
        and (have_ref.get("namespace"), have_ref.get("name")) == (want_ref["namespace"], want_ref["name"])
    )


async def ensure_user_volume(api: KubeApi, namespace: str, volume: UserVolume, deadline: float) -> None:
    """Check the volume's secret, then create its PV and its claim (each fine if an earlier
    start made it, the same and labelled as ours; refused otherwise)."""
    if volume.secret is not None:
        try:
            await api.get("secrets", namespace, volume.secret, deadline=deadline)
        except NotFound:
            raise BackendError(
                volume.register_first
                or f"The credentials for your storage {volume.mount!r} are missing (secret "
                f"{volume.secret!r}); register them, or start without that storage."
            ) from None
        except Forbidden:
            # The hub may not read secrets here (deploy/rbac-persistent-volumes.yaml grants
            # it): the driver reports a missing secret when it mounts, later and less plainly.
            pass
    name = volume.pv["metadata"]["name"]
    try:
        await api.create("persistentvolumes", None, volume.pv, deadline=deadline)
    except Conflict:
        existing = await api.get("persistentvolumes", None, name, deadline=deadline)
        if not _same_volume(existing, volume.pv):
            raise BackendError(
                f"The storage {volume.mount!r} cannot be prepared: a PersistentVolume named {name!r} "
                "exists and is not this server's (or differs from what this hub would make). "
                "Nothing was changed; please contact the operators."
            ) from None
    try:
        await api.create("persistentvolumeclaims", namespace, volume.claim, deadline=deadline)
    except Conflict:
        claim = await _read(api, namespace, volume.claim["metadata"]["name"], deadline)
        if claim is None or _labels(claim) != volume.claim["metadata"]["labels"]:
            raise BackendError(
                f"The storage {volume.mount!r} cannot be prepared: a volume claim named {name!r} "
                "exists and is not this server's. Nothing was changed; please contact the operators."
            ) from None


def _of_server(pvcs: Iterable[dict[str, Any]], instance: str, names: ServerNames) -> list[dict[str, Any]]:
    return [
        pvc
        for pvc in pvcs
        if _is_servers(pvc, names)
        and _labels(pvc).get(INSTANCE) == instance
        and not (pvc.get("metadata") or {}).get("deletionTimestamp")
    ]


def current_generation(pvcs: Iterable[dict[str, Any]], instance: str, names: ServerNames) -> int | None:
    """The generation of the server's current home among ``pvcs`` (the watch cache); ``None``
    when it has none (a new server, or one whose homes were deleted)."""
    generations = [
        int(generation)
        for pvc in _of_server(pvcs, instance, names)
        if _labels(pvc).get(COMPONENT) == HOME
        and (generation := _labels(pvc).get(LABEL_HOME_GENERATION, "0")).isdigit()
    ]
    return max(generations) if generations else None


async def remove_server_storage(
    api: KubeApi, pvcs: Informer, instance: str, names: ServerNames, *, homes: bool, deadline: float
) -> list[str]:
    """Remove what a deleted server leaves: the PVs and claims of its ``pv`` mounts whose
    policy is ``with_server``, and, when ``homes``, its home and the homes kept after its
    resets. Claims are found in the PVC watch; PVs by one label-selected list (a PV whose
    claim was never made, by a start interrupted between the two, is found too). Returns
    ``namespace/name`` of each claim removed and ``pv/name`` of each PV."""
    removed = []
    for pvc in _of_server(list(pvcs.cache.values()), instance, names):
        metadata = pvc["metadata"]
        labels = _labels(pvc)
        component = labels.get(COMPONENT)
        if component == VOLUME:
            if labels.get(LABEL_REMOVE) == "never":
                continue
        elif component not in (HOME, OLD_HOME) or not homes:
            continue
        with contextlib.suppress(NotFound):
            await api.delete(
                "persistentvolumeclaims", metadata["namespace"], metadata["name"], deadline=deadline
            )
        removed.append(f"{metadata['namespace']}/{metadata['name']}")
    selector = ",".join(
        (
            f"{MANAGED_BY[0]}={MANAGED_BY[1]}",
            f"{INSTANCE}={instance}",
            f"{LABEL_SERVER}={names.server_label}",
            f"{COMPONENT}={VOLUME}",
        )
    )
    listed = await api.list("persistentvolumes", None, label_selector=selector)
    for pv in listed.get("items") or ():
        # The list's selector names the server; its user label is checked as well.
        if not _is_servers(pv, names) or _labels(pv).get(LABEL_REMOVE) == "never":
            continue
        name = pv["metadata"]["name"]
        # Reclaim policy Retain: deleting the PV never deletes data on the storage.
        with contextlib.suppress(NotFound):
            await api.delete("persistentvolumes", None, name, deadline=deadline)
        removed.append(f"pv/{name}")
    return removed


def expired_homes(pvcs: Iterable[dict[str, Any]], instance: str, now: float) -> list[tuple[str, str]]:
    """``(namespace, name)`` of this instance's homes kept after a reset whose time is up."""
    found = []
    for pvc in pvcs:
        labels = _labels(pvc)
        metadata = pvc.get("metadata") or {}
        if (
            labels.get(MANAGED_BY[0]) != MANAGED_BY[1]
            or labels.get(INSTANCE) != instance
            or labels.get(COMPONENT) != OLD_HOME
            or metadata.get("deletionTimestamp")
        ):
            continue
        until = _moment(labels.get(LABEL_KEEP_UNTIL, ""))
        if until is not None and until <= now:
            found.append((str(metadata.get("namespace")), str(metadata.get("name"))))
    return sorted(found)
