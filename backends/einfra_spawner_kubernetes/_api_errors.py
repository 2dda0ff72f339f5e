"""Kubernetes API errors as typed exceptions, and which of them a retry can fix. Pure.

The bottom of the backend's API layer: :mod:`._transport` turns a failed response or a lost
connection into one of these, :mod:`._retry` and :mod:`._api` decide from them whether to try
again, and the rest of the backend catches the statuses it acts on by class
(``except Conflict:``) instead of comparing status codes.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "Conflict",
    "Forbidden",
    "Gone",
    "MaybeCreated",
    "NoResponse",
    "NotFound",
    "TooManyRequests",
    "api_error",
    "maybe_applied",
    "retriable",
]

#: Statuses worth another try: the server is overloaded, restarting or behind a failing proxy.
_RETRIABLE = frozenset({429, 500, 502, 503, 504})
#: Statuses after which a write may have been applied anyway (an error after the write, or a
#: proxy or the API server itself giving up on a request still in progress).
_MAYBE_APPLIED = frozenset({500, 502, 504})


class ApiError(Exception):
    """A Kubernetes API error with its status code and Status body (``{}`` when there was none).

    ``status`` is 0 when the server gave no answer (:class:`NoResponse`). ``retry_after`` is
    the response's ``Retry-After`` header, if any.
    """

    def __init__(
        self, status: int, body: dict[str, Any], what: str, *, retry_after: str | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.reason = str(body.get("reason", ""))
        self.retry_after = retry_after
        message = body.get("message") or f"HTTP {status}"
        super().__init__(f"{what}: {status} {message}" if status else f"{what}: {message}")


class Forbidden(ApiError):
    """403: the hub's service account may not do this (its RBAC)."""


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""


class Conflict(ApiError):
    """409: the object already exists (``reason`` AlreadyExists) or was changed meanwhile."""


class Gone(ApiError):
    """410: a watch's or list's resourceVersion is too old (Expired): list again."""


class TooManyRequests(ApiError):
    """429: the server asks to slow down; retried until the budget ends, after ``Retry-After``."""


class NoResponse(ApiError):
    """No answer (status 0): a time-out, or a connection refused, reset or dropped.

    ``delivered`` is False only when no connection was made, so the server cannot have acted
    on the request; ``permanent`` marks failures that retrying cannot fix (TLS, a bad URL).
    """

    def __init__(self, what: str, cause: BaseException, *, delivered: bool, permanent: bool = False) -> None:
        super().__init__(0, {"message": f"the API did not answer ({cause!r})"}, what)
        self.delivered = delivered
        self.permanent = permanent


class MaybeCreated(ApiError):
    """A create gave up without knowing whether the object was made: it may exist.

    Raised when the budget ran out after an attempt with no answer (or a 500, 502, 504) and
    the object could not be looked up since. The caller should remove ``namespace``/``name``
    (``namespace`` is None for cluster-wide objects) or check for it later. ``status``,
    ``body`` and the cause are those of the last failure.
    """

    def __init__(self, last: ApiError, what: str, namespace: str | None, name: str) -> None:
        super().__init__(last.status, last.body, what)
        where = f"{namespace}/{name}" if namespace else name
        self.args = (f"{what}: gave up without knowing whether {where} was created; it may exist ({last})",)
        self.last = last
        self.namespace = namespace
        self.name = name


_BY_STATUS: dict[int, type[ApiError]] = {
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    429: TooManyRequests,
}


def api_error(status: int, body: dict[str, Any], what: str, *, retry_after: str | None = None) -> ApiError:
    """The :class:`ApiError` (or its subclass for ``status``) for a failed response."""
    return _BY_STATUS.get(status, ApiError)(status, body, what, retry_after=retry_after)


def retriable(error: ApiError) -> bool:
    """Whether another attempt may succeed where the one that failed with ``error`` did not."""
    if isinstance(error, NoResponse):
        return not error.permanent
    return error.status in _RETRIABLE


def maybe_applied(error: ApiError) -> bool:
    """Whether the server may have carried out the request that failed with ``error``."""
    if isinstance(error, NoResponse):
        return error.delivered
    return error.status in _MAYBE_APPLIED
