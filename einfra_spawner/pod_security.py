"""The Pod Security Standards, checked on a rendered pod; and JSON merge patches (RFC 7386).

The renderer gives every container the restricted security context from
:func:`container_security_context` and the pod the one from :func:`pod_security_context`, so the
notebook and the init containers share one definition. :func:`pod_security_violations` is the
checker the loader runs on a representative pod with an operator's ``pod_patch`` applied
(:mod:`.render_pod`), and the property tests run on every rendered pod: it implements the
controls of the Kubernetes Pod Security Standards, "baseline" and "restricted" (v1.33), written
out plainly from the published list, one function per control.

Pure: plain dicts in, messages out.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Literal

__all__ = [
    "BASELINE",
    "RESTRICTED",
    "Level",
    "container_security_context",
    "merge_patch",
    "pod_security_context",
    "pod_security_violations",
]

Level = Literal["restricted", "baseline"]
RESTRICTED: Level = "restricted"
BASELINE: Level = "baseline"

_BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def container_security_context() -> dict[str, Any]:
    """The security context of every container we render: restricted, whatever the settings."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(run_as_user: int, run_as_group: int, fs_group: int | None) -> dict[str, Any]:
    """The pod's security context: a non-root user and the RuntimeDefault seccomp profile."""
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if fs_group is not None:
        context["fsGroup"] = fs_group
    return context


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the JSON merge patch ``patch`` applied (RFC 7386); neither is changed.

    A mapping merges key by key, ``null`` removes a key, anything else (lists included) replaces.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- the checker ---------------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for index, container in enumerate(_list(spec.get(group))):
            yield f"spec.{group}[{index}]", _dict(container)


def _baseline(pod: dict[str, Any]) -> Iterator[str]:
    spec = _dict(pod.get("spec"))
    pod_context = _dict(spec.get("securityContext"))
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            yield f"spec.{key} must be unset or false"
    if _dict(pod_context.get("windowsOptions")).get("hostProcess"):
        yield "spec.securityContext.windowsOptions.hostProcess must be unset or false"
    for index, volume in enumerate(_list(spec.get("volumes"))):
        if "hostPath" in _dict(volume):
            yield f"spec.volumes[{index}] must not be a hostPath volume"
    yield from _baseline_context("spec.securityContext", pod_context)
    for index, sysctl in enumerate(_list(pod_context.get("sysctls"))):
        name = _dict(sysctl).get("name")
        if name not in _SAFE_SYSCTLS:
            yield f"spec.securityContext.sysctls[{index}]: {name!r} is not a safe sysctl"
    for key, value in _dict(_dict(pod.get("metadata")).get("annotations")).items():
        if (
            key.startswith(_APPARMOR_ANNOTATION)
            and value != "runtime/default"
            and not (isinstance(value, str) and value.startswith("localhost/"))
        ):
            yield f"metadata.annotations[{key}] must be runtime/default or localhost/*"
    for path, container in _containers(spec):
        context = _dict(container.get("securityContext"))
        if context.get("privileged"):
            yield f"{path}.securityContext.privileged must be unset or false"
        if _dict(context.get("windowsOptions")).get("hostProcess"):
            yield f"{path}.securityContext.windowsOptions.hostProcess must be unset or false"
        added = _list(_dict(context.get("capabilities")).get("add"))
        for capability in added:
            if capability not in _BASELINE_CAPABILITIES:
                yield f"{path}.securityContext.capabilities.add: {capability!r} is not allowed"
        for port_index, port in enumerate(_list(container.get("ports"))):
            if _dict(port).get("hostPort"):
                yield f"{path}.ports[{port_index}].hostPort must be unset or 0"
        proc_mount = context.get("procMount")
        if proc_mount not in (None, "Default"):
            yield f"{path}.securityContext.procMount must be unset or Default"
        yield from _baseline_context(f"{path}.securityContext", context)


def _baseline_context(path: str, context: dict[str, Any]) -> Iterator[str]:
    selinux = _dict(context.get("seLinuxOptions"))
    if selinux.get("type", "") not in _SELINUX_TYPES:
        yield f"{path}.seLinuxOptions.type {selinux.get('type')!r} is not allowed"
    for key in ("user", "role"):
        if selinux.get(key):
            yield f"{path}.seLinuxOptions.{key} must be unset"
    if _dict(context.get("seccompProfile")).get("type") == "Unconfined":
        yield f"{path}.seccompProfile.type must not be Unconfined"
    apparmor = _dict(context.get("appArmorProfile")).get("type")
    if apparmor is not None and apparmor not in ("RuntimeDefault", "Localhost"):
        yield f"{path}.appArmorProfile.type must be RuntimeDefault or Localhost"


def _restricted(pod: dict[str, Any]) -> Iterator[str]:
    spec = _dict(pod.get("spec"))
    pod_context = _dict(spec.get("securityContext"))
    for index, volume in enumerate(_list(spec.get("volumes"))):
        kinds = set(_dict(volume)) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            yield f"spec.volumes[{index}]: volume type {sorted(kinds - _RESTRICTED_VOLUMES)} is not allowed"
    if pod_context.get("runAsUser") == 0:
        yield "spec.securityContext.runAsUser must not be 0"
    if pod_context.get("runAsNonRoot") is False:
        yield "spec.securityContext.runAsNonRoot must not be false"
    pod_non_root = pod_context.get("runAsNonRoot") is True
    pod_seccomp = _dict(pod_context.get("seccompProfile")).get("type")
    for path, container in _containers(spec):
        context = _dict(container.get("securityContext"))
        if context.get("allowPrivilegeEscalation") is not False:
            yield f"{path}.securityContext.allowPrivilegeEscalation must be false"
        non_root = context.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            yield f"{path}.securityContext.runAsNonRoot must be true (here or on the pod)"
        if context.get("runAsUser") == 0:
            yield f"{path}.securityContext.runAsUser must not be 0"
        seccomp = _dict(context.get("seccompProfile")).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            yield f"{path}.securityContext.seccompProfile.type must be RuntimeDefault or Localhost"
        capabilities = _dict(context.get("capabilities"))
        if "ALL" not in _list(capabilities.get("drop")):
            yield f"{path}.securityContext.capabilities.drop must include ALL"
        for capability in _list(capabilities.get("add")):
            if capability != "NET_BIND_SERVICE":
                yield f"{path}.securityContext.capabilities.add: only NET_BIND_SERVICE is allowed"


def pod_security_violations(pod: dict[str, Any], level: Level = RESTRICTED) -> list[str]:
    """What keeps ``pod`` from meeting the Pod Security Standard ``level`` (empty: it meets it).

    Restricted includes every baseline control.
    """
    found = list(_baseline(pod))
    if level == RESTRICTED:
        found += [v for v in _restricted(pod) if v not in found]
    return found
