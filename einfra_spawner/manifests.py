"""What rendering takes and gives: the server's identity, how its single-user server starts, and
the manifests a backend submits.

:func:`~einfra_spawner.render.render_manifests` turns ``ResolvedOptions`` and a
:class:`ServerIdentity` into :class:`Manifests`; the volumes among them are built by
:mod:`.render_volumes`. Frozen dataclasses holding plain dicts, re-exported by :mod:`.render`
(the import path the backends and the package use). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .names import ServerNames

__all__ = ["Manifests", "ServerIdentity", "SingleUser", "UserVolume"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerIdentity:
    """Whose server this is: the JupyterHub user and server names (``""``: the default server),
    the namespace it runs in, and the generation of its current home (0 until a reset that keeps
    the old home gives it a new one; the spawner keeps it in the server's state)."""

    user: str
    server: str = ""
    namespace: str = "default"
    home_generation: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SingleUser:
    """How the single-user server is started: the command, and the hub's environment for it."""

    cmd: tuple[str, ...] = ("jupyterhub-singleuser",)
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    port: int = 8888


@dataclass(frozen=True, slots=True, kw_only=True)
class UserVolume:
    """A PersistentVolume made for this server from a mount's ``pv`` template, and the claim
    bound to it. ``secret``: the credentials it needs (checked before anything is created);
    ``register_first``: what to tell the user when they are missing; ``remove``: the
    template's policy (``with_server`` or ``never``)."""

    mount: str
    pv: dict[str, Any]
    claim: dict[str, Any]
    secret: str | None
    register_first: str | None
    remove: str


@dataclass(frozen=True, slots=True)
class Manifests:
    """What a backend submits: the pod, the home PVC (a persistent home only), and the names of
    secrets the pod needs but does not own (per-user credentials for mounts). Plain dicts, to be
    treated as read-only. ``user_volumes``: the per-server PersistentVolumes and claims of
    ``pv`` mounts. ``home_generation``: the generation of the home the pod mounts;
    ``retired_home``: the claim a reset replaces and keeps for a while (``None``: no reset, or
    a reset that deletes the old home, which keeps its name)."""

    pod: dict[str, Any]
    home: dict[str, Any] | None
    secret_names: tuple[str, ...]
    spec_hash: str
    names: ServerNames = field(repr=False, compare=False)
    user_volumes: tuple[UserVolume, ...] = ()
    home_generation: int = 0
    retired_home: str | None = None

    def objects(self) -> list[dict[str, Any]]:
        """Every object to create, the pod first."""
        objects = [self.pod] if self.home is None else [self.pod, self.home]
        for volume in self.user_volumes:
            objects += [volume.pv, volume.claim]
        return objects
