"""The options form page as the spawner serves it: the figures gathered within their time-outs,
the user's last choices, and the page rendered from the form's view.

Where it sits: JupyterHub asks the spawner for its options form
(:meth:`~einfra_spawner.spawner.EInfraSpawner.get_options_form`), which hands
:func:`options_form` what only it can reach: the profiles, the user, the backend and the run's
usage recorder. The GPU capacity (:mod:`einfra_spawner.capacity`) and the usage lines are each
bounded by a time-out: a slow or failing backend or ledger gives a form without figures, never
no form. What is offered is the form's rule (:func:`~einfra_spawner.form.build_form`); posted
forms and queries are read back by :mod:`einfra_spawner.form` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import cache

import jinja2

from .backend import Backend
from .capacity import capacity_for
from .errors import OptionsError
from .form import build_form, capacity_types
from .options import ResolvedOptions, UserContext
from .profiles import ProfileSet
from .resolve import resolve_options
from .usage.recorder import UsageRecorder

__all__ = ["form_template", "options_form"]


@cache
def form_template() -> jinja2.Template:
    """The options form's template (``einfra_spawner/templates/form.html``), loaded once."""
    # Autoescaping is forced on: custom images and messages typed by users end up in the page.
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("einfra_spawner", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template("form.html")


async def options_form(
    profiles: ProfileSet,
    user: UserContext,
    backend: Backend,
    *,
    stored: object,
    usage: Callable[[], UsageRecorder],
    capacity_timeout: float,
    usage_timeout: float,
    gpus_url: str,
    log: logging.Logger,
) -> str:
    """The options form's HTML for ``user`` (JupyterHub wraps it in its own ``<form>``).

    ``stored``: the request JupyterHub kept from the user's last start, pre-selected where still
    allowed; ``usage``: the run's usage recorder (asked for the user's cost and quotas);
    ``gpus_url``: where the page's script fetches fresh GPU figures (``""``: no refresh). The
    backend's features shape the page: whether images and mounts apply, what servers run as,
    and what a home reset does with the old home."""
    last = _last_choices(profiles, user, stored)
    capacity = await capacity_for(backend, profiles, user, capacity_timeout, log)
    lines = await _usage_lines(
        usage, gpus_offered=bool(capacity_types(profiles, user)), timeout=usage_timeout, log=log
    )
    features = backend.features
    view = build_form(
        profiles,
        user,
        last=last,
        capacity=capacity,
        images_apply=features.supports_images,
        servers_run_as=features.description,
        reset_keeps_old_home=features.reset_keeps_old_home,
        mounts_apply=features.supports_mounts,
        usage=lines,
        gpus_url=gpus_url,
    )
    return form_template().render(form=view)


def _last_choices(profiles: ProfileSet, user: UserContext, stored: object) -> ResolvedOptions | None:
    """``stored`` resolved again now; ``None`` when there is none or it is no longer allowed (the
    form then offers the defaults)."""
    if not stored:
        return None
    try:
        return resolve_options(profiles, user, stored)
    except OptionsError:
        return None


async def _usage_lines(
    usage: Callable[[], UsageRecorder], *, gpus_offered: bool, timeout: float, log: logging.Logger
) -> tuple[str, ...]:
    """The form's usage sentences; none when the ledger is slower than ``timeout`` seconds or
    failing (the form still shows: starts check quotas anyway). ``gpus_offered``: whether the
    user may choose any GPU (if not, no GPU quota line: "You use 0 of your 4 GPUs" would only
    puzzle them)."""
    try:
        lines = usage().form_lines(gpus_offered=gpus_offered)
        return await asyncio.wait_for(lines, timeout=timeout)
    except asyncio.TimeoutError:
        log.warning("Usage figures took longer than %.1f s; form without them", timeout)
    except Exception:  # a form without figures beats no form at all
        log.exception("Usage figures failed; showing the form without them")
    return ()
