"""Hypothesis strategies shared by the property tests: users, requests of any shape, names, and
whole generated instances (``instance_specs``)."""

from __future__ import annotations

import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from einfra_spawner import REQUEST_KEYS, ProfileSet, UserContext, load_profiles, parse_profile_set
from einfra_spawner.models import NO_GPU
from einfra_spawner.quantities import format_cpu, format_memory

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
INSTANCES = ("hub", "course", "ai")
KNOWN_GROUPS = ("gpu", "meta", "projects", "course-r", "staff")


@cache
def instance(name: str) -> ProfileSet:
    """A reference instance, loaded once per test session."""
    return load_profiles(PROFILES_DIR / name)


#: A profile whose custom pattern accepts any reference, so that it also matches the references of
#: the choices limited to group ``lic`` (issue 11). The ``shared`` image is offered to everyone by
#: ``shared-open`` and to ``lic`` by ``shared-lic``.
GATED_PROFILE = textwrap.dedent(
    """\
    slug: lab
    display_name: Lab
    image:
      choices:
        - {id: open, image: "cerit.io/hubs/open:1"}
        - {id: licensed, image: "cerit.io/hubs/licensed:1", groups: [lic]}
        - {id: hub-tool, image: "licensed-tool", groups: [lic]}
        - {id: pinned, image: "cerit.io/hubs/pinned@sha256:%s", groups: [lic]}
        - {id: shared-open, image: "cerit.io/hubs/shared:1"}
        - {id: shared-lic, image: "cerit.io/hubs/shared:1", groups: [lic]}
      custom:
        pattern: '(?:[A-Za-z0-9.-]+/)?[a-z0-9/._-]+(?::[A-Za-z0-9._-]+)?(?:@sha256:[0-9a-f]{64})?'
    cpu: [1]
    memory: [1Gi]
    """
    % ("a" * 64)
)

#: For each choice of ``GATED_PROFILE``: references a container runtime reads as its image.
SAME_IMAGE = {
    "open": ("cerit.io/hubs/open:1",),
    "licensed": ("cerit.io/hubs/licensed:1", "CERIT.IO/hubs/licensed:1", " cerit.io/hubs/licensed:1\n"),
    "hub-tool": (
        "licensed-tool",
        "licensed-tool:latest",
        "library/licensed-tool",
        "docker.io/licensed-tool",
        "docker.io/library/licensed-tool:latest",
        "index.docker.io/library/licensed-tool",
    ),
    "pinned": (
        f"cerit.io/hubs/pinned@sha256:{'a' * 64}",
        f"cerit.io/hubs/pinned:1@sha256:{'a' * 64}",
    ),
    "shared-open": ("cerit.io/hubs/shared:1",),
    "shared-lic": ("cerit.io/hubs/shared:1",),
}


@cache
def gated_instance(admins_bypass_groups: bool = False) -> ProfileSet:
    """An instance of one profile, ``GATED_PROFILE``."""
    bypass = "true" if admins_bypass_groups else "false"
    instance_file = f"name: gated\ndisplay_name: Gated\nadmins_bypass_groups: {bypass}\n"
    return parse_profile_set({"instance.yaml": instance_file, "lab.yaml": GATED_PROFILE})


def _plausible_values(profiles: ProfileSet) -> dict[str, list[Any]]:
    """Every value the instance's files mention for each key (granted or not to a given user)."""
    values: dict[str, list[Any]] = {key: [] for key in REQUEST_KEYS}
    for profile in profiles.profiles:
        values["profile"].append(profile.slug)
        values["image"] += [c.id for c in profile.image.choices]
        values["image"] += [c.image for c in profile.image.choices]
        for choice in profile.gpu.choices:
            values["gpu"].append(choice.id)
            values["gpu_count"] += list(range(0, choice.max_count + 2))
            if choice.cpu:
                values["cpu"] += [format_cpu(c.value) for c in choice.cpu.choices]
            if choice.memory:
                values["memory"] += [format_memory(c.value) for c in choice.memory.choices]
        values["cpu"] += [format_cpu(c.value) for c in profile.cpu.choices]
        values["cpu"] += [c.value / 1000 for c in profile.cpu.choices]
        values["memory"] += [format_memory(c.value) for c in profile.memory.choices]
        values["memory"] += [str(c.value) for c in profile.memory.choices]
        # A range: its bounds, default and neighbours (one step and one unit off the grid).
        for key, option, fmt in (("cpu", profile.cpu, format_cpu), ("memory", profile.memory, format_memory)):
            if option.min is not None and option.max is not None:
                step = option.range_step
                edges = {option.min, option.max, option.default_value()}
                near = {v + d for v in edges for d in (-step, step, -1, 1) if v + d > 0}
                values[key] += [fmt(v) for v in sorted(edges | near)]
        values["mounts"] += [m.id for m in profile.mounts]
    values["home"] += ["keep", "reset"]
    values["image"] += [
        "cerit.io/hubs/custom:1.0",
        "cerit.io/x:1 extra",
        "cerit.io/x:1.evil.com/y",
        "evil.io/cerit.io/x:1",
        "cerit.io.evil.com/x:1",
    ]
    return values


