"""Hypothesis strategies shared by the property tests: users, requests of any shape, names."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from einfra_spawner import REQUEST_KEYS, ProfileSet, UserContext, load_profiles, parse_profile_set
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
        awkward = st.sampled_from([float("inf"), float("nan"), 2.0, -0.0, True, None, "", [], {}])
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
