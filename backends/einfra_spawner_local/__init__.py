"""The local backend: single-user servers as processes on the hub's machine.

Registered as ``local`` in the entry-point group ``einfra_spawner.backends``, exactly as a
third-party backend would be (``c.EInfraSpawner.backend = "local"``). It receives the resolved
options and the hub's command and environment, and starts ``jupyterhub-singleuser`` as an asyncio
subprocess on the loopback, with a home folder per (user, server). Images do not apply here.
Only the core's public API is imported. Configuration reference: ``docs/backends/local.md``.
"""

from __future__ import annotations

from ._backend import LocalBackend
from ._launch import choose_cpus, needs_allow_root, server_argv, server_env, service_url

__all__ = [
    "LocalBackend",
    "choose_cpus",
    "needs_allow_root",
    "server_argv",
    "server_env",
    "service_url",
]
