"""Per-user values in storage settings, and the names and labels of the volumes a server owns.

Where it sits: the profile models (:mod:`.models`) check each storage text at load with
:func:`check_template`; the renderer (:mod:`.render`) fills it in with :func:`fill`. The only
placeholders are ``{user}`` and ``{server}``, replaced as plain text by the DNS-safe labels of
:class:`~einfra_spawner.names.ServerNames` (``u-<name>-<digest>``, ``s-<name>-<digest>``): never
``str.format``, never a template engine, so nothing a user types can reach an expression. Every
other brace is refused at load, and each text is checked at load with the longest labels there
can be, so that a claim name or a path is valid for every user once filled in.

The home of a server is a PVC named by its *generation*: 0 for the first home
(``ServerNames.home``), one more at every reset that keeps the old home for a while. Pure: no
clock, no I/O.
"""

from __future__ import annotations

import re

from .labels import OUR_PREFIX
from .names import ServerNames, dns_label

__all__ = [
    "DURATION_SCHEMA",
    "LABEL_HOME_GENERATION",
    "LABEL_KEEP_UNTIL",
    "LABEL_MOUNT",
    "LABEL_REMOVE",
    "LABEL_RESET_AT",
    "PLACEHOLDERS",
    "check_template",
    "fill",
    "format_duration",
    "home_claim_name",
    "parse_duration",
    "sample",
    "user_volume_name",
]

#: The placeholders storage texts may hold.
PLACEHOLDERS = ("{user}", "{server}")

#: On a home PVC: its generation (``"0"`` for the first home of a server).
LABEL_HOME_GENERATION = f"{OUR_PREFIX}home-generation"
#: On a home kept after a reset: when it was reset and until when it is kept (UTC, ``%Y%m%dT%H%M%SZ``).
LABEL_RESET_AT = f"{OUR_PREFIX}reset-at"
LABEL_KEEP_UNTIL = f"{OUR_PREFIX}keep-until"
#: On a per-user PersistentVolume and its claim: the id of the mount it serves, and its
#: template's ``remove`` policy (``with_server`` or ``never``).
LABEL_MOUNT = f"{OUR_PREFIX}mount"
LABEL_REMOVE = f"{OUR_PREFIX}remove"

# The longest labels ServerNames makes (63 characters); every character of a label is one of
# [a-z0-9-], so a text valid with these is valid with any.
_LONGEST_USER = "u" + "a" * 62
_LONGEST_SERVER = "s" + "a" * 62

_DURATION = re.compile(r"(?P<count>[0-9]{1,6})(?P<unit>[smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

#: The JSON Schema of a duration: seconds, or a count with ``s``, ``m``, ``h`` or ``d``.
DURATION_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": "^[0-9]{1,6}[smhd]?$"},
    ],
    "description": "seconds, or a count with a unit: '30m', '12h', '7d'",
}


def check_template(text: str) -> str:
    """``text`` if its only braces are those of ``{user}`` and ``{server}``; else ValueError."""
    rest = text
    for placeholder in PLACEHOLDERS:
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest:
        raise ValueError(
            "the only placeholders are {user} and {server} (replaced as plain text); "
            "no other '{' or '}' may appear"
        )
    return text


def fill(text: str, names: ServerNames) -> str:
    """``text`` with ``{user}`` and ``{server}`` replaced by the DNS-safe labels of ``names``.

    Plain text replacement: the labels hold only ``[a-z0-9-]``, so the result holds no new
    placeholder and nothing is ever evaluated."""
    return text.replace("{user}", names.user_label).replace("{server}", names.server_label)


def sample(text: str) -> str:
    """``text`` filled with the longest labels there can be (to check it at load)."""
    return text.replace("{user}", _LONGEST_USER).replace("{server}", _LONGEST_SERVER)


def parse_duration(value: object) -> int:
    """Seconds from ``7d``, ``12h``, ``30m``, ``45s``, ``0`` or an integer; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '7d', '12h' or 0")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        found = _DURATION.fullmatch(value.strip())
        if found:
            return int(found["count"]) * _UNIT_SECONDS[found["unit"]]
    raise ValueError("must be a duration such as '7d', '12h', '30m' or 0")


def format_duration(seconds: int) -> str:
    """A duration in words, in the largest whole unit: ``7 days``, ``36 hours``, ``90 seconds``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def home_claim_name(names: ServerNames, user: str, server: str, generation: int) -> str:
    """The PVC of a server's home of ``generation``: ``names.home`` for the first, then a name
    of its own for each reset that keeps the old home (a PVC cannot be renamed)."""
    if generation == 0:
        return names.home
    return dns_label("home", user, server, f"r{generation}")


def user_volume_name(instance: str, user: str, server: str, mount: str) -> str:
    """The name of the PersistentVolume (cluster-wide) and of its claim made for one mount of
    one server: unique per instance, user, server and mount, a DNS-1123 label."""
    return dns_label("vol", instance, user, server, mount)