@cache
def junk() -> st.SearchStrategy[Any]:
    """Values of any JSON-ish shape, including the awkward ones (bool, None, NaN, nesting)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=30),
        st.sampled_from(["", " ", "2", "0", "-1", "1e400", "8Gi", "none", "NaN", "\x00"]),
        st.sampled_from([float("inf"), float("-inf"), float("nan"), 2.0, -0.0, 10**400]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    )


def requests(profiles: ProfileSet) -> st.SearchStrategy[Any]:
    """Requests of any shape: mostly plausible keys and values (so many resolve), often not."""
    plausible = _plausible_values(profiles)

    def value_for(key: str) -> st.SearchStrategy[Any]:
        choices = plausible.get(key) or [""]
        one = st.sampled_from(choices)
        awkward: st.SearchStrategy[Any] = st.sampled_from(
            [float("inf"), float("nan"), 2.0, -0.0, True, None, "", [], {}]
        )
        return st.one_of(one, one.map(lambda v: [str(v)]), st.lists(one, max_size=3), awkward, junk())

    plausible_mapping = st.fixed_dictionaries(
        {},
        optional={key: value_for(key) for key in REQUEST_KEYS},
    )
    odd_keys = st.dictionaries(
        st.one_of(st.text(max_size=12), st.integers(), st.sampled_from(REQUEST_KEYS)),
        junk(),
        max_size=4,
    )
    return st.one_of(plausible_mapping, plausible_mapping, odd_keys, junk())


def users(known_groups: Sequence[str] = KNOWN_GROUPS) -> st.SearchStrategy[UserContext]:
    """Users with any name, any subset of the known groups (plus strangers), admin or not."""
    groups = st.frozensets(st.one_of(st.sampled_from(known_groups), st.text(max_size=8)))
    return st.builds(UserContext, name=st.text(min_size=1, max_size=40), groups=groups, admin=st.booleans())


def hub_names() -> st.SearchStrategy[str]:
    """Any Unicode a JupyterHub user or server name could hold (and some it could not)."""
    return st.one_of(
        st.text(max_size=80),
        st.sampled_from(["", "a", "A", "a-", "-a", "aña", "ana", "Ana", "a.b", "a_b", "äöü", "😀"]),
        st.from_regex(r"[a-z0-9-]{55,70}", fullmatch=True),
    )


# --- generated instances (issue 14, item 10) ---------------------------------------------------
#
# ``instance_specs()`` draws a small but varied instance folder: the YAML text of each file (as an
# operator would write it, short forms included) and, beside it, a plain description of what the
# files mean (``InstanceSpec``). The description is what a test's oracle reads; it never looks at
# the models the loader builds from the files, nor at the resolver's helpers.

Groups = tuple[str, ...]

#: Groups the generated files limit things to ("research team": group names may hold spaces).
GROUP_POOL: Groups = ("g1", "g2", "research team", "ü-lab")
MI = 2**20
GI = 2**30
CPU_MILLICORES = (250, 500, 1000, 1500, 2000, 4000, 8000)
MEMORY_BYTES = (256 * MI, 512 * MI, GI, 2 * GI, 4 * GI, 8 * GI, 500 * 10**6, 10**9)
#: GPU types an instance may declare: id -> extended resource.
GPU_RESOURCES = {"a40": "nvidia.com/gpu", "a100": "nvidia.com/gpu", "mig-1g.10gb": "nvidia.com/mig-1g.10gb"}
IMAGE_IDS = ("std", "ml", "lic", "r-4.4", "x_y")
#: Choice images; two choices may share one, so that one image can be both open and gated.
IMAGE_REFERENCES = ("reg.example/open:1", "reg.example/base:2", "reg.example/ml:3", "reg.example/lic:4")
CUSTOM_PATTERNS = (
    r"custom\.example/[a-z0-9-]+:[0-9]+",  # strict: a digit tag
    r"custom\.example/.+",  # loose: also matches text that is no image reference
    r"(?:custom|reg)\.example/[a-z0-9/._-]+(?::[A-Za-z0-9._-]+)?",  # the choices' images too
    r"custom\.example/tool:1|reg\.example/open:1",  # an alternation: a full match takes either whole
)
#: Custom references that are valid image references; whether a pattern admits them varies.
CUSTOM_REFERENCES = (
    "custom.example/tool:1",
    "custom.example/a/b:22",
    "custom.example/tool",
    "custom.example/tool:1.0-rc",
    "custom.example/tool@sha256:" + "b" * 64,
    "custom.example/tool:1x",  # a prefix of it matches the strict pattern
    "evil.example/custom.example/tool:1",  # it contains a match
    "xcustom.example/tool:1",  # it ends with a match
)
#: Requested "images" that are no image reference at all (Docker's grammar: a lower-case path, a
#: non-empty tag without '/', no spaces), though the loose pattern matches some of them as a whole.
NOT_REFERENCES = (
    "custom.example/tool:1 extra",
    "custom.example/tool:1.evil.example/x",
    "custom.example/Tool:1",
    "custom.example/tool:",
    "custom.example//tool:1",
    "reg.example/open:1\ncustom.example/tool:1",
    "",
)
PROFILE_SLUGS = ("lab", "gpu", "course", "r", "ai-2")
MOUNT_IDS = ("projects", "scratch", "data", "shared")
HOME_MODES = ("never", "allowed", "always")


@dataclass(frozen=True)
class QuantitySpec:
    """CPU (millicores) or memory (bytes): the choices in file order, each with its groups."""

    choices: tuple[tuple[int, Groups], ...]
    default: int | None = None  # the file's ``default`` key (None: not written)
    guarantee: int | None = None


@dataclass(frozen=True)
class ImageSpec:
    """Image choices ``(id, reference, groups)`` in file order, and the custom images allowed."""

    choices: tuple[tuple[str, str, Groups], ...]
    default: str | None = None  # the file's ``default`` key
    custom_pattern: str | None = None
    custom_groups: Groups = ()


@dataclass(frozen=True)
class GpuSpec:
    """One GPU choice of a profile (``none`` for no GPU)."""

    id: str
    max_count: int = 1
    groups: Groups = ()
    cpu: QuantitySpec | None = None  # when given, replaces the profile's
    memory: QuantitySpec | None = None


@dataclass(frozen=True)
class MountSpec:
    id: str
    mount_path: str
    groups: Groups = ()
    optional: bool = False
    default: bool = False


@dataclass(frozen=True)
class ProfileSpec:
    slug: str
    groups: Groups
    image: ImageSpec
    cpu: QuantitySpec
    memory: QuantitySpec
    gpus: tuple[GpuSpec, ...]  # in file order; just ``none`` when the file has no ``gpu`` key
    gpu_default: str | None  # the file's ``gpu.default`` key
    home: str | None  # the home's ``reset`` mode; None: no home
    mounts: tuple[MountSpec, ...]


@dataclass(frozen=True)
class InstanceSpec:
    """A generated instance: what its files say, and the files themselves."""

    profiles: tuple[ProfileSpec, ...]  # in the order the instance offers them
    default_profile: str | None
    admins_bypass_groups: bool
    gpu_types: tuple[tuple[str, str], ...]  # (id, resource)
    files: tuple[tuple[str, str], ...]  # (file name, YAML text)

    def profile(self, slug: str) -> ProfileSpec | None:
        return next((p for p in self.profiles if p.slug == slug), None)


def cpu_spellings(millicores: int) -> list[Any]:
    """Ways to write a CPU count in a file or a request: ``2``, ``"2"``, ``"2000m"``, ``2.0``..."""
    spellings: list[Any] = [f"{millicores}m", millicores / 1000, str(millicores / 1000)]
    if millicores % 1000 == 0:
        spellings += [millicores // 1000, str(millicores // 1000)]
    return spellings


def memory_spellings(size: int) -> list[Any]:
    """Ways to write a memory size: ``"1Gi"``, ``"1024Mi"``, bytes as a number or a string..."""
    spellings: list[Any] = [size, str(size)]
    for suffix, unit in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("M", 10**6), ("G", 10**9)):
        if size % unit == 0:
            spellings.append(f"{size // unit}{suffix}")
    return spellings


_FLIP = st.booleans()
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@cache
def _sampled(keyed: tuple[tuple[type, Any], ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from([value for _, value in keyed])


@cache
def _subsets(
    keyed: tuple[tuple[type, Any], ...], min_size: int, max_size: int
) -> st.SearchStrategy[list[Any]]:
    return st.lists(_sampled(keyed), min_size=min_size, max_size=max_size, unique=True)


def _key(values: Sequence[Any]) -> tuple[tuple[type, Any], ...]:
    # Keyed by type too: (1,) == (1.0,) == (True,), but they are not the same choices.
    return tuple((type(v), v) for v in values)


# Strategies are built once per set of values: building them inside every draw costs more than
# the drawing (Hypothesis computes and caches properties of each new strategy object).
def _flip(draw: st.DrawFn) -> bool:
    return draw(_FLIP)


def _pick(draw: st.DrawFn, values: Sequence[Any]) -> Any:
    return draw(_sampled(_key(values)))


def _some(draw: st.DrawFn, values: Sequence[Any], min_size: int = 0, max_size: int = 4) -> list[Any]:
    return draw(_subsets(_key(values), min_size, max_size))


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_DUMPER, allow_unicode=True, sort_keys=False)


def _maybe_groups(draw: st.DrawFn) -> Groups:
    """No groups about half the time, else one or two of the pool."""
    if _flip(draw):
        return ()
    return tuple(_some(draw, GROUP_POOL, min_size=1, max_size=2))


def _open_default(draw: st.DrawFn, groups: list[Groups]) -> tuple[int, list[Groups]]:
    """The index of the default choice, which must be open to everyone admitted to the profile."""
    if all(groups):
        groups = [(), *groups[1:]]
    return _pick(draw, [i for i, g in enumerate(groups) if not g]), groups


def _quantity_spec(draw: st.DrawFn, values: Sequence[int]) -> QuantitySpec:
    chosen = _some(draw, values, min_size=1, max_size=4)
    index, groups = _open_default(draw, [_maybe_groups(draw) for _ in chosen])
    written = index != 0 or _flip(draw)
    guarantee = _pick(draw, [None, *(v for v in values if v <= min(chosen))])
    return QuantitySpec(
        choices=tuple(zip(chosen, groups, strict=True)),
        default=chosen[index] if written else None,
        guarantee=guarantee,
    )


def _quantity_yaml(draw: st.DrawFn, spec: QuantitySpec, spell: Any) -> Any:
    """A quantity option as a file may write it: a scalar, a list, or a mapping."""

    def choice(value: int, groups: Groups) -> Any:
        written = _pick(draw, spell(value))
        return {"value": written, "groups": list(groups)} if groups else written

    choices = [choice(v, g) for v, g in spec.choices]
    plain = spec.default is None and spec.guarantee is None
    if plain and len(choices) == 1 and not spec.choices[0][1] and _flip(draw):
        return choices[0]
    if plain and _flip(draw):
        return choices
    data: dict[str, Any] = {"choices": choices}
    if spec.default is not None:
        data["default"] = _pick(draw, spell(spec.default))
    if spec.guarantee is not None:
        data["guarantee"] = _pick(draw, spell(spec.guarantee))
    return data


def _image(draw: st.DrawFn) -> tuple[ImageSpec, Any]:
    if _flip(draw):
        reference = _pick(draw, IMAGE_REFERENCES)
        return ImageSpec(choices=(("default", reference, ()),)), reference
    ids = _some(draw, IMAGE_IDS, min_size=1, max_size=4)
    index, groups = _open_default(draw, [_maybe_groups(draw) for _ in ids])
    references = [_pick(draw, IMAGE_REFERENCES) for _ in ids]
    default = ids[index] if index != 0 or _flip(draw) else None
    custom = _pick(draw, [None, *CUSTOM_PATTERNS])
    custom_groups = _maybe_groups(draw) if custom is not None else ()
    spec = ImageSpec(
        choices=tuple(zip(ids, references, groups, strict=True)),
        default=default,
        custom_pattern=custom,
        custom_groups=custom_groups,
    )
    data: dict[str, Any] = {
        "choices": [{"id": i, "image": r, **({"groups": list(g)} if g else {})} for i, r, g in spec.choices]
    }
    if default is not None:
        data["default"] = default
    if custom is not None:
        data["custom"] = {"pattern": custom, **({"groups": list(custom_groups)} if custom_groups else {})}
    return spec, data


def _gpu(draw: st.DrawFn, types: Sequence[str]) -> tuple[tuple[GpuSpec, ...], str | None, Any]:
    """The GPU choices of a profile, and the file's ``gpu`` value (``None``: the key is left out)."""
    form = _pick(draw, ["absent", "scalar", "choices", "choices"])
    if form == "absent":
        return (GpuSpec(NO_GPU),), None, None
    ids = [NO_GPU, *types]
    if form == "scalar":
        gpu_id = _pick(draw, ids)
        return (GpuSpec(gpu_id),), None, gpu_id
    chosen = _some(draw, ids, min_size=1, max_size=4)
    index, groups = _open_default(draw, [_maybe_groups(draw) for _ in chosen])
    gpus = []
    for gpu_id, gpu_groups in zip(chosen, groups, strict=True):
        if gpu_id == NO_GPU:
            gpus.append(GpuSpec(gpu_id, groups=gpu_groups))
            continue
        with_cpu, with_memory = _flip(draw), _flip(draw)
        gpus.append(
            GpuSpec(
                gpu_id,
                max_count=_pick(draw, [1, 2, 3, 4]),
                groups=gpu_groups,
                cpu=_quantity_spec(draw, CPU_MILLICORES) if with_cpu else None,
                memory=_quantity_spec(draw, MEMORY_BYTES) if with_memory else None,
            )
        )
    default = chosen[index] if index != 0 or _flip(draw) else None

    def choice(gpu: GpuSpec) -> Any:
        plain = gpu.max_count == 1 and not gpu.groups and gpu.cpu is None and gpu.memory is None
        if plain and _flip(draw):
            return gpu.id  # the short form: a bare id
        data: dict[str, Any] = {"id": gpu.id}
        if gpu.id != NO_GPU and (gpu.max_count != 1 or _flip(draw)):
            data["max_count"] = gpu.max_count
        if gpu.groups:
            data["groups"] = list(gpu.groups)
        if gpu.cpu is not None:
            data["cpu"] = _quantity_yaml(draw, gpu.cpu, cpu_spellings)
        if gpu.memory is not None:
            data["memory"] = _quantity_yaml(draw, gpu.memory, memory_spellings)
        return data

    choices = [choice(g) for g in gpus]
    if default is None and _flip(draw):
        return tuple(gpus), None, choices
    return tuple(gpus), default, {"choices": choices, **({"default": default} if default else {})}


