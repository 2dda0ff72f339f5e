"""A Hypothesis state machine over start, stop and reset-home for several users and servers.

Whatever the order, a reset touches only the home of the server that asked for it, every other
home keeps its identity (its uid), and the pods on the cluster are exactly the running servers.
The reference hub keeps a home a reset replaces (``homes.reset.keep_for``): the server moves to
its home's next generation, as the spawner records it, and every replaced home is still there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from traitlets.config import Config

from einfra_spawner import ServerIdentity, SingleUser, UserContext, render_manifests, resolve_options
from einfra_spawner.backend import StartRequest
from einfra_spawner.storage import home_claim_name
from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes import KubernetesBackend

from ...unit.strategies import instance
from .conftest import create_site_claims, nodes

HUB = instance("hub")
SERVERS = [(user, server) for user in ("ada", "Ada", "Čeněk") for server in ("", "two")]


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.cluster = FakeKubernetes(nodes=nodes())
        self.loop.run_until_complete(self.cluster.start())
        self.loop.run_until_complete(create_site_claims(self.cluster))
        config = Config()
        config.KubernetesBackend.api_url = self.cluster.url
        config.KubernetesBackend.namespace = "default"
        config.KubernetesBackend.delete_grace_seconds = 0
        self.backend = KubernetesBackend(config=config, log=logging.getLogger("test.machine"))
        self.running: dict[tuple[str, str], dict[str, Any]] = {}
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.home_uids: dict[tuple[str, str], str] = {}
        #: The generation of each server's current home (the spawner keeps it in its state),
        #: and how many homes its resets replaced (each kept for homes.reset.keep_for).
        self.generations: dict[tuple[str, str], int] = {}
        self.replaced: dict[tuple[str, str], int] = {}

    def teardown(self) -> None:
        self.loop.run_until_complete(self.backend.close())
        self.loop.run_until_complete(self.cluster.close())
        self.loop.close()

    def request(self, key: tuple[str, str], reset: bool) -> StartRequest:
        user, server = key
        options = resolve_options(HUB, UserContext(name=user), {"home": "reset" if reset else "keep"})
        identity = ServerIdentity(user=user, server=server, home_generation=self.generations.get(key, 0))
        single_user = SingleUser(env=(("JUPYTERHUB_USER", user),))
        return StartRequest(
            identity=identity,
            options=options,
            single_user=single_user,
            manifests=render_manifests(options, identity, single_user),
            state=self.states.get(key, {}),
        )

    def home_uid(self, key: tuple[str, str]) -> str | None:
        names = self.request(key, False).manifests.names
        current = home_claim_name(names, key[0], key[1], self.generations.get(key, 0))
        claim = self.cluster.get("persistentvolumeclaims", "default", current)
        return None if claim is None else str(claim["metadata"]["uid"])

    @rule(key=st.sampled_from(SERVERS), reset=st.booleans())
    def start(self, key: tuple[str, str], reset: bool) -> None:
        if key in self.running:  # JupyterHub never starts a running server; stop it first
            self.stop(key)
        before = self.home_uid(key)
        started = self.loop.run_until_complete(self.backend.start(self.request(key, reset)))
        self.running[key] = self.states[key] = started.state
        self.generations[key] = started.state["home_generation"]
        if reset and before is not None:
            self.replaced[key] = self.replaced.get(key, 0) + 1
        after = self.home_uid(key)
        assert after is not None
        if before is not None:
            assert (after != before) == reset, "a home changed only if, and because, a reset was asked"
        self.home_uids[key] = after

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data())
    def stop_one(self, data: st.DataObject) -> None:
        self.stop(data.draw(st.sampled_from(sorted(self.running))))

    def stop(self, key: tuple[str, str]) -> None:
        identity = ServerIdentity(user=key[0], server=key[1])
        self.loop.run_until_complete(self.backend.stop(identity, self.running.pop(key)))

    @invariant()
    def homes_keep_their_identity(self) -> None:
        for key, uid in self.home_uids.items():
            assert self.home_uid(key) == uid, f"the home of {key} was touched"

    @invariant()
    def replaced_homes_are_kept(self) -> None:
        kept: dict[str, int] = {}
        for claim in self.cluster.objects("persistentvolumeclaims", "default"):
            labels = claim["metadata"].get("labels") or {}
            if labels.get("app.kubernetes.io/component") == "singleuser-old-home":
                kept[labels["einfra-spawner/server"]] = kept.get(labels["einfra-spawner/server"], 0) + 1
        expected = {
            self.request(key, False).manifests.names.server_label: count
            for key, count in self.replaced.items()
        }
        assert kept == expected

    @invariant()
    def pods_are_exactly_the_running_servers(self) -> None:
        expected = sorted(self.request(key, False).manifests.names.pod for key in self.running)
        actual = sorted(
            p["metadata"]["name"]
            for p in self.cluster.objects("pods", "default")
            if not p["metadata"].get("deletionTimestamp")
        )
        assert actual == expected


Lifecycle.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifecycle = Lifecycle.TestCase
