"""Kubernetes names and label values derived from JupyterHub user and server names.

JupyterHub accepts almost any Unicode string as a user or server name; Kubernetes accepts only
DNS-1123 labels (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63 characters). Every name made here
has a readable part (the name folded to ASCII) and a digest of the exact original, so two different
(user, server) pairs never share a name, even when they fold to the same readable part
("Ana", "ana", "aña"). The digest is 50 bits of SHA-256: a collision needs about 2**25 distinct
pairs in one namespace to become likely, far beyond any hub.

Pure and deterministic: no clock, no randomness.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata

__all__ = [
    "DNS1123_LABEL",
    "ServerNames",
    "dns_label",
    "is_dns1123_label",
    "is_label_value",
    "server_names",
]

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_NOT_ALLOWED = re.compile(r"[^a-z0-9]+")
_MAX_LABEL = 63
_DIGEST_CHARS = 10  # base32: 5 bits a character, 50 bits


def is_dns1123_label(text: str) -> bool:
    """Whether ``text`` is a valid DNS-1123 label (pod, PVC, volume and namespace names)."""
    return len(text) <= _MAX_LABEL and DNS1123_LABEL.fullmatch(text) is not None


def is_label_value(text: str) -> bool:
    """Whether ``text`` is a valid Kubernetes label value."""
    return len(text) <= _MAX_LABEL and _LABEL_VALUE.fullmatch(text) is not None


def _fold(text: str) -> str:
    """A readable ASCII rendering: accents dropped, lower case, runs of anything else as one '-'."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return _NOT_ALLOWED.sub("-", ascii_only).strip("-")


def _digest(*parts: str) -> str:
    # Each part is length-prefixed, so ("ab", "c") and ("a", "bc") never hash alike.
    hasher = hashlib.sha256()
    for part in parts:
        raw = part.encode("utf-8", "surrogatepass")
        hasher.update(len(raw).to_bytes(8, "big"))
        hasher.update(raw)
    return base64.b32encode(hasher.digest()[:7]).decode("ascii").lower()[:_DIGEST_CHARS]


def _join(prefix: str, readable: str, digest: str) -> str:
    room = _MAX_LABEL - len(prefix) - len(digest) - 2
    readable = readable[:room].strip("-")
    return f"{prefix}-{readable}-{digest}" if readable else f"{prefix}-{digest}"


def dns_label(prefix: str, *parts: str) -> str:
    """``prefix-readable-digest``: a DNS-1123 label, unique to the exact ``parts``.

    ``prefix`` must itself be a short DNS-1123 label chosen by the code (never user input); the
    digest covers the parts only, so labels with different prefixes may share it.
    """
    readable = "-".join(p for p in (_fold(part) for part in parts) if p)
    return _join(prefix, readable, _digest(*parts))


class ServerNames:
    """Every name and label value that belongs to one (user, server) pair."""

    __slots__ = ("home", "pod", "server_label", "user_label")

    def __init__(self, user: str, server: str) -> None:
        user_part, server_part = _fold(user), _fold(server)
        readable = f"{user_part}-{server_part}" if user_part and server_part else user_part or server_part
        pair = _digest(user, server)
        self.pod = _join("jupyter", readable, pair)
        self.home = _join("home", readable, pair)
        # Label values identify the owner exactly (the digest covers the raw name), so a selector on
        # them can never match another user's objects.
        self.user_label = _join("u", user_part, _digest(user))
        self.server_label = _join("s", readable, pair)


def server_names(user: str, server: str) -> ServerNames:
    """The names for ``user``'s server ``server`` (``""`` is the default server)."""
    return ServerNames(user, server)