#: Mount sources a generated profile may use, by kind: fixed ones and ones with the per-user
#: placeholders (plain text: {user} and {server} become the DNS-safe labels), and per-server
#: PersistentVolumes (issue 13, storage).
STORAGE_SOURCES: dict[str, Any] = {
    "pvc": lambda m: {"pvc": {"claim_name": f"{m}-claim"}},
    "pvc-per-user": lambda m: {"pvc": {"claim_name": f"{m}-{{user}}-{{server}}"}},
    "nfs": lambda m: {"nfs": {"server": "nfs.example", "path": f"/export/{m}"}},
    "nfs-per-user": lambda m: {"nfs": {"server": "nfs.example", "path": f"/export/{m}/{{user}}"}},
    "csi": lambda m: {"csi": {"driver": "sshfs.csi.example", "secret": "sshfs-{user}"}},
    "csi-per-user": lambda m: {
        "csi": {
            "driver": "sshfs.csi.example",
            "secret": "sshfs-{user}",
            "volume_attributes": {"share": "/home/{user}", "tag": "{server}"},
        }
    },
    "pv": lambda m: {
        "pv": {
            "driver": "csi-sshfs",
            "volume_attributes": {"user": "{user}", "share": "/home/{user}"},
            "secret": "sshfs-{user}",
            "secret_attribute": "privateKey",
            "size": "10Gi",
            "storage_class": "sshfs",
        }
    },
    "pv-plain": lambda m: {
        "pv": {"driver": "nfs.csi.k8s.io", "volume_attributes": {"server": "n", "share": "/x"}}
    },
}


