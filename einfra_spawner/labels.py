"""The labels and annotations einfra-spawner puts on the objects of a server, in one place.

The renderer (:mod:`.render`, :mod:`.render_volumes`) sets them; the backends select and adopt
objects by them; the pod settings (:mod:`.pod_settings`, :mod:`.pod_patches`) may not set or
change them, which :func:`is_ours` decides from the same definitions, so that a label the
renderer starts setting is protected at once. The labels that only volumes carry (home
generation, reset, mount) are :mod:`.storage`'s, under the same prefix. Pure.
"""

from __future__ import annotations

from .names import ServerNames

__all__ = [
    "ANNOTATION_SERVER",
    "ANNOTATION_USER",
    "APP_COMPONENT",
    "LABEL_GPU",
    "LABEL_PROFILE",
    "LABEL_SERVER",
    "LABEL_SPEC_HASH",
    "LABEL_USER",
    "OUR_LABEL_KEYS",
    "OUR_PREFIX",
    "is_ours",
    "server_annotations",
    "server_labels",
]

#: The prefix of our own labels and annotations.
OUR_PREFIX = "einfra-spawner/"
LABEL_USER = f"{OUR_PREFIX}user"
LABEL_SERVER = f"{OUR_PREFIX}server"
LABEL_PROFILE = f"{OUR_PREFIX}profile"
LABEL_SPEC_HASH = f"{OUR_PREFIX}spec-hash"
LABEL_GPU = f"{OUR_PREFIX}gpu"
ANNOTATION_USER = f"{OUR_PREFIX}username"
ANNOTATION_SERVER = f"{OUR_PREFIX}servername"

# The recommended labels of Kubernetes (app.kubernetes.io), which we set on every object too.
_APP_NAME = "app.kubernetes.io/name"
_APP_INSTANCE = "app.kubernetes.io/instance"
APP_COMPONENT = "app.kubernetes.io/component"
_APP_MANAGED_BY = "app.kubernetes.io/managed-by"
#: The labels outside :data:`OUR_PREFIX` that the renderer sets on every pod.
OUR_LABEL_KEYS = frozenset({_APP_NAME, _APP_INSTANCE, APP_COMPONENT, _APP_MANAGED_BY})


def is_ours(key: str) -> bool:
    """Whether the label or annotation ``key`` is one einfra-spawner sets itself."""
    return key.startswith(OUR_PREFIX) or key in OUR_LABEL_KEYS


def server_labels(instance: str, profile: str, names: ServerNames) -> dict[str, str]:
    """The labels of a server's pod: what it is, whose it is, and which profile it runs."""
    return {
        _APP_NAME: "jupyterhub-singleuser",
        _APP_INSTANCE: instance,
        APP_COMPONENT: "singleuser-server",
        _APP_MANAGED_BY: "einfra-spawner",
        LABEL_USER: names.user_label,
        LABEL_SERVER: names.server_label,
        LABEL_PROFILE: profile,
    }


def server_annotations(user: str, server: str) -> dict[str, str]:
    """The annotations of a server's objects: the exact JupyterHub user and server names (a label
    value holds only a folded form)."""
    return {ANNOTATION_USER: user, ANNOTATION_SERVER: server}
