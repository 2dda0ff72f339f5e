"""The instance the real-cluster tests start servers from: deploy/kind/profiles, adapted.

The very files scripts/kind-up installs into the kind hub (homes on kind's ``standard`` storage
class, ReadWriteOnce; the fake GPU types kind-up advertises), with three changes for the tests:
the image is ``EINFRA_TEST_IMAGE`` (one the cluster can pull), a second choice names an image
that cannot exist (the fail-fast scenario), and up to 8 GPUs may be asked for (to fill a node).
Pure and importable without a cluster, so the unit tests check that it still loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from einfra_spawner import ProfileSet, parse_profile_set

KIND_PROFILES = Path(__file__).resolve().parents[2] / "deploy" / "kind" / "profiles"
#: The image of deploy/kind/profiles, which kind-up loads into the cluster's nodes.
DEFAULT_IMAGE = "quay.io/jupyter/minimal-notebook:2025-03-10"
#: An image no registry has: ``.invalid`` never resolves (RFC 2606), so the pull fails at once.
MISSING_IMAGE = "registry.invalid/einfra-test/does-not-exist:0"
PROFILE = "jupyterlab"
GPU = "a40"
MAX_GPUS = 8


def kind_instance(image: str = DEFAULT_IMAGE) -> ProfileSet:
    """deploy/kind/profiles with the tests' image, a missing image and room for many GPUs."""
    files = {path.name: path.read_text() for path in sorted(KIND_PROFILES.glob("*.yaml"))}
    profile: dict[str, Any] = yaml.safe_load(files[f"{PROFILE}.yaml"])
    profile["image"] = {
        "default": "test",
        "choices": [
            {"id": "test", "image": image},
            {"id": "missing", "image": MISSING_IMAGE},
        ],
    }
    for choice in profile["gpu"]["choices"]:
        if isinstance(choice, dict):
            choice["max_count"] = MAX_GPUS
    files[f"{PROFILE}.yaml"] = yaml.safe_dump(profile, sort_keys=False)
    instance: dict[str, Any] = yaml.safe_load(files["instance.yaml"])
    instance.pop("quotas", None)  # quotas are the spawner's business; the tests call the backend
    files["instance.yaml"] = yaml.safe_dump(instance, sort_keys=False)
    return parse_profile_set(files, str(KIND_PROFILES))