def _mounts(draw: st.DrawFn) -> tuple[tuple[MountSpec, ...], list[dict[str, Any]]]:
    ids = _some(draw, MOUNT_IDS, max_size=3)
    specs, data = [], []
    for mount_id in ids:
        optional = _flip(draw)
        spec = MountSpec(
            id=mount_id,
            mount_path=f"/mnt/{mount_id}",
            groups=_maybe_groups(draw),
            optional=optional,
            default=optional and _flip(draw),
        )
        source = STORAGE_SOURCES[_pick(draw, sorted(STORAGE_SOURCES))](mount_id)
        item: dict[str, Any] = {"id": mount_id, "mount_path": spec.mount_path, **source}
        sub_path = _pick(draw, [None, "data", "users/{user}", "{user}/{server}"])
        if sub_path is not None:
            item["sub_path"] = sub_path
        if spec.groups:
            item["groups"] = list(spec.groups)
        if optional:
            item["optional"] = True
            if spec.default or _flip(draw):
                item["default"] = spec.default
        specs.append(spec)
        data.append(item)
    return tuple(specs), data


#: Pod settings (issue 13, part 2) a generated file may hold at any level: each level draws a few
#: keys, each with one of these values. Placeholders in env and working_dir; braces in an
#: annotation, where they are plain text; patches that keep the restricted standard.
POD_SETTING_VALUES: dict[str, tuple[Any, ...]] = {
    "image_pull_secrets": (["reg-secret"], ["reg-secret", "other.secret"]),
    "image_pull_policy": ("Always", "IfNotPresent", "Never"),
    "labels": ({"team": "a"}, {"example.org/tier": "gold", "team": "b"}),
    "annotations": ({"example.org/note": "{not a placeholder}"}, {"team": "x"}),
    "priority_class_name": ("low", "gpu-jobs"),
    "affinity": (
        {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
        {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 5, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
                ]
            }
        },
    ),
    "service_account_name": ("singleuser",),
    "automount_service_account_token": (True, False),
    "init_containers": (
        [{"name": "seed", "image": "reg.example/seed:1", "mount_home": True}],
        [
            {
                "name": "seed",
                "image": "reg.example/seed:2",
                "cpu": "50m",
                "memory": "32Mi",
                "env": {"U": "{user}"},
            }
        ],
    ),
    "lifecycle": (
        {"post_start": {"exec": ["true"]}},
        {"pre_stop": {"http_get": {"path": "/", "port": 8888}}},
    ),
    "env": ({"SCRATCH": "/scratch/{user}"}, {"SERVER": "{server}", "CPU_LIMIT": "never wins"}),
    "working_dir": ("/home/jovyan/{server}", "/srv"),
    "pod_patch": ({"spec": {"terminationGracePeriodSeconds": 5}}, {"spec": {"enableServiceLinks": None}}),
    "container_patch": ({"stdin": True}, {"securityContext": {"readOnlyRootFilesystem": True}}),
}


