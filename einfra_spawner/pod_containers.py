"""The containers and hooks an operator may add to the single-user pod: init containers and the
notebook container's ``lifecycle`` hooks.

The ``init_containers`` and ``lifecycle`` keys of the pod settings (:mod:`.pod_settings`, which
re-exports these models for the profile reference). Strict models, checked at load; rendered by
:mod:`.render_pod`, which puts every init container under the notebook's restricted security
context whatever the settings say. Pure.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from ._model_base import Bytes, EnvName, Millicores, StrictModel, _check
from .pod_fields import (
    CONTAINER_NAME,
    Command,
    ContainerName,
    PerServerPath,
    PerServerText,
    PortName,
    PullPolicy,
)
from .references import is_image_reference

__all__ = ["HttpGetAction", "InitContainer", "Lifecycle", "LifecycleHandler"]


class HttpGetAction(StrictModel):
    """An HTTP GET to the container itself."""

    path: Annotated[StrictStr, Field(pattern=r"^/[^\s]*$", max_length=2048)]
    port: Annotated[StrictInt, Field(ge=1, le=65535)] | PortName
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"


class LifecycleHandler(StrictModel):
    """One hook: a command run in the container (``exec``) or an HTTP GET (``http_get``)."""

    exec: Annotated[Command, Field(min_length=1)] | None = None
    http_get: HttpGetAction | None = None

    @model_validator(mode="after")
    def _one(self) -> LifecycleHandler:
        if (self.exec is None) == (self.http_get is None):
            raise ValueError("a hook needs exactly one of exec or http_get")
        return self


class Lifecycle(StrictModel):
    """Hooks of the notebook container: ``post_start`` runs right after it starts, ``pre_stop``
    before it is stopped (within the pod's grace period)."""

    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None


class InitContainer(StrictModel):
    """A container run to completion before the notebook starts. It always runs under the same
    restricted security context as the notebook container (non-root, no privilege escalation,
    every capability dropped, the RuntimeDefault seccomp profile): that is not configurable."""

    name: ContainerName
    image: Annotated[
        StrictStr, _check(is_image_reference, "a container image reference such as 'repo/name:tag'")
    ]
    image_pull_policy: PullPolicy | None = Field(
        None, description="Unset: Kubernetes' default for the image's tag."
    )
    command: Command = ()
    args: Command = ()
    env: dict[EnvName, PerServerText] = Field(
        {}, description="Environment variables; {user} and {server} are replaced in values."
    )
    working_dir: PerServerPath | None = None
    # The defaults are written as in a file (and validated), so that the schema and the reference
    # show "100m", not a bare 100 that a file would read as 100 CPUs.
    cpu: Millicores = Field(
        "100m", validate_default=True, description="The CPU request and limit (the same), in CPUs."
    )
    memory: Bytes = Field(
        "256Mi", validate_default=True, description="The memory request and limit (the same)."
    )
    mount_home: StrictBool = Field(
        False, description="Mount the server's home volume at its usual path (profiles with a home)."
    )

    @field_validator("name")
    @classmethod
    def _not_ours(cls, value: str) -> str:
        if value == CONTAINER_NAME:
            raise ValueError(f"{CONTAINER_NAME!r} is the notebook container's name")
        return value
