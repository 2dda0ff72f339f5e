"""Kubernetes ``Status`` bodies and the exception that carries them.

Every error the fake API server returns is a ``v1/Status`` object like the real server's, so
a client sees the same ``reason``, ``code`` and ``details`` it would see in a cluster (and
kubernetes_asyncio raises ``ApiException`` with the status code and that body). Handlers raise
:class:`ApiError`; the HTTP layer turns it into a response.
"""

from __future__ import annotations

from typing import Any

JsonDict = dict[str, Any]

# Reason used by the real API server for each status code we can return.
_REASON_BY_CODE: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An API failure that the HTTP layer serialises as a ``Status`` response."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: JsonDict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> JsonDict:
        """The ``v1/Status`` body for this error."""
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: JsonDict | None = None) -> JsonDict:
    """A failure ``Status`` object as the real API server writes it."""
    body: JsonDict = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def success_status(kind: str, name: str, uid: str) -> JsonDict:
    """The ``Status`` a DELETE returns for resources that do not return the deleted object."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "kind": kind, "uid": uid},
    }


def reason_for(code: int) -> str:
    """The real server's reason for a status code (``InternalError`` for unknown 5xx)."""
    return _REASON_BY_CODE.get(code, "InternalError" if code >= 500 else "BadRequest")


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{resource} "{name}" not found',
        details={"name": name, "kind": resource},
    )


def resource_not_found() -> ApiError:
    """404 for a path the server does not serve at all (an unknown resource type)."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", details={})


def already_exists(resource: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{resource} "{name}" already exists',
        details={"name": name, "kind": resource},
    )


def conflict(resource: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": {why}',
        details={"name": name, "kind": resource},
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(resource: str, name: str, why: str) -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'{resource} "{name}" is forbidden: {why}',
        details={"name": name, "kind": resource},
    )


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, details={})


def invalid(kind: str, name: str, causes: list[JsonDict]) -> ApiError:
    """422 Invalid with one cause per field, formatted like the real server's message."""
    parts = [f"{cause['field']}: {cause['message']}" for cause in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {joined}',
        details={"name": name, "kind": kind, "causes": causes},
    )


def injected(code: int, retry_after: int = 1) -> ApiError:
    """A fault requested by a test: 429 with Retry-After, or a 5xx like an overloaded server."""
    if code == 429:
        return ApiError(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            details={"retryAfterSeconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
    messages = {
        500: "Internal error occurred: fault injected by the test harness",
        503: "the server is currently unable to handle the request",
        504: "the server was unable to return a response in the time allotted",
    }
    message = messages.get(code, f"fault injected by the test harness (HTTP {code})")
    return ApiError(code, reason_for(code), message, details={})