def _pod_settings(draw: st.DrawFn) -> dict[str, Any] | None:
    """The ``pod`` key of one level, or ``None`` (left out) about half the time."""
    if _flip(draw):
        return None
    keys = _some(draw, sorted(POD_SETTING_VALUES), max_size=4)
    return {key: POD_SETTING_VALUES[key][_pick(draw, range(len(POD_SETTING_VALUES[key])))] for key in keys}


def _profile(draw: st.DrawFn, slug: str, types: Sequence[str]) -> tuple[ProfileSpec, dict[str, Any]]:
    groups = _maybe_groups(draw)
    image, image_data = _image(draw)
    cpu = _quantity_spec(draw, CPU_MILLICORES)
    memory = _quantity_spec(draw, MEMORY_BYTES)
    gpus, gpu_default, gpu_data = _gpu(draw, types)
    home = _pick(draw, [None, *HOME_MODES])
    mounts, mounts_data = _mounts(draw)
    data: dict[str, Any] = {"slug": slug, "display_name": slug.upper()}
    if groups:
        data["groups"] = list(groups)
    data["image"] = image_data
    data["cpu"] = _quantity_yaml(draw, cpu, cpu_spellings)
    data["memory"] = _quantity_yaml(draw, memory, memory_spellings)
    if gpu_data is not None:
        data["gpu"] = gpu_data
    if home is not None:
        data["home"] = {"size": "1Gi"}
        if home != "never" or _flip(draw):
            data["home"]["reset"] = home
    if mounts_data:
        data["mounts"] = mounts_data
    shm = _pick(draw, [None, "memory", "64Mi", "2Gi"])
    if shm is not None:
        data["shm"] = shm
    pod = _pod_settings(draw)
    if pod is not None:
        data["pod"] = pod
    spec = ProfileSpec(
        slug=slug,
        groups=groups,
        image=image,
        cpu=cpu,
        memory=memory,
        gpus=gpus,
        gpu_default=gpu_default,
        home=home,
        mounts=mounts,
    )
    return spec, data


