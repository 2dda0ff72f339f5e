"""Pod status and events, said in words a scientist understands. Pure functions.

The Kubernetes backend feeds every pod update and event of a starting server through here:
events become progress steps, and the states that will not get better by waiting (no free GPU,
an image that cannot be pulled, a container that crashed, a missing secret) become a failure
message, so the spawn fails within seconds instead of at the hub's start timeout.
"""

from __future__ import annotations

import re
from typing import Any

from einfra_spawner.backend import GpuCapacity, ProgressEvent
from einfra_spawner.resolve import ResolvedOptions

__all__ = [
    "exit_status",
    "failure_from_event",
    "failure_from_pod",
    "pod_is_ready",
    "progress_from_event",
    "unschedulable_message",
]

_PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_ASSIGNED = re.compile(r"Successfully assigned \S+ to (\S+)")


def pod_is_ready(pod: dict[str, Any]) -> bool:
    """Running, with an IP, and its containers ready."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if "Ready" in conditions:
        return bool(conditions["Ready"] == "True")
    return all(c.get("ready") for c in status.get("containerStatuses") or [])


def exit_status(pod: dict[str, Any]) -> int | None:
    """``None`` while the pod is not finished; once it is, its container's exit code (else 1
    for a failed pod, 0 for one that succeeded)."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase not in ("Succeeded", "Failed"):
        return None
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return int(terminated.get("exitCode") or 0) or (1 if phase == "Failed" else 0)
    return 1 if phase == "Failed" else 0


def progress_from_event(event: dict[str, Any]) -> ProgressEvent | None:
    """A progress step for a pod event, or ``None`` for events not worth showing."""
    reason = event.get("reason")
    message = str(event.get("message") or "")
    if reason == "Scheduled":
        match = _ASSIGNED.search(message)
        where = f" on node {match.group(1)}" if match else ""
        return ProgressEvent(f"Your server has a place{where}", 30)
    if reason == "Pulling":
        return ProgressEvent(f"Downloading the image ({message.removeprefix('Pulling image ')})", 45)
    if reason == "Pulled":
        return ProgressEvent("The image is ready", 60)
    if reason == "Created":
        return ProgressEvent("The container is created", 70)
    if reason == "Started":
        return ProgressEvent("JupyterLab is starting", 80)
    if reason == "FailedScheduling":
        return ProgressEvent(f"Waiting for free resources: {message}", 20)
    if event.get("type") == "Warning" and message:
        return ProgressEvent(f"{reason}: {message}", None)
    return None


def _gigabytes(size: int) -> str:
    return f"{size / 2**30:g} GiB"


def unschedulable_message(message: str, options: ResolvedOptions, capacity: GpuCapacity | None) -> str:
    """Why the pod cannot be placed, and what the user can do about it."""
    gpu = options.gpu
    if gpu is not None and (
        gpu.resource in message or "node affinity/selector" in message or "didn't match" in message
    ):
        if capacity is not None and capacity.total == 0:
            return f"This cluster has no {gpu.display_name} right now; choose another GPU type."
        if capacity is not None and capacity.total < gpu.count:
            # Waiting cannot help: even a cluster with nothing else running has too few.
            return (
                f"This cluster has only {capacity.total} {gpu.display_name} in all; "
                f"ask for at most {capacity.total}."
            )
        counts = f" ({capacity.free} of {capacity.total})" if capacity is not None else ""
        many = f"{gpu.count} " if gpu.count > 1 else ""
        verb = "are" if gpu.count > 1 else "is"
        return (
            f"No {many}{gpu.display_name} {verb} free right now{counts}; "
            "choose another GPU type or try later."
        )
    if "Insufficient cpu" in message or "Insufficient memory" in message:
        return (
            f"The cluster has no room right now for {options.cpu_guarantee / 1000:g} CPUs and "
            f"{_gigabytes(options.memory_guarantee)} of memory; choose less or try later."
        )
    if "persistentvolumeclaim" in message:
        return f"Your storage is not ready: {message}"
    return f"Your server cannot be placed on the cluster: {message}"


def failure_from_event(
    event: dict[str, Any], options: ResolvedOptions, capacity: GpuCapacity | None
) -> str | None:
    """A failure message when an event means the start cannot succeed."""
    reason = event.get("reason")
    message = str(event.get("message") or "")
    if reason == "FailedScheduling":
        return unschedulable_message(message, options, capacity)
    if reason == "FailedMount" and "not found" in message:
        secret = re.search(r'secrets? "([^"]+)" not found', message)
        if secret:
            return (
                f"The credentials for one of your storages are missing (secret {secret.group(1)!r} "
                "not found); register them, or start without that storage."
            )
        return f"A volume could not be mounted: {message}"
    if reason == "Failed" and ("pull" in message.lower() or "image" in message.lower()):
        return _unpullable(options.image, message)
    return None


def failure_from_pod(pod: dict[str, Any], options: ResolvedOptions) -> str | None:
    """A failure message when the pod's status means the start cannot succeed."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in _PULL_FAILURES:
            detail = waiting.get("message") or waiting.get("reason")
            return _unpullable(options.image, str(detail))
        if waiting.get("reason") == "CrashLoopBackOff":
            last = (container.get("lastState") or {}).get("terminated") or {}
            return _crashed(last)
        terminated = state.get("terminated")
        if terminated:
            return _crashed(terminated)
    if status.get("phase") in ("Failed", "Succeeded"):
        why = status.get("reason") or status.get("phase")
        return f"Your server stopped as soon as it started ({why}: {status.get('message') or 'no message'})."
    return None


def _unpullable(image: str, detail: str) -> str:
    return f"The image {image} could not be downloaded: {detail}. Check its name, or choose another image."


def _crashed(terminated: dict[str, Any]) -> str:
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or "Error"
    detail = f": {terminated['message']}" if terminated.get("message") else ""
    return (
        f"Your server crashed as it started (exit code {code}, {reason}{detail}). "
        "If you chose a custom image, check that it contains jupyterhub-singleuser."
    )
