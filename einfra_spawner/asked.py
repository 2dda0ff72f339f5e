"""What the HTTP request being handled asks for itself, as opposed to what JupyterHub stored.

JupyterHub stores a request's options before the spawner sees them, and reuses them for a start
that brings none (a REST ``POST`` without a body, the admin page's "Start", a ``PATCH`` of the
options then a start, a hub restart). Most options may be reused; a ``home: reset`` must not
(it would erase a home nobody asked to erase). So the spawner honours a reset only when the
request being handled carries it itself, read here from the request the way JupyterHub reads it,
and never stores one:

* the options form's fields (a ``POST`` of ``/hub/spawn``);
* the query arguments of ``GET /hub/spawn``, by JupyterHub 6's rule (:func:`query_options`),
  which the spawner applies on JupyterHub 5 too, so that a query asks for the same on both;
* the REST body: on JupyterHub 6 a body with ``user_options`` or ``display_name`` is
  ``{"display_name": ..., "user_options": {...}}``, whose options are ``user_options`` alone
  (a ``home`` beside ``display_name`` is not an option: JupyterHub ignores it, and so does this
  module); any other object is the options themselves (both versions; JupyterHub 5 takes only
  that form, and passes a ``user_options`` or ``display_name`` key on as an option, which the
  resolver refuses).

The request object is tornado's ``HTTPServerRequest`` (only its ``method``, ``body``,
``body_arguments`` and ``query_arguments`` are read).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import OptionsError
from .form_request import request_from_form, request_from_query
from .options import UserContext
from .profiles import ProfileSet

__all__ = [
    "HUB_QUERY_ARGUMENTS",
    "as_stored",
    "asks_for_reset",
    "options_in_body",
    "query_options",
    "request_to_resolve",
]


def _decoded(arguments: Mapping[str, list[bytes]]) -> dict[str, list[str]]:
    return {key: [value.decode("utf8", "replace") for value in values] for key, values in arguments.items()}


#: Query arguments of ``/hub/spawn`` that are JupyterHub's own, never options.
HUB_QUERY_ARGUMENTS = frozenset({"next", "display_name"})


def query_options(query: Mapping[str, Sequence[str]]) -> dict[str, Sequence[str]]:
    """The option keys of ``/hub/spawn``'s query arguments, by JupyterHub 6's rule: without
    JupyterHub's own ``next`` and ``display_name``, the ``opt-`` keys without their prefix if
    there is any, else the plain keys.

    JupyterHub 6 applies it before the spawner sees the query; JupyterHub 5 passes every
    argument but ``next`` as it came (``opt-cpu`` and all), so the spawner applies it there."""
    arguments = {key: values for key, values in query.items() if key not in HUB_QUERY_ARGUMENTS}
    prefixed = {key[4:]: values for key, values in arguments.items() if key.startswith("opt-")}
    return prefixed or arguments


def options_in_body(body: object) -> object:
    """The options a REST start's JSON ``body`` asks for (``None``: none, the stored ones are
    used), read as JupyterHub 6 reads it (see the module's docstring)."""
    if isinstance(body, Mapping) and ("user_options" in body or "display_name" in body):
        return body.get("user_options")
    return body


def asks_for_reset(request: Any, profiles: ProfileSet, user: UserContext) -> bool:
    """Whether ``request`` (the HTTP request that started this spawn; ``None`` when there is
    none) itself asks for ``home: reset``."""
    if request is None:
        return False
    asked: object = None
    try:
        if request.body_arguments:  # the options form, as JupyterHub's spawn page reads it
            asked = request_from_form(_decoded(request.body_arguments), profiles, user)
        elif request.method == "GET":
            asked = request_from_query(query_options(_decoded(request.query_arguments)))
        elif request.body:
            asked = options_in_body(json.loads(request.body))
    except (ValueError, OptionsError):
        return False
    return isinstance(asked, Mapping) and asked.get("home") == "reset"


def as_stored(request: object) -> dict[str, Any]:
    """What JupyterHub may keep of a request: all of it but a home reset."""
    if not isinstance(request, Mapping):
        return {}
    return {key: value for key, value in request.items() if not (key == "home" and value == "reset")}


def request_to_resolve(
    stored: object, handled: Any, profiles: Callable[[], ProfileSet], user: Callable[[], UserContext]
) -> tuple[object, bool]:
    """The request a start resolves: the options JupyterHub stored (``stored``), less a
    ``home: reset`` that the HTTP request being handled (``handled``; ``None`` when there is
    none) does not ask for itself; and whether such a reset was dropped. ``profiles`` and
    ``user`` are looked up only when a reset is stored."""
    if not isinstance(stored, Mapping):
        return stored, False
    request = dict(stored)
    if request.get("home") == "reset" and not asks_for_reset(handled, profiles(), user()):
        del request["home"]
        return request, True
    return request, False
