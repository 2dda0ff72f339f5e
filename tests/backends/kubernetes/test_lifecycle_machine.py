"""A Hypothesis state machine over start, stop and reset-home for several users and servers.

Whatever the order, a reset touches only the home of the server that asked for it, every other
home keeps its identity (its uid), and the pods on the cluster are exactly the running servers.
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
from einfra_spawner.testing import FakeKubernetes
from einfra_spawner_kubernetes import KubernetesBackend

from ...unit.strategies import instance
from .conftest import nodes

HUB = instance("hub")
SERVERS = [(user, server) for user in ("ada", "Ada", "Čeněk") for server in ("", "two")]


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.cluster = FakeKubernetes(nodes=nodes())
        self.loop.run_until_complete(self.cluster.start())
        config = Config()
        config.KubernetesBackend.api_url = self.cluster.url
        config.KubernetesBackend.namespace = "default"
        config.KubernetesBackend.delete_grace_seconds = 0
        self.backend = KubernetesBackend(config=config, log=logging.getLogger("test.machine"))
        self.running: dict[tuple[str, str], dict[str, Any]] = {}
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.home_uids: dict[tuple[str, str], str] = {}

    def teardown(self) -> None:
        self.loop.run_until_complete(self.backend.close())
        self.loop.run_until_complete(self.cluster.close())
        self.loop.close()

    def request(self, key: tuple[str, str], reset: bool) -> StartRequest:
        user, server = key
        options = resolve_options(HUB, UserContext(name=user), {"home": "reset" if reset else "keep"})
        identity = ServerIdentity(user=user, server=server)
        single_user = SingleUser(env=(("JUPYTERHUB_USER", user),))
        return StartRequest(
            identity=identity,
            options=options,
            single_user=single_user,
            manifests=render_manifests(options, identity, single_user),
            state=self.states.get(key, {}),
        )

    def home_uid(self, key: tuple[str, str]) -> str | None:
        claim = self.cluster.get(
            "persistentvolumeclaims", "default", self.request(key, False).manifests.names.home
        )
        return None if claim is None else str(claim["metadata"]["uid"])

    @rule(key=st.sampled_from(SERVERS), reset=st.booleans())
    def start(self, key: tuple[str, str], reset: bool) -> None:
        if key in self.running:  # JupyterHub never starts a running server; stop it first
            self.stop(key)
        before = self.home_uid(key)
        started = self.loop.run_until_complete(self.backend.start(self.request(key, reset)))
        self.running[key] = self.states[key] = started.state
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
