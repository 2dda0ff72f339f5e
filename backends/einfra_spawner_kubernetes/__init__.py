"""The Kubernetes backend of einfra-spawner: single-user servers as pods, via kubernetes-asyncio.

Registered as ``kubernetes`` in the entry-point group ``einfra_spawner.backends``
(``c.EInfraSpawner.backend = "kubernetes"``); configured as ``c.KubernetesBackend.*``.
"""

from __future__ import annotations

from .backend import KubernetesBackend

__all__ = ["KubernetesBackend"]
