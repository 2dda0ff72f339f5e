"""The JSON Schema of profile files, generated from the same models that load them.

``profiles/schema.json`` is this output; a test checks that the committed file is current, and
``einfra-spawner schema`` prints it. Models that accept a scalar short form (``cpu: 2`` for a
fixed CPU count) declare it in ``scalar_schema``; it is added here as an alternative, since
pydantic only sees the long form.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, TypeAdapter

from . import models
from .models import Instance, Profile

__all__ = ["profile_schema", "profile_schema_json"]

_SCHEMA_ID = "https://einfra-spawner.readthedocs.io/schema/profiles.json"


def _scalar_forms() -> dict[str, dict[str, Any]]:
    forms: dict[str, dict[str, Any]] = {}
    for name in models.__all__:
        obj = getattr(models, name)
        if isinstance(obj, type) and issubclass(obj, BaseModel):
            scalar = getattr(obj, "scalar_schema", None)
            if scalar is not None:
                forms[obj.__name__] = scalar
    return forms


def profile_schema() -> dict[str, Any]:
    """One schema for both kinds of file: an instance file or a profile file."""
    schema = TypeAdapter(Instance | Profile).json_schema(ref_template="#/$defs/{model}")
    for name, scalar in _scalar_forms().items():
        definition = schema["$defs"].get(name)
        if definition is not None:
            schema["$defs"][name] = {"anyOf": [scalar, definition]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": _SCHEMA_ID,
        "title": "einfra-spawner instance or profile file",
        **schema,
    }


def profile_schema_json() -> str:
    """The schema as the text of ``profiles/schema.json``."""
    return json.dumps(profile_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
