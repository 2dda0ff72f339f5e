"""How the fake API server words a validation failure: one Status cause per field.

A real API server answers an invalid object with a 422 ``Invalid`` Status whose
``details.causes`` each name a field, a reason (``FieldValueInvalid``, ``FieldValueRequired``...)
and a message such as ``Invalid value: "x": ...``. The harness's own checks (:mod:`._checks`) and
the OpenAPI schema check (:mod:`._schema`) both describe what they find with these helpers, so a
client reads the same wording whichever check refused the object; :mod:`._validate` gathers the
causes into the Status.
"""

from __future__ import annotations

import json
from typing import Any

JsonDict = dict[str, Any]
Cause = JsonDict


def quoted(value: object) -> str:
    """A value quoted the way the real server's messages quote it."""
    return json.dumps(value, sort_keys=True)


def cause(reason: str, field: str, message: str) -> Cause:
    return {"reason": reason, "message": message, "field": field}


def invalid_value(field: str, value: object, why: str) -> Cause:
    return cause("FieldValueInvalid", field, f"Invalid value: {quoted(value)}: {why}")


def required(field: str, why: str = "") -> Cause:
    return cause("FieldValueRequired", field, "Required value" + (f": {why}" if why else ""))