@st.composite
def instance_specs(draw: st.DrawFn) -> InstanceSpec:
    """A small valid instance folder and what it means (see ``InstanceSpec``).

    Profiles with and without groups; images fixed, chosen (some gated) or custom; CPU and memory
    fixed or chosen, with guarantees; GPU types with per-profile choices (gated, ``max_count``, own
    CPU and memory); homes that may, must or must not be reset; optional and gated mounts; admins
    who may or may not bypass groups; a default profile or none. Order: the instance offers its
    profiles in the order its ``profiles`` key lists them, else in file-name order.
    """
    types = _some(draw, sorted(GPU_RESOURCES), max_size=3)
    slugs = _some(draw, PROFILE_SLUGS, min_size=1, max_size=4)
    listed = _flip(draw)
    if not listed:
        slugs.sort()  # the files are offered in file-name order
    profiles = [_profile(draw, slug, types) for slug in slugs]
    bypass = _flip(draw)
    default_profile = _pick(draw, [None, *slugs])
    instance_data: dict[str, Any] = {"name": "generated", "display_name": "Generated hub"}
    if bypass or _flip(draw):
        instance_data["admins_bypass_groups"] = bypass
    if default_profile is not None:
        instance_data["default_profile"] = default_profile
    if types:
        instance_data["gpu_types"] = {
            t: {"display_name": t.upper(), "resource": GPU_RESOURCES[t]} for t in types
        }
        for gpu_type in instance_data["gpu_types"].values():
            pod = _pod_settings(draw)
            if pod is not None:
                gpu_type["pod"] = pod
    instance_pod = _pod_settings(draw)
    if instance_pod is not None:
        instance_data["pod"] = instance_pod
    if _flip(draw):
        instance_data["homes"] = {
            "on_delete": _pick(draw, ["keep", "delete"]),
            "reset": {"keep_for": _pick(draw, [0, "12h", "7d", 3600])},
        }
    files = {}
    if listed:
        names = [f"p-{slug}.yml" for slug in slugs]
        instance_data["profiles"] = names
        files["zz-draft.yaml"] = "slug: draft\n"  # not listed, so never read (it is not valid)
    else:
        names = [f"{slug}.yaml" for slug in slugs]
    if any("nfs" in mount for _, data in profiles for mount in data.get("mounts", [])):
        # Inline NFS volumes are outside the restricted Pod Security Standard; an instance that
        # uses them says so (the loader refuses them otherwise).
        instance_data["pod_security"] = "baseline"
    files["instance.yaml"] = _dump(instance_data)
    for name, (_, data) in zip(names, profiles, strict=True):
        files[name] = _dump(data)
    return InstanceSpec(
        profiles=tuple(spec for spec, _ in profiles),
        default_profile=default_profile,
        admins_bypass_groups=bypass,
        gpu_types=tuple((t, GPU_RESOURCES[t]) for t in types),
        files=tuple(sorted(files.items())),
    )


