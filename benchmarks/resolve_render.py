"""Microseconds per resolve, per render and per spawn of the whole pure path, for every profile.

Run: ``python benchmarks/resolve_render.py [--repeat 5] [--number 2000] [--json out.json]``.
Fixed inputs: for each profile of each instance in profiles/, a user in every group asks for the
profile's defaults with the largest GPU request it allows. The median of the repeats is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from einfra_spawner import (
    Manifests,
    ProfileSet,
    ResolvedOptions,
    ServerIdentity,
    SingleUser,
    UserContext,
    load_profiles,
    render_manifests,
    resolve_options,
)
from einfra_spawner.models import NO_GPU, Profile

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
USER = UserContext(name="Ada Lovelace", groups=frozenset({"gpu", "meta", "projects"}))
# What JupyterHub passes to a single-user server: about a dozen variables.
SINGLE_USER = SingleUser(env=tuple((f"JUPYTERHUB_VAR_{i}", "x" * 40) for i in range(12)))


def request_for(profile: Profile) -> dict[str, Any]:
    gpus = [c for c in profile.gpu.choices if c.id != NO_GPU]
    request: dict[str, Any] = {
        "profile": profile.slug,
        "mounts": [m.id for m in profile.mounts if m.optional],
    }
    if gpus:
        request.update(gpu=gpus[-1].id, gpu_count=str(gpus[-1].max_count))
    return request


class Row(TypedDict):
    """One profile's figures, in microseconds per call."""

    instance: str
    profile: str
    resolve_us: float
    render_us: float
    spawn_us: float


def per_call(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Median microseconds per call."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    rows: list[Row] = []
    for folder in sorted(p for p in PROFILES.iterdir() if (p / "instance.yaml").exists()):
        profiles = load_profiles(folder)
        for profile in profiles.profiles:
            request = request_for(profile)
            identity = ServerIdentity(user=USER.name, server="run", namespace="jhub")
            options = resolve_options(profiles, USER, request)

            def resolve(p: ProfileSet = profiles, r: dict[str, Any] = request) -> ResolvedOptions:
                return resolve_options(p, USER, r)

            def render(o: ResolvedOptions = options, i: ServerIdentity = identity) -> Manifests:
                return render_manifests(o, i, SINGLE_USER)

            def spawn(
                p: ProfileSet = profiles, r: dict[str, Any] = request, i: ServerIdentity = identity
            ) -> Manifests:
                return render_manifests(resolve_options(p, USER, r), i, SINGLE_USER)

            rows.append(
                {
                    "instance": folder.name,
                    "profile": profile.slug,
                    "resolve_us": per_call(resolve, args.number, args.repeat),
                    "render_us": per_call(render, args.number, args.repeat),
                    "spawn_us": per_call(spawn, args.number, args.repeat),
                }
            )
    print(f"{'instance':<10} {'profile':<12} {'resolve µs':>11} {'render µs':>10} {'resolve+render µs':>18}")
    for row in rows:
        print(
            f"{row['instance']:<10} {row['profile']:<12} {row['resolve_us']:>11.1f} "
            f"{row['render_us']:>10.1f} {row['spawn_us']:>18.1f}"
        )
    worst = max(r["spawn_us"] for r in rows)
    print(f"slowest whole pure path: {worst:.1f} µs per spawn (target: under 100 µs)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
