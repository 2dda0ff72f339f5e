"""How the backend's API calls are bounded and retried: the policy, one call's budget, the log.

Part of the backend's API layer, between the typed errors (:mod:`._api_errors`) below and the
resource operations (:mod:`._api`) above, which run every request of a call inside a
:class:`Budget`. Retries are bounded by time, not by a count: a call is retried on 429, 5xx,
time-outs and refused or dropped connections until its deadline (or the policy's budget)
would pass, so a call outlasts an API server restart of a few seconds. The waits grow
exponentially with jitter, so that the callers of a storm do not come back in lock-step, and
honour ``Retry-After``. No I/O here but the waits and the log lines.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass

from ._api_errors import ApiError, NoResponse

__all__ = ["Budget", "RetryNotes", "RetryPolicy"]

#: Seconds between two log lines about retries of the same verb and resource.
_NOTE_EVERY = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How API calls are bounded and retried.

    ``timeout``: seconds one request may take (never beyond the call's deadline).
    ``budget``: seconds a call keeps retrying when its caller gives no deadline.
    ``attempts``: at most this many requests per call (None: only time bounds a call).
    ``backoff``: seconds of the first wait (with jitter, between half of it and all of it);
    the waits double up to ``max_backoff``. ``max_retry_after``: the longest ``Retry-After``
    honoured.
    """

    timeout: float = 10.0
    budget: float = 30.0
    attempts: int | None = None
    backoff: float = 0.1
    max_backoff: float = 3.0
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.budget <= 0:
            raise ValueError("a retry policy needs a positive timeout and budget")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("a retry policy allows at least one attempt")

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first).

        "Equal jitter": a random point in the upper half of the exponential step, so that the
        waits still grow but many callers failing at once spread out. A ``Retry-After`` (in
        seconds, at most ``max_retry_after``) is waited instead, plus up to a fifth of it.
        """
        if retry_after and retry_after.strip().isdigit():
            seconds = min(float(retry_after), self.max_retry_after)
            if seconds > 0:
                return seconds * (1.0 + random.random() / 5)  # noqa: S311 - jitter, not security
        step = min(self.max_backoff, self.backoff * 2.0 ** min(retry, 32))
        return step / 2 + random.random() * step / 2  # noqa: S311 - jitter, not security


class RetryNotes:
    """The log lines about retries, one set per API client: a storm of calls in an outage would
    otherwise write a line per request."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        # (when the last line about retries of this verb and resource was logged, retries since)
        self._notes: dict[str, tuple[float, int]] = {}

    def retrying(self, what: str, subject: str, error: ApiError) -> None:
        """Log a retry at INFO, at most once per ``_NOTE_EVERY`` seconds per verb and resource
        (``what``); the others at DEBUG, counted in the next INFO line."""
        now = time.monotonic()
        last, hidden = self._notes.get(what, (-math.inf, 0))
        if now - last < _NOTE_EVERY:
            self._notes[what] = (last, hidden + 1)
            self.log.debug("%s %s: %s, retrying", what, subject, error)
            return
        self._notes[what] = (now, 0)
        self.log.info(
            "%s %s: %s, retrying (%d other retries of %s not logged since the last such line)",
            what,
            subject,
            error,
            hidden,
            what,
        )


class Budget:
    """The attempts of one call: how long the next request may take, whether and how long to
    wait before another, and the log lines about them.

    ``deadline`` is a :func:`time.monotonic` instant; without one the policy's ``budget``
    (seconds from now) applies.
    """

    def __init__(
        self, policy: RetryPolicy, notes: RetryNotes, what: str, subject: str, deadline: float | None
    ) -> None:
        self.policy = policy
        self.notes = notes
        self.what = what
        self.subject = subject
        self.started = time.monotonic()
        self.deadline = self.started + policy.budget if deadline is None else deadline
        self.sent = 0
        self.retries = 0
        self.last: ApiError | None = None

    def timeout(self) -> float:
        """Seconds the next request may take; raises when the deadline has passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            if self.last is not None:
                raise self.last
            error = TimeoutError("the deadline passed before the request was sent")
            raise NoResponse(self.what, error, delivered=False)
        self.sent += 1
        return min(self.policy.timeout, remaining)

    async def wait(self, error: ApiError) -> bool:
        """Wait before the next attempt after ``error``; False, at once, when the deadline (or
        the policy's attempts) leaves no room for one."""
        self.last = error
        policy = self.policy
        if policy.attempts is not None and self.sent >= policy.attempts:
            return False
        delay = policy.delay(self.retries, error.retry_after)
        if time.monotonic() + delay >= self.deadline:
            return False
        self.retries += 1
        self.notes.retrying(self.what, self.subject, error)
        await asyncio.sleep(delay)
        return True

    def done(self, how: str = "succeeded") -> None:
        if self.sent > 1:
            self.notes.log.info(
                "%s %s: %s after %d attempts in %.1f s",
                self.what,
                self.subject,
                how,
                self.sent,
                time.monotonic() - self.started,
            )

    def gave_up(self, error: ApiError) -> ApiError:
        """Log the end of a call that failed after retries; returns ``error`` to raise."""
        if self.retries:
            self.notes.log.info(
                "%s %s: giving up after %d attempts in %.1f s: %s",
                self.what,
                self.subject,
                self.sent,
                time.monotonic() - self.started,
                error,
            )
        return error