@lru_cache(maxsize=256)
def _load_files(files: tuple[tuple[str, str], ...]) -> ProfileSet:
    with tempfile.TemporaryDirectory(prefix="einfra-instance-") as folder:
        for name, text in files:
            (Path(folder) / name).write_text(text, encoding="utf-8")
        return load_profiles(folder)


def load_spec(spec: InstanceSpec, fresh: bool = False) -> ProfileSet:
    """The generated instance, written to a temporary folder and loaded as a hub would load it.

    Cached by the files' text (shrinking draws the same instance many times); ``fresh`` loads it
    once more, for comparing results across two loads.
    """
    return _load_files.__wrapped__(spec.files) if fresh else _load_files(spec.files)


def spec_values(spec: InstanceSpec) -> dict[str, st.SearchStrategy[Any]]:
    """For each request key, values of a generated instance: those its files mention (open to the
    user or not), values close to them, form-shaped lists, and junk."""
    cpus = {v for p in spec.profiles for v, _ in p.cpu.choices}
    cpus |= {v for p in spec.profiles for g in p.gpus if g.cpu for v, _ in g.cpu.choices}
    memories = {v for p in spec.profiles for v, _ in p.memory.choices}
    memories |= {v for p in spec.profiles for g in p.gpus if g.memory for v, _ in g.memory.choices}
    plausible: dict[str, list[Any]] = {
        "profile": [p.slug for p in spec.profiles] + ["nope", "LAB", ""],
        "image": [i for p in spec.profiles for c in p.image.choices for i in c[:2]]
        + list(CUSTOM_REFERENCES)
        + list(NOT_REFERENCES)
        + ["default", " custom.example/tool:1 ", "x" * 600],
        "cpu": [s for v in sorted(cpus) for s in cpu_spellings(v)]
        + ["3000m", "0", "-1", "lots", 0.0001, "1e3"],
        "memory": [s for v in sorted(memories) for s in memory_spellings(v)] + ["3Gi", "0", "8GB", -1, 1e30],
        "gpu": [NO_GPU, *GPU_RESOURCES, "nope", "A40"],
        "gpu_count": [
            -1,
            0,
            1,
            2,
            3,
            4,
            5,
            "1",
            " 2 ",
            "01",
            "+1",
            1.0,
            2.5,
            float("nan"),
            float("inf"),
            True,
        ],
        "home": ["keep", "reset", "wipe", "KEEP"],
        "mounts": [
            [],
            ["nope"],
            *([m] for m in MOUNT_IDS),
            list(MOUNT_IDS),
            "projects",
            ["", "data"],
            [["data"]],
        ],
    }

    def value_for(key: str) -> st.SearchStrategy[Any]:
        one = st.sampled_from(plausible[key])
        form = one.map(lambda v: [v if isinstance(v, (list, str)) else str(v)])
        return st.one_of(one, one, form, junk())

    return {key: value_for(key) for key in REQUEST_KEYS}


