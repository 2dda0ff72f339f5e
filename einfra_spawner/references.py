"""The grammar of container image references, shared by every model that names an image.

A module of its own so that both the profile models (:mod:`.models`) and the pod settings
(:mod:`.pod_settings`, which the models import) check images by one rule. Pure.
"""

from __future__ import annotations

import re

__all__ = ["IMAGE_REFERENCE", "is_image_reference"]

_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
#: A container image reference (registry/path:tag@digest), full-matched and at most 255
#: characters. As in Docker, a first component is a registry only with a '.', a port or
#: "localhost"; the path is lower case.
IMAGE_REFERENCE = re.compile(
    rf"(?:(?:localhost|{_HOST}(?:\.{_HOST})+|{_HOST}(?=:[0-9]))(?::[0-9]+)?/)?"
    rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


def is_image_reference(text: str) -> bool:
    """Whether ``text`` is, as a whole, a container image reference of at most 255 characters."""
    return len(text) <= 255 and IMAGE_REFERENCE.fullmatch(text) is not None
