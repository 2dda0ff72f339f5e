"""Fault injection for the fake API server: latency, random errors, one-shot faults.

Tests and benchmarks use it to check that a client survives a slow or failing API server:
a fixed latency per request, random 5xx and 429 answers at given rates from a seeded RNG
(reproducible runs), and a queue of one-shot faults ("the next 2 pod creates get 503").
A fault is decided before the request touches the store, so a failed write changed nothing.
Dropped watches and compaction act on the store and live on the server object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._status import ApiError, injected


@dataclass(slots=True)
class OneShotFault:
    """Answer the next ``count`` requests matching ``verb``/``resource`` (None: any) with ``status``."""

    status: int
    verb: str | None = None
    resource: str | None = None
    count: int = 1
    retry_after: int = 1

    def matches(self, verb: str, resource: str) -> bool:
        return (self.verb is None or self.verb == verb) and (
            self.resource is None or self.resource == resource
        )


class Faults:
    """The fault settings of one fake API server; change them at any time during a test.

    ``latency`` is in seconds and applies to every API request. ``error_rate`` and
    ``throttle_rate`` are probabilities (0..1) of a random 5xx (``error_status``) or a 429 with
    ``Retry-After: 1``.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        error_rate: float = 0.0,
        throttle_rate: float = 0.0,
        error_status: int = 503,
        seed: int | None = 0,
    ) -> None:
        self.latency = latency
        self.error_rate = error_rate
        self.throttle_rate = throttle_rate
        self.error_status = error_status
        self._rng = random.Random(seed)  # noqa: S311 - reproducible faults, not cryptography
        self._one_shot: list[OneShotFault] = []
        self.injected_count = 0

    def reseed(self, seed: int | None) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - see __init__

    def inject(
        self,
        status: int,
        *,
        verb: str | None = None,
        resource: str | None = None,
        count: int = 1,
        retry_after: int = 1,
    ) -> None:
        """Queue a one-shot fault: the next ``count`` matching requests fail with ``status``."""
        if not 400 <= status <= 599:
            raise ValueError(f"a fault must be an HTTP error status, not {status}")
        self._one_shot.append(OneShotFault(status, verb, resource, count, retry_after))

    def clear(self) -> None:
        """Remove queued one-shot faults and switch off latency and random errors."""
        self._one_shot.clear()
        self.latency = 0.0
        self.error_rate = 0.0
        self.throttle_rate = 0.0

    @property
    def pending(self) -> list[OneShotFault]:
        return list(self._one_shot)

    def decide(self, verb: str, resource: str) -> ApiError | None:
        """The error to answer this request with, or None to serve it normally."""
        for fault in self._one_shot:
            if fault.matches(verb, resource):
                fault.count -= 1
                if fault.count <= 0:
                    self._one_shot.remove(fault)
                self.injected_count += 1
                return injected(fault.status, fault.retry_after)
        if self.error_rate or self.throttle_rate:
            draw = self._rng.random()
            if draw < self.error_rate:
                self.injected_count += 1
                return injected(self.error_status)
            if draw < self.error_rate + self.throttle_rate:
                self.injected_count += 1
                return injected(429)
        return None
