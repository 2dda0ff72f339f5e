"""EInfraSpawner in-process: JupyterHub's Spawner API over the core and a fake backend.

The spawner is built as JupyterHub builds it (user, hub, orm_spawner, config), with plain
stand-ins for JupyterHub's objects; the backend is a recording fake registered in the spawner's
per-process backend cache. The real hub and the real local backend are in ``tests/e2e``.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tornado import web
from traitlets.config import Config

from einfra_spawner import (
    BackendError,
    EInfraError,
    ProfileError,
    ServerIdentity,
    lifecycle,
)
from einfra_spawner import runtime as runtime_module
from einfra_spawner.backend import (
    BackendBase,
    BackendFeatures,
    Endpoint,
    GpuCapacity,
    ProgressEvent,
    Started,
    StartRequest,
)
from einfra_spawner.form import field_name
from einfra_spawner.hub import configure
from einfra_spawner.models import GpuType
from einfra_spawner.runtime import HubRuntime, use_runtime
from einfra_spawner.spawner import EInfraSpawner
from einfra_spawner.usage import AsyncLedger, Ledger, recorder

from .test_form import RenderedForm

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


class FakeBackend(BackendBase):
    """Records every call; starts succeed unless ``fail`` is set."""

    def __init__(self, *, config: Any = None, log: Any = None) -> None:
        self.config = config
        self.started: list[StartRequest] = []
        self.stopped: list[tuple[ServerIdentity, dict[str, Any]]] = []
        self.polled: list[dict[str, Any]] = []
        self.capacity: dict[str, GpuCapacity] = {}
        self.capacity_delay = 0.0
        #: Capacity calls cut off (cancelled) before they answered.
        self.capacity_cancelled = 0
        self.capacity_error: Exception | None = None
        self.capacity_asked: list[list[str]] = []
        self.fail: str | None = None
        self.stop_fails: str | None = None
        #: When set, a start waits for it (a pod that takes its time); ``begun`` says it waits.
        self.release: asyncio.Event | None = None
        self.begun = asyncio.Event()

    async def start(self, request: StartRequest) -> Started:
        if self.fail:
            raise BackendError(self.fail)
        if self.release is not None:
            self.begun.set()
            await self.release.wait()
        self.started.append(request)
        return Started(Endpoint("127.0.0.1", 4242), {"pid": 7, "server": request.identity.server})

    async def stop(self, identity: ServerIdentity, state: Mapping[str, Any]) -> None:
        if self.stop_fails:
            raise BackendError(self.stop_fails)
        self.stopped.append((identity, dict(state)))

    async def poll(self, identity: ServerIdentity, state: Mapping[str, Any]) -> int | None:
        self.polled.append(dict(state))
        return None if state.get("pid") == 7 else 0

    async def progress(
        self, identity: ServerIdentity, state: Mapping[str, Any]
    ) -> AsyncIterator[ProgressEvent]:
        yield ProgressEvent("Preparing the home folder", 20)
        yield ProgressEvent("Waiting for the server")
        yield ProgressEvent("The server failed", 140, failed=True)

    async def gpu_capacity(self, gpu_types: Mapping[str, GpuType]) -> dict[str, GpuCapacity]:
        self.capacity_asked.append(sorted(gpu_types))
        if self.capacity_error is not None:
            raise self.capacity_error
        try:
            await asyncio.sleep(self.capacity_delay)
        except asyncio.CancelledError:
            self.capacity_cancelled += 1
            raise
        return {name: c for name, c in self.capacity.items() if name in gpu_types}

    async def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def runtime() -> Iterator[HubRuntime]:
    """A fresh hub runtime per test: its own backends and in-memory usage ledgers (one worker
    thread holds each one's connection)."""
    fresh = HubRuntime()
    previous = use_runtime(fresh)
    yield fresh
    use_runtime(previous)
    for ledger in fresh.ledgers.values():
        ledger.shutdown()


@pytest.fixture
def ledgers(runtime: HubRuntime) -> Mapping[str, AsyncLedger]:
    return runtime.ledgers


@pytest.fixture
def backend(runtime: HubRuntime) -> FakeBackend:
    fake = FakeBackend()
    runtime.set_backend("fake", fake)
    return fake


def make_spawner(
    *groups: str,
    admin: bool = False,
    user_options: dict[str, Any] | None = None,
    server: str = "",
    folder: str = "hub",
    name: str = "alice",
    **config: Any,
) -> EInfraSpawner:
    user = SimpleNamespace(
        name=name,
        escaped_name=name,
        groups=[SimpleNamespace(name=g) for g in groups],
        admin=admin,
        url=f"/user/{name}/",
    )
    hub = SimpleNamespace(public_host="", api_url="http://127.0.0.1:8081/hub/api/", base_url="/hub/")
    orm_spawner = SimpleNamespace(
        name=server, display_name=server, user_options=dict(user_options or {}), server=None
    )
    c = Config()
    c.EInfraSpawner.profiles_dir = str(PROFILES / folder)
    c.EInfraSpawner.backend = "fake"
    c.EInfraSpawner.usage_db_url = "sqlite://"
    for key, value in config.items():
        c.EInfraSpawner[key] = value
    return EInfraSpawner(
        user=user,
        hub=hub,
        orm_spawner=orm_spawner,
        config=c,
        user_options=dict(user_options or {}),
        oauth_client_id=f"jupyterhub-user-{name}",
    )


def refusal(error: BaseException) -> tuple[int, str]:
    assert isinstance(error, web.HTTPError)
    return error.status_code, error.jupyterhub_message  # type: ignore[attr-defined]


# --- the form ----------------------------------------------------------------------------------


async def test_the_form_shows_only_what_the_users_groups_grant(backend: FakeBackend) -> None:
    outsider = RenderedForm(await make_spawner().get_options_form())
    assert "jupyterlab--gpu" not in outsider.names()
    member = RenderedForm(await make_spawner("gpu").get_options_form())
    assert "a40" in [c["value"] for c in member.named("jupyterlab--gpu")]


async def test_the_form_remembers_the_last_choices(backend: FakeBackend) -> None:
    spawner = make_spawner("gpu", user_options={"profile": "rstudio", "cpu": "8", "home": "reset"})
    form = RenderedForm(await spawner.get_options_form())
    assert form.checked("profile") == ["rstudio"]
    assert form.selected("rstudio--cpu") == "8"
    assert "checked" not in form.named("rstudio--home")[0]


async def test_last_choices_no_longer_allowed_fall_back_to_the_defaults(
    backend: FakeBackend,
) -> None:
    # The user has left the gpu group since their last start.
    spawner = make_spawner(user_options={"gpu": "a40", "cpu": "8"})
    form = RenderedForm(await spawner.get_options_form())
    assert form.checked("profile") == ["jupyterlab"]
    assert form.value("jupyterlab--cpu") == "2"


async def test_hostile_last_choices_never_reach_the_page(backend: FakeBackend) -> None:
    spawner = make_spawner(user_options={"image": '"><script>alert(1)</script>'})
    html = await spawner.get_options_form()
    assert "<script>alert" not in html
    assert "alert(1)" not in html


async def test_the_form_shows_gpu_capacity(backend: FakeBackend) -> None:
    backend.capacity = {"a40": GpuCapacity("a40", 1, 2)}
    form = RenderedForm(await make_spawner("gpu").get_options_form())
    assert "NVIDIA A40 (up to 2, 1 of 2 free, 38.00 CZK per GPU-hour)" in form.text


async def test_a_slow_backend_never_blocks_the_form(backend: FakeBackend) -> None:
    backend.capacity = {"a40": GpuCapacity("a40", 1, 2)}
    backend.capacity_delay = 30  # far beyond the spawner's patience
    spawner = make_spawner("gpu", gpu_capacity_timeout=0.05)
    form = RenderedForm(await spawner.get_options_form())
    # The form did not wait for the answer: the spawner cut the call off at its own timeout.
    assert len(backend.capacity_asked) == 1
    assert backend.capacity_cancelled == 1
    assert "free" not in form.text
    assert "a40" in [c["value"] for c in form.named("jupyterlab--gpu")]


async def test_a_failing_capacity_call_still_gives_a_form(backend: FakeBackend) -> None:
    backend.capacity_error = RuntimeError("watch broken")
    form = RenderedForm(await make_spawner("gpu").get_options_form())
    assert "free" not in form.text
    assert form.named("profile")


async def test_capacity_is_not_asked_when_the_user_sees_no_gpu(backend: FakeBackend) -> None:
    await make_spawner().get_options_form()  # no group grants a GPU type
    assert backend.capacity_asked == []
    await make_spawner("gpu").get_options_form()  # the same check can fail: "gpu" sees some
    assert backend.capacity_asked != []


async def test_images_do_not_apply_on_a_backend_without_images(backend: FakeBackend) -> None:
    backend.features = BackendFeatures(supports_images=False, description="local processes")
    form = RenderedForm(await make_spawner().get_options_form())
    assert "Images do not apply on this hub (its servers run as local processes)." in form.text
    assert "jupyterlab--image" not in form.names()


async def test_mounts_are_marked_on_a_backend_without_mounts(backend: FakeBackend) -> None:
    backend.features = BackendFeatures(supports_mounts=False, description="local processes")
    form = RenderedForm(await make_spawner("projects").get_options_form())
    assert "Extra storage is not provided on this hub (its servers run as local processes)." in form.text
    assert "Project directories (/home/jovyan/projects) (not provided)" in form.text
    assert "jupyterlab--mounts" not in form.names()
    backend.features = BackendFeatures()
    assert "jupyterlab--mounts" in RenderedForm(await make_spawner("projects").get_options_form()).names()


# --- form posts and query arguments ------------------------------------------------------------


def test_options_from_form_returns_the_flat_request(backend: FakeBackend) -> None:
    spawner = make_spawner("gpu", "projects")
    posted = {
        "_xsrf": ["token"],
        "profile": ["jupyterlab"],
        "jupyterlab--image": ["minimal"],
        "jupyterlab--cpu": ["4"],
        "jupyterlab--memory": ["16Gi"],
        "jupyterlab--gpu": ["a40"],
        "jupyterlab--gpu_count": ["2"],
        "jupyterlab--mounts-shown": ["1"],
        "rstudio--cpu": ["16"],
    }
    assert spawner.run_options_from_form(posted) == {
        "profile": "jupyterlab",
        "image": "minimal",
        "gpu": "a40",
        "gpu_count": "2",
        "cpu": "4",
        "memory": "16Gi",
        "mounts": [],
    }


@pytest.mark.parametrize(
    ("posted", "key"),
    [
        ({"profile": ["jupyterlab"], "jupyterlab--gpu": ["a40"]}, "gpu"),
        ({"profile": ["nope"]}, "profile"),
        ({"profile": ["jupyterlab"], "jupyterlab--memory": ["2Ti"]}, "memory"),
        ({"profile": ["jupyterlab"], "jupyterlab--memory": ["1025"]}, "memory"),  # GiB
        (
            {
                "profile": ["jupyterlab"],
                "jupyterlab--image": [":custom"],
                "jupyterlab--image-custom": ["cerit.io/x:1 extra"],
            },
            "image",
        ),
    ],
)
def test_forged_form_posts_are_refused_with_a_400(
    backend: FakeBackend, posted: dict[str, list[str]], key: str
) -> None:
    with pytest.raises(web.HTTPError) as refused:
        make_spawner().run_options_from_form(posted)
    status, message = refusal(refused.value)
    assert status == 400
    assert message.startswith(f"{key}: ")
    assert "allowed" in message


def test_options_from_query_take_the_rest_keys(backend: FakeBackend) -> None:
    spawner = make_spawner()
    assert spawner.options_from_query({"profile": ["rstudio"], "cpu": ["4"]}) == {
        "profile": "rstudio",
        "cpu": "4",
    }
    with pytest.raises(web.HTTPError) as refused:
        spawner.options_from_query({"gpu": ["a40"]})
    assert refusal(refused.value)[0] == 400


# --- start, stop, poll, progress, state --------------------------------------------------------


async def test_start_resolves_renders_and_starts(backend: FakeBackend) -> None:
    spawner = make_spawner("gpu", user_options={"gpu": "a40", "gpu_count": 2, "cpu": 4})
    assert await spawner.start() == ("127.0.0.1", 4242)
    (request,) = backend.started
    assert request.identity == ServerIdentity(user="alice", server="")
    assert request.options.gpu is not None and request.options.gpu.count == 2
    assert request.options.cpu_limit == 4000
    container = request.manifests.pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert request.single_user.cmd == ("jupyterhub-singleuser",)
    env = dict(request.single_user.env)
    assert env["JUPYTERHUB_USER"] == "alice"
    assert spawner.resolved_options == request.options


async def test_a_refused_request_starts_nothing(backend: FakeBackend) -> None:
    spawner = make_spawner(user_options={"gpu": "a40"})
    with pytest.raises(web.HTTPError) as refused:
        await spawner.run_pre_spawn_hook()
    assert refusal(refused.value) == (400, "gpu: 'a40' is not allowed; allowed: none")
    # Nothing of the refused request is kept: JupyterHub would replay it at a start without body.
    assert spawner.user_options == {} and spawner.orm_spawner.user_options == {}
    skipped_hook = make_spawner(user_options={"gpu": "a40"})
    with pytest.raises(web.HTTPError):  # start() resolves when the hook did not run
        await skipped_hook.start()
    assert backend.started == []


async def test_unknown_keys_are_refused(backend: FakeBackend) -> None:
    spawner = make_spawner(user_options={"profile": "jupyterlab", "privileged": True})
    with pytest.raises(web.HTTPError) as refused:
        await spawner.start()
    status, message = refusal(refused.value)
    assert status == 400
    assert message.startswith("privileged: True is not a request key")


async def test_the_pre_spawn_hook_sees_the_resolved_options(backend: FakeBackend) -> None:
    seen: list[object] = []
    spawner = make_spawner(
        user_options={"profile": "rstudio"},
        pre_spawn_hook=lambda s: seen.append(s.resolved_options.profile),
    )
    await spawner.run_pre_spawn_hook()  # JupyterHub awaits it: the quota check is asynchronous
    assert seen == ["rstudio"]
    await spawner.start()
    assert backend.started[0].options.profile == "rstudio"


async def test_a_backend_error_reaches_the_user_as_its_message(backend: FakeBackend) -> None:
    backend.fail = "No NVIDIA A40 is free right now; try another GPU type or later."
    spawner = make_spawner("gpu", user_options={"gpu": "a40"})
    with pytest.raises(web.HTTPError) as failed:
        await spawner.start()
    assert refusal(failed.value) == (503, backend.fail)


def handled(spawner: EInfraSpawner, *, body: object = None, form: dict[str, list[str]] | None = None) -> None:
    """Give ``spawner`` the HTTP request JupyterHub's handler would (``spawner.handler``)."""
    raw = b"" if body is None else json.dumps(body).encode()
    spawner.handler = SimpleNamespace(
        request=SimpleNamespace(
            method="POST",
            body=raw,
            body_arguments={k: [v.encode() for v in vs] for k, vs in (form or {}).items()},
            query_arguments={},
        )
    )


async def test_a_reset_acts_only_in_the_request_that_asks_for_it(backend: FakeBackend) -> None:
    asked = {"profile": "jupyterlab", "home": "reset", "cpu": 4}
    spawner = make_spawner(user_options=asked)
    handled(spawner, body=asked)
    await spawner.start()
    assert backend.started[0].options.home is not None
    assert backend.started[0].options.home.reset
    # Never stored, so never replayed by a start without a body.
    assert spawner.user_options == {"profile": "jupyterlab", "cpu": 4}
    assert spawner.orm_spawner.user_options == {"profile": "jupyterlab", "cpu": 4}


@pytest.mark.parametrize(
    "request_body",
    [None, {}, {"user_options": None}, {"profile": "jupyterlab"}, "not json"],
    ids=["no body", "empty body", "JupyterHub 6 wrapper without options", "other options", "garbage"],
)
async def test_a_stored_reset_is_never_replayed(backend: FakeBackend, request_body: object) -> None:
    # The stored options still say reset (a hub killed before it stored the cleaned ones, or a
    # PATCH of the options): a start whose own request does not ask for it keeps the home.
    stored = {"profile": "jupyterlab", "home": "reset", "cpu": 4}
    spawner = make_spawner(user_options=stored)
    if request_body == "not json":
        spawner.handler = SimpleNamespace(
            request=SimpleNamespace(method="POST", body=b"{", body_arguments={}, query_arguments={})
        )
    elif request_body is not None:
        handled(spawner, body=request_body)
    await spawner.start()
    assert backend.started[0].options.home is not None
    assert not backend.started[0].options.home.reset
    assert spawner.orm_spawner.user_options == {"profile": "jupyterlab", "cpu": 4}


async def test_a_reset_asked_on_the_form_acts(backend: FakeBackend) -> None:
    spawner = make_spawner()
    form = {"profile": ["jupyterlab"], field_name("jupyterlab", "home"): ["reset"]}
    request = spawner.options_from_form(form)
    assert request.get("home") == "reset", request  # the form's field name, as the page posts it
    spawner = make_spawner(user_options=request)
    handled(spawner, form=form)
    await spawner.start()
    assert backend.started[0].options.home is not None
    assert backend.started[0].options.home.reset


async def test_state_round_trips_so_a_restarted_hub_finds_its_server(
    backend: FakeBackend,
) -> None:
    spawner = make_spawner(server="work")
    assert await spawner.poll() == 0  # never started
    await spawner.start()
    state = spawner.get_state()
    assert state == {
        "backend": "fake",
        "server": {"pid": 7, "server": "work"},
        "usage_interval": 1,
        "home_generation": 0,
    }
    restarted = make_spawner(server="work")
    restarted.load_state(state)
    assert await restarted.poll() is None
    await restarted.stop()
    assert backend.stopped == [(ServerIdentity(user="alice", server="work"), {"pid": 7, "server": "work"})]
    restarted.clear_state()
    # What a server's next start needs outlives the run: which home is its current one.
    assert restarted.get_state() == {"home_generation": 0}
    assert await restarted.poll() == 0


async def test_stopping_a_server_that_never_started_touches_nothing(
    backend: FakeBackend,
) -> None:
    await make_spawner().stop()
    assert backend.stopped == []


async def test_progress_follows_the_backend(backend: FakeBackend) -> None:
    events = [event async for event in make_spawner().progress()]
    assert events == [
        {"message": "Preparing the home folder", "progress": 20},
        {"message": "Waiting for the server"},
        {"message": "The server failed", "progress": 100, "failed": True},
    ]


async def test_the_environment_carries_the_profiles_default_url(backend: FakeBackend) -> None:
    spawner = make_spawner(user_options={"profile": "rstudio"})
    await spawner.start()
    env = dict(backend.started[0].single_user.env)
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/rstudio"
    assert "JUPYTERHUB_DEFAULT_URL" not in make_spawner().get_env()


async def test_renaming_is_refused(backend: FakeBackend) -> None:
    with pytest.raises(web.HTTPError) as refused:
        await make_spawner(server="a").rename("a", "b")
    assert refused.value.status_code == 400


# --- configuration -----------------------------------------------------------------------------


def test_the_backend_is_built_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[FakeBackend] = []

    def factory(*, config: Any, log: Any) -> FakeBackend:
        built.append(FakeBackend(config=config, log=log))
        return built[-1]

    monkeypatch.setattr(runtime_module, "load_backend_class", lambda name: factory)
    first, second = make_spawner(), make_spawner(server="other")
    assert first.backend_object() is second.backend_object()
    assert len(built) == 1
    assert built[0].config is first.config


def test_an_unknown_backend_is_a_clear_error() -> None:
    spawner = make_spawner(backend="nonexistent")
    with pytest.raises(web.HTTPError) as failed:
        spawner.backend_object()
    assert "no backend named 'nonexistent'" in refusal(failed.value)[1]


def test_an_unset_profiles_dir_is_a_clear_error(backend: FakeBackend) -> None:
    spawner = make_spawner(profiles_dir="")
    with pytest.raises(web.HTTPError) as failed:
        spawner.profile_set()
    assert "profiles_dir is not set" in refusal(failed.value)[1]


def test_configure_sets_the_hub_from_the_instance() -> None:
    c = Config()
    profiles = configure(c, PROFILES / "hub", backend="local")
    assert profiles.instance.name == "hub"
    assert c.JupyterHub.spawner_class is EInfraSpawner
    assert c.EInfraSpawner.profiles_dir == str(PROFILES / "hub")
    assert c.EInfraSpawner.backend == "local"
    assert c.JupyterHub.allow_named_servers is True
    assert c.JupyterHub.named_server_limit_per_user == 4  # plus the default server: 5
    course = Config()
    configure(course, PROFILES / "course")
    assert course.JupyterHub.allow_named_servers is False
    assert course.JupyterHub.named_server_limit_per_user == 0


def test_configure_freezes_the_start_up_heap_only_in_a_hub_or_when_asked() -> None:
    gc.unfreeze()
    try:
        configure(Config(), PROFILES / "hub")
        assert gc.get_freeze_count() == 0  # by default only a running JupyterHub, once started
        configure(Config(), PROFILES / "hub", freeze_heap=False)
        assert gc.get_freeze_count() == 0
        configure(Config(), PROFILES / "hub", freeze_heap=True)
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, classes and functions of the hub and its libraries
        gc.collect()
        assert gc.get_freeze_count() == frozen  # a full collection neither scans nor frees them
    finally:
        gc.unfreeze()  # no test leaves the process frozen


async def test_configure_opens_the_usage_ledger_and_warms_the_backend_as_the_hub_starts(
    tmp_path: Path, runtime: HubRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    warmed: list[FakeBackend] = []

    class WarmingBackend(FakeBackend):
        async def warm_up(self) -> None:
            warmed.append(self)

    monkeypatch.setattr(runtime_module, "load_backend_class", lambda name: WarmingBackend)
    url = f"sqlite:///{tmp_path / 'usage.sqlite'}"
    c = Config()
    configure(c, PROFILES / "hub", freeze_heap=False)
    # Set later in the same configuration file, and on the base class: read as traitlets does.
    c.Spawner.usage_db_url = url
    c.EInfraSpawner.backend = "warming"
    assert runtime.ledgers == {} and runtime.backends == {}  # once the configuration file has run
    await asyncio.sleep(0)
    assert list(runtime.ledgers) == [url]
    assert await runtime.ledgers[url].call(Ledger.intervals, 0.0, 1e12, None, (), False) == []
    assert (tmp_path / "usage.sqlite").exists()  # opened (and migrated) before any spawn
    (backend,) = warmed
    assert runtime.backends == {"warming": backend}  # the one every spawner will use
    assert backend.config is c
    await runtime.close()
    assert runtime.ledgers == {} and runtime.backends == {}


def test_configure_stops_at_a_broken_folder(tmp_path: Path) -> None:
    (tmp_path / "instance.yaml").write_text("name: Broken!\ndisplay_name: x\nservers: 2\n")
    (tmp_path / "a.yaml").write_text("slug: a\ndisplay_name: A\nimage: x:1\ncpu: lots\n")
    with pytest.raises(ProfileError) as broken:
        configure(Config(), tmp_path)
    problems = {(Path(p.file).name, p.path) for p in broken.value.problems}
    assert ("instance.yaml", "name") in problems
    assert ("instance.yaml", "servers") in problems
    assert ("a.yaml", "cpu.choices[0].value") in problems
    assert ("a.yaml", "memory") in problems  # missing


def test_configure_refuses_an_unknown_backend() -> None:
    with pytest.raises(EInfraError, match="no backend named 'nope'"):
        configure(Config(), PROFILES / "hub", backend="nope")


def test_every_trait_help_opens_with_a_one_line_summary() -> None:
    for name in ("profiles_dir", "backend", "gpu_capacity_timeout"):
        trait = EInfraSpawner.class_traits()[name]
        assert trait.metadata.get("config") is True
        summary = trait.help.strip().splitlines()[0]
        assert summary.endswith(".") and len(summary) <= 100, name


# --- usage, quotas and metrics ---------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def started(spawner: EInfraSpawner) -> EInfraSpawner:
    """Start as JupyterHub does: the pre-spawn hook (awaited), then ``start``."""
    await spawner.run_pre_spawn_hook()
    await spawner.start()
    return spawner


def test_configure_adds_no_extra_handlers() -> None:
    # JupyterHub.extra_handlers is deprecated: the GPU figures are a service (test_gpu_service.py).
    c = Config()
    mine = ("/api/mine", object)
    c.JupyterHub.extra_handlers = [mine]
    configure(c, PROFILES / "hub")
    assert c.JupyterHub.extra_handlers == [mine]


async def test_a_run_is_recorded_from_start_to_stop(
    backend: FakeBackend, ledgers: dict[str, AsyncLedger]
) -> None:
    from einfra_spawner.usage import Ledger

    successes = sample("einfra_spawn_duration_seconds_count", profile="jupyterlab", outcome="success")
    spawner = await started(
        make_spawner("gpu", "lab", server="work", user_options={"gpu": "a40", "cpu": "4"})
    )
    assert (
        sample("einfra_spawn_duration_seconds_count", profile="jupyterlab", outcome="success")
        == successes + 1
    )
    ledger = ledgers["sqlite://"]
    (running,) = await ledger.call(Ledger.open_intervals, "hub")
    assert (running.user, running.server, running.gpu, running.gpu_count) == ("alice", "work", "a40", 1)
    assert running.cpu_millicores == 4000 and running.groups == ("gpu", "lab")
    assert running.rates.gpu_hour == 38 and running.rates.currency == "CZK"
    assert running.last_seen == running.started  # marked running when the backend answered
    assert await spawner.poll() is None
    seen = await ledger.call(Ledger.get, running.id)
    assert seen is not None and seen.last_seen is not None and seen.last_seen >= running.started
    await spawner.stop()
    assert await ledger.call(Ledger.open_intervals, "hub") == []
    closed = await ledger.call(Ledger.get, running.id)
    assert closed is not None and closed.stopped is not None and closed.stopped >= seen.last_seen


async def test_the_cost_metric_counts_each_stretch_of_running_once(
    backend: FakeBackend, ledgers: dict[str, AsyncLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    from einfra_spawner.usage import Ledger, interval_cost

    clock = [1_700_000_000.0]
    fake_time = SimpleNamespace(time=lambda: clock[0], monotonic=lambda: clock[0])
    monkeypatch.setattr(recorder, "time", fake_time)
    monkeypatch.setattr(lifecycle, "time", fake_time)
    before = sample("einfra_cost_total", profile="jupyterlab", currency="CZK")
    spawner = await started(make_spawner("gpu", server="metered", user_options={"gpu": "a40", "cpu": "4"}))
    clock[0] += 1800
    assert await spawner.poll() is None
    clock[0] += 1800
    assert await spawner.poll() is None
    assert await spawner.poll() is None  # no time passed: nothing more
    # The hub restarts: a new spawner object from the saved state, with no meter of its own.
    restarted = make_spawner("gpu", server="metered", user_options={"gpu": "a40", "cpu": "4"})
    restarted.load_state(spawner.get_state())
    clock[0] += 900
    assert await restarted.poll() is None
    (interval,) = await ledgers["sqlite://"].call(Ledger.open_intervals, "hub")
    clock[0] += 900
    await restarted.stop()
    closed = await ledgers["sqlite://"].call(Ledger.get, interval.id)
    assert closed is not None and closed.stopped == interval.started + 5400
    exact = interval_cost(closed, closed.started, closed.stopped)
    assert exact.gpu == 38 * 1.5  # 38 CZK per A40 hour, 90 minutes
    counted = sample("einfra_cost_total", profile="jupyterlab", currency="CZK") - before
    assert counted == pytest.approx(float(exact.total), rel=1e-9)


async def test_a_server_found_gone_is_closed_where_last_seen(
    backend: FakeBackend, ledgers: dict[str, AsyncLedger]
) -> None:
    from einfra_spawner.usage import Ledger

    spawner = await started(make_spawner(server="gone"))
    state = spawner.get_state()
    # The hub crashed; the server died while it was down; the restarted hub polls it.
    restarted = make_spawner(server="gone")
    restarted.load_state({**state, "server": {"pid": 8}})
    assert await restarted.poll() == 0
    closed = await ledgers["sqlite://"].call(Ledger.get, state["usage_interval"])
    assert closed is not None and closed.stopped == closed.last_seen  # not "now"
    await restarted.stop()  # JupyterHub then stops it: nothing more changes
    assert await ledgers["sqlite://"].call(Ledger.get, state["usage_interval"]) == closed


async def test_quotas_refuse_before_the_backend_is_called(backend: FakeBackend) -> None:
    # profiles/hub: at most 4 GPUs and 5 servers per user.
    two_a40 = {"gpu": "a40", "gpu_count": 2}
    await started(make_spawner("gpu", server="one", user_options=two_a40))
    await started(make_spawner("gpu", server="two", user_options=two_a40))  # 4 of 4: granted
    refusals = sample("einfra_spawn_failures_total", reason="quota")
    third = make_spawner("gpu", server="three", user_options={"gpu": "a40"})
    with pytest.raises(web.HTTPError) as refused:
        await third.run_pre_spawn_hook()
    assert refusal(refused.value) == (
        403,
        "You may use at most 4 GPUs at once on this hub; your running servers use 4 and this one asks for 1.",
    )
    assert len(backend.started) == 2
    assert sample("einfra_spawn_failures_total", reason="quota") == refusals + 1
    await third.stop()  # what JupyterHub does after a refused start: nothing to undo
    await started(make_spawner("gpu", server="three"))  # no GPU: still within 5 servers
    form = RenderedForm(await make_spawner("gpu").get_options_form())
    assert "You run 3 of your 5 servers." in form.text
    assert "You use 4 of your 4 GPUs." in form.text


async def test_a_failed_start_leaves_no_interval(
    backend: FakeBackend, ledgers: dict[str, AsyncLedger]
) -> None:
    from einfra_spawner.usage import Ledger

    backend.fail = "No NVIDIA A40 is free right now."
    spawner = make_spawner("gpu", user_options={"gpu": "a40"})
    await spawner.run_pre_spawn_hook()
    assert len(await ledgers["sqlite://"].call(Ledger.open_intervals, "hub")) == 1  # held while starting
    with pytest.raises(web.HTTPError):
        await spawner.start()
    await spawner.stop()
    assert await ledgers["sqlite://"].call(Ledger.open_intervals, "hub") == []
    assert await ledgers["sqlite://"].call(Ledger.intervals, 0.0, 1e12, None, (), False) == []


async def test_the_form_shows_the_users_cost_and_refreshes_gpu_figures(backend: FakeBackend) -> None:
    backend.capacity = {"a40": GpuCapacity("a40", 0, 2)}
    html = await make_spawner("gpu").get_options_form()
    form = RenderedForm(html)
    assert "Your usage over the last 90 days: 0.00 CZK (CPU 0.00, memory 0.00, GPU 0.00)" in form.text
    assert "You use 0 of your 4 GPUs." in form.text
    assert '<span data-einfra-gpu="a40">0 of 2 free</span>' in html
    assert "/services/gpus/gpus" not in html  # no GPU figures service in this process (test_gpu_service.py)
    assert sample("einfra_gpus_free", gpu="a40") == 0 and sample("einfra_gpus_total", gpu="a40") == 2
    assert await make_spawner("gpu").gpu_figures() == {"a40": {"free": 0, "total": 2, "note": "0 of 2 free"}}


async def test_a_broken_ledger_leaves_the_form_without_figures(backend: FakeBackend) -> None:
    spawner = make_spawner(usage_db_url="nosuchdialect://")
    form = RenderedForm(await spawner.get_options_form())
    assert "Your usage" not in form.text and form.checked("profile") == ["jupyterlab"]


async def test_without_prices_the_form_shows_no_cost(backend: FakeBackend, tmp_path: Path) -> None:
    import shutil

    import yaml

    folder = tmp_path / "hub"
    shutil.copytree(PROFILES / "hub", folder)
    instance = yaml.safe_load((folder / "instance.yaml").read_text())
    del instance["prices"]
    (folder / "instance.yaml").write_text(yaml.safe_dump(instance))
    form = RenderedForm(await make_spawner("gpu", folder=str(folder)).get_options_form())
    assert "Your usage" not in form.text
    assert "You use 0 of your 4 GPUs." in form.text


async def test_a_user_who_may_choose_no_gpu_reads_no_gpu_quota(backend: FakeBackend) -> None:
    form = RenderedForm(await make_spawner().get_options_form())  # in no GPU group
    assert "You run 0 of your 5 servers." in form.text  # the ledger answered
    assert "GPUs" not in form.text


async def test_a_broken_ledger_refuses_starts_with_a_503(backend: FakeBackend) -> None:
    spawner = make_spawner(usage_db_url="sqlite:////nonexistent-folder/usage.sqlite")
    with pytest.raises(web.HTTPError) as refused:
        await spawner.run_pre_spawn_hook()
    status, message = refusal(refused.value)
    assert status == 503 and message.startswith("The usage database of this hub does not answer")
    assert backend.started == []


async def test_an_instance_without_prices_or_quotas_needs_no_ledger(
    backend: FakeBackend, tmp_path: Path, runtime: HubRuntime
) -> None:
    import shutil

    import yaml

    folder = tmp_path / "free"
    shutil.copytree(PROFILES / "course", folder)
    instance = yaml.safe_load((folder / "instance.yaml").read_text())
    del instance["prices"], instance["quotas"]
    (folder / "instance.yaml").write_text(yaml.safe_dump(instance))
    # The same broken database that refuses starts elsewhere: nothing to charge or enforce here.
    spawner = make_spawner(folder=str(folder), usage_db_url="sqlite:////nonexistent-folder/usage.sqlite")
    await started(spawner)
    assert len(backend.started) == 1
    assert spawner.get_state().get("usage_interval") is None
    assert "Your usage" not in RenderedForm(await spawner.get_options_form()).text
    await hub_stops(spawner)
    assert runtime.ledgers == {}  # never opened


# --- the life cycle as JupyterHub drives it: every admitted start that does not run closes ---


async def hub_stops(spawner: EInfraSpawner) -> None:
    """What JupyterHub's ``User.stop`` does (also after a failed start): ``stop`` only when
    ``poll`` says the server runs, then ``clear_state``."""
    if await spawner.poll() is None:
        await spawner.stop()
    spawner.clear_state()


async def open_intervals(ledgers: Mapping[str, AsyncLedger]) -> list[Any]:
    return await ledgers["sqlite://"].call(Ledger.open_intervals, "hub")


async def test_failed_starts_release_their_reservations(
    backend: FakeBackend, ledgers: Mapping[str, AsyncLedger]
) -> None:
    # Four starts the backend refuses, each cleaned up as JupyterHub does (poll, no stop): the
    # quota of 4 GPUs must not count them.
    backend.fail = "This machine has no NVIDIA A40."
    for name in ("a", "b", "c", "d"):
        spawner = make_spawner("gpu", server=name, user_options={"gpu": "a40"})
        with pytest.raises(web.HTTPError) as failed:
            await started(spawner)
        assert refusal(failed.value)[0] == 503
        await hub_stops(spawner)
    assert await open_intervals(ledgers) == []
    backend.fail = None
    granted = await started(make_spawner("gpu", server="e", user_options={"gpu": "a40", "gpu_count": 2}))
    (running,) = await open_intervals(ledgers)
    assert running.server == "e" and running.gpu_count == 2
    await hub_stops(granted)


async def test_a_cancelled_start_releases_its_reservation(
    backend: FakeBackend, ledgers: Mapping[str, AsyncLedger]
) -> None:
    backend.release = asyncio.Event()  # never set: the start waits until cancelled
    spawner = make_spawner("gpu", user_options={"gpu": "a40"})
    await spawner.run_pre_spawn_hook()
    start = asyncio.ensure_future(spawner.start())
    await backend.begun.wait()
    assert len(await open_intervals(ledgers)) == 1  # held while starting
    assert await spawner.poll() == 0  # JupyterHub may look meanwhile: the reservation stays
    assert len(await open_intervals(ledgers)) == 1
    start.cancel()  # JupyterHub 6's start timeout, or the hub shutting down
    with pytest.raises(asyncio.CancelledError):
        await start
    assert await open_intervals(ledgers) == []


async def test_a_start_that_outlasts_start_timeout_is_cancelled_and_released(
    backend: FakeBackend, ledgers: Mapping[str, AsyncLedger]
) -> None:
    # JupyterHub 5 stops waiting at start_timeout without cancelling: the spawner cancels.
    backend.release = asyncio.Event()
    spawner = make_spawner("gpu", user_options={"gpu": "a40"}, start_timeout=1)
    with pytest.raises(web.HTTPError) as failed:
        await started(spawner)
    assert refusal(failed.value) == (503, "Your server did not start within 1 seconds; it was stopped.")
    assert backend.begun.is_set() and backend.started == []
    assert await open_intervals(ledgers) == []


async def test_a_refusing_pre_spawn_hook_releases_the_reservation(
    backend: FakeBackend, ledgers: Mapping[str, AsyncLedger]
) -> None:
    def refuse(spawner: Any) -> None:
        raise web.HTTPError(403, "not today")

    spawner = make_spawner("gpu", user_options={"gpu": "a40"}, pre_spawn_hook=refuse)
    with pytest.raises(web.HTTPError):
        await spawner.run_pre_spawn_hook()
    assert await open_intervals(ledgers) == []
    assert backend.started == []


async def test_a_quota_refusal_keeps_the_last_granted_options(backend: FakeBackend) -> None:
    first = make_spawner("gpu", server="keep", user_options={"gpu": "a40", "cpu": 4})
    await started(first)
    state = first.get_state()
    await hub_stops(first)
    # The same server, after a hub restart, asked for more GPUs than the quota of 4 allows while
    # four others run: the refused request is not what JupyterHub keeps.
    others = [
        await started(make_spawner("gpu", server=f"o{i}", user_options={"gpu": "a40", "gpu_count": 2}))
        for i in range(2)
    ]
    asked = {"gpu": "a40", "gpu_count": 2, "home": "reset", "mounts": ["x"] * 100_000}
    again = make_spawner("gpu", server="keep", user_options=asked)
    again.load_state(state)
    with pytest.raises(web.HTTPError) as refused:
        await again.run_pre_spawn_hook()
    assert refusal(refused.value)[0] in (400, 403)
    assert again.orm_spawner.user_options == {"gpu": "a40", "cpu": 4}
    for other in others:
        await hub_stops(other)


async def test_a_stop_the_backend_cannot_do_now_is_left_to_the_reconciler(
    backend: FakeBackend, ledgers: Mapping[str, AsyncLedger], runtime: HubRuntime
) -> None:
    spawner = await started(make_spawner("gpu", user_options={"gpu": "a40"}))
    backend.stop_fails = "The cluster does not answer (503)."
    # Without a reconciler nobody would remove it later: the stop fails, the usage stays open.
    with pytest.raises(web.HTTPError):
        await spawner.stop()
    assert len(await open_intervals(ledgers)) == 1
    runtime.reconcilers.append(object())  # type: ignore[arg-type]  # "a reconciler runs"
    await spawner.stop()  # accepted: the reconciler removes what no hub knows
    (still_open,) = await open_intervals(ledgers)  # billed until it is really gone
    assert still_open.stopped is None and spawner.get_state().get("usage_interval") is None
