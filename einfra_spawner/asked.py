"""What the HTTP request being handled asks for itself, as opposed to what JupyterHub stored.

JupyterHub stores a request's options before the spawner sees them, and reuses them for a start
that brings none (a REST ``POST`` without a body, the admin page's "Start", a ``PATCH`` of the
options then a start, a hub restart). Most options may be reused; a ``home: reset`` must not
(it would erase a home nobody asked to erase). So the spawner honours a reset only when the
request being handled carries it itself, read here from the request the way JupyterHub reads it
(the options form's fields, ``/hub/spawn?opt-...`` query arguments, or the REST body, flat or,
on JupyterHub 6, wrapped in ``{"user_options": ...}``), and never stores one.

The request object is tornado's ``HTTPServerRequest`` (only its ``method``, ``body``,
``body_arguments`` and ``query_arguments`` are read).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import OptionsError
from .form import request_from_form, request_from_query
from .options import UserContext
from .profiles import ProfileSet

__all__ = ["as_stored", "asks_for_reset"]


def _decoded(arguments: Mapping[str, list[bytes]], prefix: str = "") -> dict[str, list[str]]:
    return {
        key[len(prefix) :]: [value.decode("utf8", "replace") for value in values]
        for key, values in arguments.items()
        if key.startswith(prefix)
    }


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
            asked = request_from_query(_decoded(request.query_arguments, "opt-"))
        elif request.body:
            body = json.loads(request.body)
            wrapped = isinstance(body, dict) and "user_options" in body
            asked = body["user_options"] if wrapped else body
    except (ValueError, OptionsError):
        return False
    return isinstance(asked, Mapping) and asked.get("home") == "reset"


def as_stored(request: object) -> dict[str, Any]:
    """What JupyterHub may keep of a request: all of it but a home reset."""
    if not isinstance(request, Mapping):
        return {}
    return {key: value for key, value in request.items() if not (key == "home" and value == "reset")}
