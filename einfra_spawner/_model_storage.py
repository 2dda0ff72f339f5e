"""The profile file models of storage: homes, mounts and their sources, PersistentVolume
templates, shared memory and the instance's home policy. Private: :mod:`einfra_spawner.models` is
the public surface.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictStr,
    model_validator,
)

from ._model_base import (
    _ABS_PATH,
    _DNS_SUBDOMAIN,
    _QUANTITY_SCHEMA,
    _SLUG,
    SHM_PATH,
    AbsPath,
    Bytes,
    FreshJsonSchema,
    Groups,
    Text,
    _full,
    _Strict,
)
from .storage import DURATION_SCHEMA, check_template, parse_duration, sample

# --- storage -----------------------------------------------------------------------------------


def _template(check: Any, what: str, max_len: int) -> Any:
    """A text in which ``{user}`` and ``{server}`` may stand for the DNS-safe labels: no other
    brace, and valid as ``what`` once filled with the longest labels there can be."""

    def validate(value: Any) -> Any:
        if isinstance(value, str):
            check_template(value)
            filled = sample(value)
            if len(filled) > max_len or not check(filled):
                raise ValueError(f"must be {what} (with {{user}} and {{server}} filled in)")
        return value

    return BeforeValidator(validate)


def _relative(path: str) -> bool:
    return bool(path) and not path.startswith("/") and ".." not in path and "\x00" not in path


ClaimNameTemplate = Annotated[
    StrictStr, _template(_DNS_SUBDOMAIN.fullmatch, "a PVC name (a DNS subdomain)", 253)
]
SecretNameTemplate = Annotated[
    StrictStr, _template(_DNS_SUBDOMAIN.fullmatch, "a secret name (a DNS subdomain)", 253)
]
PathTemplate = Annotated[
    StrictStr, _template(_ABS_PATH.fullmatch, "an absolute path starting with '/'", 4096), Field(min_length=1)
]
SubPathTemplate = Annotated[
    StrictStr, _template(_relative, "a relative path without '..'", 4096), Field(min_length=1)
]
ValueTemplate = Annotated[StrictStr, _template(lambda _: True, "a text", 4096)]
Seconds = Annotated[int, BeforeValidator(parse_duration), FreshJsonSchema(DURATION_SCHEMA)]
AccessModes = tuple[Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"], ...]


class HomeOption(_Strict):
    """A persistent home per server. ``reset``: ``never``; ``allowed`` (the user may ask for an
    empty home when starting; what happens to the old one is the instance's ``homes.reset``);
    ``always`` (a fresh home at every start, as for a course)."""

    size: Bytes
    storage_class: Annotated[StrictStr, _full(_DNS_SUBDOMAIN, "a storage class name", 253)] | None = None
    mount_path: AbsPath = "/home/jovyan"
    access_modes: tuple[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"], ...] = (
        "ReadWriteOnce",
    )
    reset: Literal["never", "allowed", "always"] = "never"


class PvcSource(_Strict):
    """An existing PersistentVolumeClaim (e.g. a group's project directory, or ``home-{user}``
    made by the operators for each user)."""

    claim_name: ClaimNameTemplate


class NfsSource(_Strict):
    """An NFS export; ``path`` may hold ``{user}`` and ``{server}`` (or use the mount's
    ``sub_path`` on a shared export, the commonest shared home)."""

    server: Annotated[StrictStr, Field(min_length=1, max_length=253)]
    path: PathTemplate


class CsiSource(_Strict):
    """An inline CSI volume. ``secret`` names the per-user secret with the credentials (the
    kubelet hands it to the driver). ``{user}`` and ``{server}`` may appear in ``secret`` and
    in the values of ``volume_attributes``, replaced as plain text (never evaluated).
    ``register_first``: what the user must do before choosing this mount (shown in the form,
    and given as the reason when the secret is missing)."""

    driver: Annotated[StrictStr, _full(_DNS_SUBDOMAIN, "a CSI driver name", 253)]
    volume_attributes: dict[StrictStr, ValueTemplate] = {}
    secret: SecretNameTemplate | None = None
    fs_type: StrictStr | None = None
    register_first: Text | None = None


class PvTemplate(_Strict):
    """A PersistentVolume made for each server that mounts it, for CSI drivers that take their
    settings only from a PersistentVolume (e.g. csi-sshfs). The backend creates the PV and a
    claim bound to it at start, labelled as this hub's, and removes both according to
    ``remove``: ``with_server`` (when the server is deleted) or ``never``.

    ``{user}`` and ``{server}`` may appear in ``secret`` and in ``volume_attributes`` values.
    ``secret_attribute``: the volume attribute that receives ``<namespace>/<secret>`` (csi-sshfs
    reads its key from ``privateKey``); without it the secret is the PV's
    ``nodePublishSecretRef``. A start whose secret is missing fails at once with
    ``register_first`` (also shown in the form). The PV's reclaim policy is ``Retain``: deleting
    it never deletes data on the storage."""

    driver: Annotated[StrictStr, _full(_DNS_SUBDOMAIN, "a CSI driver name", 253)]
    volume_attributes: dict[StrictStr, ValueTemplate] = {}
    secret: SecretNameTemplate | None = None
    secret_attribute: Annotated[StrictStr, Field(min_length=1, max_length=253)] | None = None
    register_first: Text | None = None
    fs_type: StrictStr | None = None
    size: Bytes = 1024**3
    access_modes: AccessModes = ("ReadWriteMany",)
    storage_class: Annotated[StrictStr, Field(max_length=253)] = ""
    mount_options: tuple[Annotated[StrictStr, Field(min_length=1, max_length=253)], ...] = ()
    remove: Literal["with_server", "never"] = "with_server"

    @model_validator(mode="after")
    def _check(self) -> PvTemplate:
        if self.secret_attribute is not None and self.secret is None:
            raise ValueError("secret_attribute needs a secret")
        if self.storage_class and not _DNS_SUBDOMAIN.fullmatch(self.storage_class):
            raise ValueError("storage_class must be a storage class name, or '' for none")
        return self


class Mount(_Strict):
    """An extra volume: fixed for everyone in ``groups``, or ``optional`` (chosen in the request).
    ``sub_path`` may hold ``{user}`` and ``{server}``: a shared volume with a folder per user."""

    id: Annotated[StrictStr, _full(_SLUG, "a lower-case DNS label of at most 40 characters", 40)]
    display_name: Text | None = None
    description: Text | None = None
    groups: Groups = ()
    optional: StrictBool = False
    default: StrictBool = False
    mount_path: AbsPath
    sub_path: SubPathTemplate | None = None
    read_only: StrictBool = False
    pvc: PvcSource | None = None
    nfs: NfsSource | None = None
    csi: CsiSource | None = None
    pv: PvTemplate | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Mount:
        sources = [s for s in (self.pvc, self.nfs, self.csi, self.pv) if s is not None]
        if len(sources) != 1:
            raise ValueError("a mount needs exactly one of pvc, nfs, csi or pv")
        if self.default and not self.optional:
            raise ValueError("default applies only to optional mounts")
        if self.mount_path.rstrip("/") == SHM_PATH:
            raise ValueError(f"{SHM_PATH} is the profile's shared memory (the 'shm' key)")
        return self


class ShmOption(_Strict):
    """A memory-backed ``/dev/shm`` (the container default is 64 MB, too small for PyTorch's
    DataLoader): ``memory`` sizes it to the memory limit the user chose, or give a size. It
    counts against the memory limit as it fills."""

    scalar_schema = {
        "anyOf": [{"const": "memory"}, _QUANTITY_SCHEMA],
        "description": "'memory' (the memory limit) or a size such as '2Gi'",
    }

    size: Literal["memory"] | Bytes = "memory"

    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        return data if isinstance(data, dict) else {"size": data}


class HomeReset(_Strict):
    """What a reset does with the old home: kept for ``keep_for`` (labelled with the user, the
    server and the reset time, then removed by the reconciler), or deleted at once with 0."""

    keep_for: Seconds = 7 * 86400


class Homes(_Strict):
    """The instance's homes. ``on_delete``: when a named server or a user is deleted, ``keep``
    their homes (a server re-created with the same name gets its home back) or ``delete`` them
    (with the homes kept after resets)."""

    on_delete: Literal["keep", "delete"] = "keep"
    reset: HomeReset = HomeReset()
