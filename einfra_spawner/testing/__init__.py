"""einfra_spawner's test harness: a fake Kubernetes API server for tests, not a cluster.

It serves core/v1 pods, persistentvolumeclaims, persistentvolumes, secrets, configmaps, events,
nodes and namespaces over HTTP on loopback, so the Kubernetes backend (and your profiles) can be
tested through the real kubernetes_asyncio client on machines where no Kubernetes can run.
A simulated scheduler and kubelet move pods through realistic states (Pending with
FailedScheduling, image pull failures, crash loops, Running), and an optional process mode
runs each pod's command as a local process so a real JupyterHub can spawn end to end.

In-process::

    async with FakeKubernetes(nodes=[FakeNode("gpu-1", gpus={"nvidia.com/gpu": 4})]) as k8s:
        async with k8s.api_client() as api:
            ...

In its own process: ``python -m einfra_spawner.testing serve --port 0`` or
:class:`FakeKubernetesProcess`. Pytest fixtures live in
:mod:`einfra_spawner.testing.pytest_plugin`. See docs/testing-harness.md.

This package imports nothing else from einfra_spawner.
"""

from __future__ import annotations

from ._config import ImageRules, Timings, full_image_reference
from ._faults import Faults, OneShotFault
from ._harness import SYSTEM_NAMESPACES, FakeKubernetes, kubeconfig_for
from ._nodes import FakeNode, default_nodes, dump_nodes, load_nodes
from ._quantities import QuantityError, parse_quantity
from ._remote import FakeKubernetesProcess
from ._server import RequestStats
from ._validate import DEFAULT_SCHEMA_VERSION, ObjectValidator

__all__ = [
    "DEFAULT_SCHEMA_VERSION",
    "SYSTEM_NAMESPACES",
    "FakeKubernetes",
    "FakeKubernetesProcess",
    "FakeNode",
    "Faults",
    "ImageRules",
    "ObjectValidator",
    "OneShotFault",
    "QuantityError",
    "RequestStats",
    "Timings",
    "default_nodes",
    "dump_nodes",
    "full_image_reference",
    "kubeconfig_for",
    "load_nodes",
    "parse_quantity",
]
