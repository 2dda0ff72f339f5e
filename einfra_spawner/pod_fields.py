"""The checked value types of the pod settings, and the names in the rendered pod they refer to.

Shared by :mod:`.pod_settings`, :mod:`.pod_containers` and :mod:`.pod_affinity`. Each type is a
pydantic annotation that full-matches its rule and says, on failure, what is allowed; the rules
themselves (DNS names, qualified names, absolute paths, quantities, environment variable names)
are :mod:`._model_base`'s, which the profile models use too, so that a rule exists once.
``{user}`` and ``{server}`` are the only placeholders of per-server text
(:func:`fill_placeholders` replaces them as plain text). Pure.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictInt, StrictStr

from ._model_base import (
    _ABS_PATH,
    _DNS_SUBDOMAIN,
    _check,
    _full,
    is_dns_subdomain,
    is_qualified_name,
)
from .names import DNS1123_LABEL, is_dns1123_label, is_label_value

__all__ = [
    "CONTAINER_NAME",
    "HOME_VOLUME",
    "Command",
    "ContainerName",
    "LabelValue",
    "PerServerPath",
    "PerServerText",
    "PortName",
    "PullPolicy",
    "QualifiedName",
    "ResourceName",
    "Weight",
    "fill_placeholders",
]

#: The name of the notebook container in the rendered pod (no init container may take it).
CONTAINER_NAME = "notebook"
#: The name of the home volume in the rendered pod (what ``mount_home`` of an init container
#: mounts).
HOME_VOLUME = "home"

_PLACEHOLDER = re.compile(r"\{(user|server)\}")


def _placeholders_only(value: str) -> str:
    rest = _PLACEHOLDER.sub("", value)
    if "{" in rest or "}" in rest:
        raise ValueError(
            "only {user} and {server} may stand in braces (they are replaced by the user's and the "
            "server's DNS-safe labels); no other brace is allowed"
        )
    return value


def fill_placeholders(text: str, user_label: str, server_label: str) -> str:
    """``text`` with ``{user}`` and ``{server}`` replaced as plain text, in one pass (a label can
    never bring in a placeholder of its own: labels are DNS-safe)."""
    return _PLACEHOLDER.sub(lambda match: user_label if match[1] == "user" else server_label, text)


ResourceName = Annotated[
    StrictStr,
    _check(is_dns_subdomain, "a DNS-1123 subdomain: a-z, 0-9, '-' and '.', at most 253 characters"),
    Field(json_schema_extra={"pattern": f"^{_DNS_SUBDOMAIN.pattern}$", "maxLength": 253}),
]
ContainerName = Annotated[
    StrictStr, _check(is_dns1123_label, "a DNS-1123 label: a-z, 0-9 and '-', at most 63 characters")
]
QualifiedName = Annotated[
    StrictStr, _check(is_qualified_name, "a Kubernetes qualified name such as example.org/team")
]
LabelValue = Annotated[StrictStr, _check(is_label_value, "a label value (at most 63 characters)")]
PerServerText = Annotated[StrictStr, Field(max_length=32768), AfterValidator(_placeholders_only)]
PerServerPath = Annotated[
    StrictStr,
    # The length is Field's to check (and to show in the schema), as for any per-server text.
    _check(_ABS_PATH.fullmatch, "an absolute path starting with '/'"),
    Field(max_length=4096),
    AfterValidator(_placeholders_only),
]
Command = tuple[Annotated[StrictStr, Field(max_length=32768)], ...]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
Weight = Annotated[StrictInt, Field(ge=1, le=100)]
PortName = Annotated[StrictStr, _full(DNS1123_LABEL, "a port name (an IANA service name)", 15)]
