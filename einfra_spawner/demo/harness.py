"""The demo's stand-in cluster: the fake Kubernetes API server of ``einfra_spawner.testing``.

``scripts/demo --backend kubernetes`` (and the end-to-end tests of the Kubernetes backend) run
the hub with the Kubernetes backend against this harness in process mode: each pod's command
runs as a local process on its own 127.0.0.N address. It is a test harness, not a cluster.

The harness lives exactly as long as the hub: it reads its stdin and stops when the hub's end of
the pipe closes, whichever way the hub ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from einfra_spawner.names import ServerNames

__all__ = ["start_harness"]

# Kept for the hub's lifetime: when this pipe closes, the harness stops.
_RUNNING: list[subprocess.Popen[bytes]] = []


def _post(url: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - the harness on loopback
        url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback harness
        response.read()


def _seed(url: str, users_with_storage: list[str]) -> None:
    """What a real cluster would already hold: the group project volume, the shared scratch's
    claim (bound to the site's NFS export), and storage credentials for the users who registered
    theirs (the others see the missing-secret error)."""
    for claim in ("projects", "jupyterhub-scratch"):
        _post(
            url,
            "/api/v1/namespaces/default/persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}},
            },
        )
    for user in users_with_storage:
        name = f"sshfs-{ServerNames(user, '').user_label}"
        _post(
            url,
            "/api/v1/namespaces/default/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name},
                "stringData": {"username": user, "password": "demo"},
            },
        )


def start_harness(state: Path, users_with_storage: list[str]) -> str:
    """Start the fake API server in process mode; return its URL."""
    log = (state / "fake-kubernetes.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "einfra_spawner.testing",
            "serve",
            "--process-mode",
            "--wait-for-port",
            "--stop-on-stdin-eof",
            "--port",
            "0",
            "--log-level",
            "INFO",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env=os.environ.copy(),
        # Its own session: a hub killed with its process group must not take the harness down
        # before it has stopped the pod processes it runs (it stops when this pipe closes).
        start_new_session=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().decode().strip()
    if not url.startswith("http"):
        process.kill()
        raise SystemExit(f"the fake Kubernetes API server did not start; see {state / 'fake-kubernetes.log'}")
    _RUNNING.append(process)
    _seed(url, users_with_storage)
    return url
