"""What a spawner looks up once and keeps: its instance's profiles, the hub's backend object,
whose server it is, and each run's usage recorder; a broken configuration as the refusal its
user sees.

Where it sits: the spawner (:mod:`einfra_spawner.spawner`) caches what these functions return;
the profiles, the backend and the ledger themselves are loaded, built and shared by the hub's
runtime (:mod:`einfra_spawner.runtime`). A configuration problem refuses with a 500 that sends
the user to the operators, and the reason goes to the hub log, where the operators read it:
users are never shown the hub's paths or settings.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any

from .backend import Backend
from .errors import EInfraError, ProfileError
from .options import UserContext
from .profiles import ProfileSet
from .refusals import refusal
from .render import ServerIdentity
from .runtime import HubRuntime
from .usage.recorder import UsageRecorder, recorder_for

__all__ = [
    "gpus_url",
    "instance_profiles",
    "run_recorder",
    "server_identity",
    "shared_backend",
    "user_context",
]


def instance_profiles(runtime: HubRuntime, profiles_dir: str, log: logging.Logger) -> ProfileSet:
    """The profiles of the instance folder ``profiles_dir`` (relative: to the hub's working
    directory), loaded once per process by ``runtime``."""
    if not profiles_dir:
        raise refusal(
            "This hub is not configured: EInfraSpawner.profiles_dir is not set.",
            reason="configuration",
            status=500,
        )
    folder = os.path.abspath(profiles_dir)
    try:
        return runtime.profiles(folder)
    except ProfileError as exc:
        log.error("The profile folder %s is broken:\n%s", folder, exc)
        raise refusal(
            "This hub's profile files are broken; its operators can see why in the hub log.",
            reason="configuration",
            status=500,
        ) from exc


def shared_backend(runtime: HubRuntime, name: str, config: Any, log: logging.Logger) -> Backend:
    """The backend ``name``, built by ``runtime`` once per process with the hub's ``config``."""
    try:
        return runtime.backend(name, config, log)
    except EInfraError as exc:
        log.error("%s", exc)
        raise refusal(str(exc), reason="configuration", status=500) from exc


def user_context(user: Any) -> UserContext:
    """Who is asking (JupyterHub's ``user``), as the resolver sees them."""
    return UserContext(
        name=user.name,
        groups=frozenset(group.name for group in user.groups),
        admin=bool(user.admin),
    )


def server_identity(backend: Backend, user: str, server: str) -> ServerIdentity:
    """Whose server this is, in the namespace ``backend`` chooses for it (if it has any)."""
    plain = ServerIdentity(user=user, server=server)
    namespace = backend.namespace_for(plain)
    if namespace is None:
        return plain
    return ServerIdentity(user=user, server=server, namespace=namespace)


def run_recorder(
    runtime: HubRuntime,
    profiles: ProfileSet,
    *,
    ledger_url: str,
    user: UserContext,
    server: str,
    log: logging.Logger,
    describe: str,
    interval: int | None,
) -> UsageRecorder:
    """A run's usage recorder (a null one where the instance has neither prices nor quotas), in
    the ledger at ``ledger_url``, resuming the run's ``interval`` a restarted hub's state names."""
    recorder = recorder_for(
        profiles.instance, partial(runtime.ledger, ledger_url), user, server, log, describe
    )
    recorder.restore(interval)
    return recorder


def gpus_url(runtime: HubRuntime) -> str:
    """Where the form's script fetches fresh GPU figures: the GPU figures service of this hub
    process (``einfra_spawner.configure``); ``""`` (no refresh) without one."""
    service = runtime.gpu_service
    return service.figures_path() if service is not None else ""