def spec_requests(spec: InstanceSpec) -> st.SearchStrategy[Any]:
    """Requests against a generated instance: each key present or not, with any of
    ``spec_values``; odd keys; and junk that is no mapping at all."""
    mapping = st.fixed_dictionaries({}, optional=spec_values(spec))
    hostile = st.dictionaries(
        st.one_of(st.sampled_from(REQUEST_KEYS), st.text(max_size=8)), junk(), max_size=3
    )
    return st.one_of(mapping, mapping, mapping, hostile, junk())


# --- ranges (issue 13): CPU and memory as {min, max, step, default} ------------------------------


@dataclass(frozen=True)
class RangeSpec:
    """A range as a file writes it (``spelled``) and what it means, in millicores or bytes."""

    minimum: int
    maximum: int
    step: int
    default: int
    spelled: dict[str, Any]


@st.composite
def range_specs(draw: st.DrawFn, key: str = "cpu") -> RangeSpec:
    """A valid CPU (millicores) or memory (bytes) range: max reachable, default on the grid;
    ``step`` and ``default`` sometimes left out (one core / one GiB; the min)."""
    unit = 1000 if key == "cpu" else 2**30
    base = draw(st.sampled_from([1, 250, 500, 1000] if key == "cpu" else [2**20, 256 * 2**20, 2**30, 10**9]))
    written_step = _flip(draw)
    step = base * draw(st.integers(1, 4)) if written_step else unit
    minimum = base * draw(st.integers(1, 64))
    steps = draw(st.integers(0, 200))
    maximum = minimum + steps * step
    default = minimum + draw(st.integers(0, steps)) * step
    spell = cpu_spellings if key == "cpu" else memory_spellings
    spelled: dict[str, Any] = {"min": _pick(draw, spell(minimum)), "max": _pick(draw, spell(maximum))}
    if written_step:
        spelled["step"] = _pick(draw, spell(step))
    if default != minimum or _flip(draw):
        spelled["default"] = _pick(draw, spell(default))
    return RangeSpec(minimum=minimum, maximum=maximum, step=step, default=default, spelled=spelled)
