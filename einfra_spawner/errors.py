"""The error hierarchy: one root, one class per audience.

* :class:`ProfileError` is for operators: a profile file is broken. It carries every problem found,
  each naming the file, the key path, the bad value and what is allowed.
* :class:`OptionsError` is for users: a request asked for something not allowed. It names the request
  key, the value and the allowed values, and becomes a 400 response or a spawn error message.
* :class:`BackendError` is for users too: a backend could not start or stop a server, said in words a
  scientist can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BackendError", "EInfraError", "OptionsError", "Problem", "ProfileError"]

# User-controlled values end up in messages; a hostile value must not flood a page or a log line.
_MAX_VALUE_CHARS = 80


def describe_value(value: object) -> str:
    """A short, printable representation of a (possibly hostile) value for a message."""
    text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


class EInfraError(Exception):
    """The root of every error raised by einfra-spawner."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a profile file: where it is, what was found and what is allowed."""

    file: str
    path: str
    message: str
    value: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        found = f" (found {self.value})" if self.value is not None else ""
        return f"{where}: {self.message}{found}"


class ProfileError(EInfraError):
    """A profile folder or file is broken; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class OptionsError(EInfraError):
    """A request was refused: ``key`` and ``value`` say what was asked, ``allowed`` what may be asked."""

    def __init__(
        self,
        key: str,
        value: object,
        allowed: Sequence[str] = (),
        *,
        reason: str | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.allowed: tuple[str, ...] = tuple(allowed)
        self.reason = reason
        super().__init__(self._compose())

    def _compose(self) -> str:
        head = f"{self.key}: {describe_value(self.value)} "
        head += self.reason if self.reason else "is not allowed"
        if self.allowed:
            head += "; allowed: " + ", ".join(self.allowed)
        elif not self.reason:
            head += "; nothing can be chosen here"
        return head


class BackendError(EInfraError):
    """A backend failed; the message is written for the person who pressed Start."""
