"""How a local server is launched: its command line, environment, port and resource limits.

Between the resolved options and the process: the same figures the Kubernetes backend renders
into a pod (``CPU_LIMIT``, ``MEM_LIMIT``... as JupyterHub's spawners set them) become environment
variables here, and, where the operating system allows it without breaking JupyterLab, limits:

* CPU: the server is pinned (CPU affinity) to ``ceil(cpu_limit)`` of the hub's CPUs, the least
  used by other local servers; kernels inherit the affinity. Nothing is pinned when the limit
  covers every CPU. The guarantee is not enforced (nothing can reserve CPU time here).
* memory: ``RLIMIT_DATA`` (heap and private writable mappings, what an allocation uses) is set to
  the memory limit. It is a ceiling *per process*, inherited by kernels: the server and each kernel
  may each use up to the limit, so it stops one runaway notebook, not the sum. ``RLIMIT_AS`` would
  be simpler but breaks CUDA and JIT runtimes, which reserve far more address space than they use.

The limits are applied to the started process from outside (``sched_setaffinity`` and
``prlimit`` on its pid), right after it starts: no ``preexec_fn`` (unsafe in a threaded hub) and
no helper interpreter that a ``run_as_user`` account might not be allowed to execute.

Pure functions, except :func:`pick_port` and :func:`apply_limits`.
"""

from __future__ import annotations

import math
import os
import resource
import socket
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from einfra_spawner import ResolvedOptions, SingleUser
from einfra_spawner.render import singleuser_env

from ._procfs import MARKER_VARIABLE

__all__ = [
    "ALLOW_ROOT",
    "AppliedLimits",
    "apply_limits",
    "choose_cpus",
    "cores_for",
    "needs_allow_root",
    "pick_port",
    "server_argv",
    "server_env",
    "service_url",
]

LOOPBACK = "127.0.0.1"
ALLOW_ROOT = "--allow-root"


def needs_allow_root(euid: int, run_as_user: str | None) -> bool:
    """Whether the server will run as root and so needs ``--allow-root`` (jupyter-server refuses
    root otherwise): the hub is root and no ``run_as_user`` takes over."""
    return euid == 0 and not run_as_user


def server_argv(single_user: SingleUser, *, allow_root: bool) -> list[str]:
    """The command line of the server: the hub's command and arguments, plus ``--allow-root``
    when the server runs as root."""
    argv = [*single_user.cmd, *single_user.args]
    if allow_root and ALLOW_ROOT not in argv:
        argv.append(ALLOW_ROOT)
    return argv


def service_url(hub_url: str | None, prefix: str | None, port: int) -> str:
    """``JUPYTERHUB_SERVICE_URL`` pointing at this machine's loopback and ``port``, with the path
    the hub chose (jupyterhub-singleuser listens where this URL says)."""
    path = urlsplit(hub_url).path if hub_url else ""
    if not path:
        path = prefix or "/"
    return f"http://{LOOPBACK}:{port}{path}"


def server_env(
    options: ResolvedOptions,
    single_user: SingleUser,
    *,
    port: int,
    home: str,
    marker: str,
    fallback_path: str | None,
    account: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The server's environment.

    The same precedence as the Kubernetes pod: the profile's variables first, then the resource
    figures, then the hub's variables, which the profile cannot override (the API token...). Then
    what only this backend knows: the loopback service URL, ``HOME``, the marker that finds every
    process of the server again, and, for ``run_as_user``, that account's ``USER``, ``LOGNAME`` and
    ``SHELL`` (``account``).
    """
    env = singleuser_env(options, single_user)
    env["JUPYTERHUB_SERVICE_URL"] = service_url(
        env.get("JUPYTERHUB_SERVICE_URL"), env.get("JUPYTERHUB_SERVICE_PREFIX"), port
    )
    env["HOME"] = home
    env[MARKER_VARIABLE] = marker
    if "PATH" not in env and fallback_path:
        # Without PATH neither the command nor the kernels it starts could be found.
        env["PATH"] = fallback_path
    if account is not None:
        env.update(account)
    return env


def pick_port(taken: Collection[int]) -> int:
    """A free TCP port on the loopback, not one already given to another local server."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK, 0))
            port: int = probe.getsockname()[1]
        if port not in taken:
            return port
    raise OSError("no free TCP port on the loopback")


def cores_for(cpu_limit_millicores: int) -> int:
    """Whole CPUs needed for a limit: 1.5 CPUs need 2."""
    return max(1, math.ceil(cpu_limit_millicores / 1000))


def choose_cpus(available: Sequence[int], wanted: int, load: Mapping[int, int]) -> tuple[int, ...] | None:
    """The CPUs to pin a server to: the ``wanted`` least loaded of ``available`` (``load``: how
    many local servers are pinned to each), or ``None`` (no pinning) when it wants them all."""
    if wanted >= len(available):
        return None
    ranked = sorted(available, key=lambda cpu: (load.get(cpu, 0), cpu))
    return tuple(sorted(ranked[:wanted]))


@dataclass(frozen=True, slots=True)
class AppliedLimits:
    """What was enforced on one process: pinned CPUs (``None``: all) and the ``RLIMIT_DATA``
    ceiling in bytes (``None``: none), with why a limit could not be set."""

    cpus: tuple[int, ...] | None
    memory: int | None
    problems: tuple[str, ...] = ()


def apply_limits(pid: int, cpus: tuple[int, ...] | None, memory: int | None) -> AppliedLimits:
    """Pin ``pid`` to ``cpus`` and cap its data segment at ``memory`` bytes, as far as allowed."""
    problems = []
    applied_cpus = None
    if cpus is not None:
        try:
            os.sched_setaffinity(pid, cpus)
            applied_cpus = cpus
        except OSError as error:
            problems.append(f"CPU affinity: {error.strerror}")
    applied_memory = None
    if memory is not None:
        try:
            _soft, hard = resource.prlimit(pid, resource.RLIMIT_DATA)
            # Never raise a hard limit the hub itself is under (it could not anyway).
            ceiling = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
            resource.prlimit(pid, resource.RLIMIT_DATA, (ceiling, ceiling))
            applied_memory = ceiling
        except OSError as error:
            problems.append(f"RLIMIT_DATA: {error.strerror}")
    return AppliedLimits(cpus=applied_cpus, memory=applied_memory, problems=tuple(problems))
