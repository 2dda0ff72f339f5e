"""End to end through the REST API: a real JupyterHub, a real proxy, the local backend.

Each test uses its own demo user (or its own named server), so the tests share one hub and do not
depend on their order. The users and their groups are the demo's: ada (gpu, meta, projects),
grace (gpu), ben (projects), cleo (none).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from html import unescape
from pathlib import Path

import pytest

from einfra_spawner import OptionsError, ServerNames
from einfra_spawner.demo.auth import DEMO_USERS
from einfra_spawner.form import field_name, request_from_form
from einfra_spawner.options import UserContext
from einfra_spawner.profiles import load_profiles
from einfra_spawner.resolve import resolve_options

from .conftest import Hub, Response

pytestmark = pytest.mark.e2e

DEMO_PROFILES = Path(__file__).resolve().parents[2] / "profiles" / "hub"  # the demo hub's


def home_of(hub: Hub, user: str, server: str) -> Path:
    return hub.home_root / ServerNames(user, server).home


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def refusal_of(user: str, request: dict[str, object]) -> str:
    """The resolver's message for ``request`` by ``user`` (in the demo's groups), from the core
    itself: what the hub must show, word for word, whatever the reference profiles offer today."""
    context = UserContext(name=user, groups=frozenset(DEMO_USERS.get(user, [])))
    with pytest.raises(OptionsError) as refused:
        resolve_options(load_profiles(DEMO_PROFILES), context, request)
    return str(refused.value)


def test_a_spawn_with_options_is_reachable_through_the_proxy(hub: Hub) -> None:
    options = {
        "profile": "jupyterlab",
        "cpu": "4",
        "memory": "16Gi",
        "gpu": "a40",
        "gpu_count": 2,
        "mounts": [],
    }
    response = hub.spawn("ada", "gpus", options)
    assert response.status in (201, 202), response.text
    model = hub.server("ada", "gpus")
    assert model is not None and model["ready"], model
    assert model["user_options"] == options
    status = hub.request("GET", "/user/ada/gpus/api/status")
    assert status.status == 200, status.text
    assert "started" in status.body
    try:
        # Both A40s of the demo inventory are now held: the backend refuses a third, and the
        # refusal reaches the REST caller as its message, with nothing started.
        busy = hub.ask_start("grace", "busy", {"gpu": "a40"})
        assert busy.status == 503, busy.text
        assert busy.body["message"].startswith("Not enough NVIDIA A40 free on this machine")
        assert not (hub.server("grace", "busy") or {}).get("ready")
    finally:
        hub.stop_server("ada", "gpus")
    assert hub.request("GET", "/user/ada/gpus/api/status").status != 200


@pytest.mark.parametrize(
    ("user", "options", "message"),
    [
        ("cleo", {"profile": "jupyterlab", "gpu": "a40"}, "gpu: 'a40' is not allowed; allowed: none"),
        ("cleo", {"image": "cerit.io/x:1 extra"}, "image: 'cerit.io/x:1 extra' is not allowed"),
        (
            "cleo",
            {"image": "cerit.io/x:1.evil.com/y"},
            "image: 'cerit.io/x:1.evil.com/y' is not allowed",
        ),
        ("cleo", {"profile": "jupyterlab", "privileged": True}, "privileged: True is not a request key"),
        ("cleo", {"memory": "1Pi"}, "memory: '1Pi' is not allowed; allowed: "),
        ("grace", {"mounts": ["metacentrum"]}, "mounts: 'metacentrum' is not allowed"),
        ("ben", {"gpu": "a40", "gpu_count": 1}, "gpu: 'a40' is not allowed; allowed: none"),
        ("grace", {"gpu": "h100", "gpu_count": 2}, "gpu_count: 2 is not allowed; allowed: 1"),
        ("cleo", {"profile": "course"}, "profile: 'course' is not allowed; allowed: jupyterlab"),
    ],
)
def test_a_forged_request_gets_a_400_with_the_message_and_starts_nothing(
    hub: Hub, user: str, options: dict[str, object], message: str
) -> None:
    hub.ensure_user(user)
    response = hub.ask_start(user, "forged", options)
    assert response.status == 400, response.text
    assert response.body["message"].startswith(message), response.body
    assert response.body["message"] == refusal_of(user, options)
    model = hub.server(user, "forged")
    assert not (model or {}).get("ready")
    assert not (model or {}).get("pending")
    assert not home_of(hub, user, "forged").exists()  # the backend was never called


def test_the_legacy_body_is_the_request_too(hub: Hub) -> None:
    # Without "user_options", JupyterHub 6 takes the whole body as the request (5 knows no other).
    hub.ensure_user("cleo")
    response = hub.api("POST", "/users/cleo/servers/legacy", {"gpu": "a40"})
    assert response.status == 400, response.text
    assert response.body["message"].startswith("gpu: 'a40' is not allowed")


def test_the_named_server_limit_comes_from_servers_per_user(hub: Hub) -> None:
    # servers_per_user: 5 in profiles/hub: the default server and four named ones.
    hub.ensure_user("lim")
    created = []
    try:
        for index in range(4):
            created.append(f"limit{index}")
            hub.create_server("lim", f"limit{index}")
        # JupyterHub 6 refuses to create a fifth with PUT; 5 creates one only by starting it.
        refused = hub.api("PUT" if hub.rest6 else "POST", "/users/lim/servers/limit4")
        assert refused.status == 400, refused.text
        assert "already has the maximum of 4 named servers" in refused.body["message"]
        started = hub.api("POST", "/users/lim/servers/limit5")
        assert started.status == 400, started.text
    finally:
        for name in created:
            response = hub.api("DELETE", f"/users/lim/servers/{name}", {"remove": True})
            assert response.status in (202, 204), response.text


def test_a_restarted_hub_finds_its_running_server_and_stops_it(hub: Hub) -> None:
    response = hub.spawn("grace", "survivor", {"cpu": "1"})
    assert response.status in (201, 202), response.text
    model = hub.server("grace", "survivor")
    assert model is not None
    pid = model["state"]["server"]["pid"]
    assert pid_alive(pid)

    hub.kill()  # the hub dies; its server does not
    assert pid_alive(pid)
    hub.start()

    model = hub.server("grace", "survivor")
    assert model is not None and model["ready"], model
    status = hub.request("GET", "/user/grace/survivor/api/status")
    assert status.status == 200, status.text
    hub.stop_server("grace", "survivor")
    deadline = time.monotonic() + 15
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid)


def test_reset_home_keeps_the_old_home_aside(hub: Hub) -> None:
    home = home_of(hub, "ben", "data")
    assert hub.spawn("ben", "data", {"profile": "jupyterlab"}).status in (201, 202)
    (home / "results.csv").write_text("1,2,3\n")
    hub.stop_server("ben", "data")

    assert hub.spawn("ben", "data", {"profile": "jupyterlab", "home": "reset"}).status in (201, 202)
    aside = sorted(home.parent.glob(f"{home.name}.reset-*"))
    assert len(aside) == 1
    assert (aside[0] / "results.csv").read_text() == "1,2,3\n"
    assert not (home / "results.csv").exists()
    (home / "new.txt").write_text("kept")
    hub.stop_server("ben", "data")
    # JupyterHub replays the last request for a start without one: the reset is not replayed.
    stopped = hub.server("ben", "data")
    assert stopped is not None
    assert stopped["user_options"] == {"profile": "jupyterlab"}
    assert hub.spawn("ben", "data").status in (201, 202)
    assert (home / "new.txt").read_text() == "kept"
    assert len(sorted(home.parent.glob(f"{home.name}.reset-*"))) == 1
    hub.stop_server("ben", "data")


def _follow_a_spawn(hub: Hub) -> tuple[int | None, list[dict[str, object]], object]:
    """Start grace's server "steps" and read its progress stream from the moment the spawn is
    pending: the start's status, the events, and whether the spawn was still pending when the
    backend's "Starting JupyterLab" step arrived."""
    outcome: list[int] = []
    spawning = threading.Thread(
        target=lambda: outcome.append(hub.spawn("grace", "steps", {"cpu": "1"}).status)
    )
    spawning.start()
    events: list[dict[str, object]] = []
    pending_at_start: object = None
    try:
        hub.wait_for(
            lambda: (hub.server("grace", "steps") or {}).get("pending") == "spawn" or outcome,
            "the spawn to begin",
        )
        # Straight from the hub: the PyPI configurable-http-proxy buffers event streams, so
        # through it every event would arrive at the end (the Node.js proxy streams them).
        request = urllib.request.Request(
            f"http://127.0.0.1:{hub.hub_port}/hub/api/users/grace/servers/steps/progress",
            headers={"Authorization": f"token {hub.token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as stream:
            for line in stream:
                if not line.startswith(b"data:"):
                    continue
                events.append(json.loads(line[5:]))
                message = str(events[-1]["message"])
                if message.startswith("Starting JupyterLab"):
                    # Streamed while it happens, not replayed afterwards.
                    pending_at_start = (hub.server("grace", "steps") or {}).get("pending")
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    finally:
        spawning.join(60)
    return (outcome[0] if outcome else None), events, pending_at_start


def test_the_progress_page_follows_the_backends_steps(hub: Hub) -> None:
    # A stream opened after the spawn has ended shows only "requested" and "ready" (JupyterHub
    # does not replay the steps), which a loaded machine can cause: such a run is tried again,
    # three times at most; a stream that never shows the backend's steps fails the test.
    for _ in range(3):
        status, events, pending_at_start = _follow_a_spawn(hub)
        assert status in (201, 202)
        assert events and events[-1]["ready"], events
        messages = [str(e["message"]) for e in events]
        assert messages[0] == "Server requested"
        if len(messages) > 2:
            break
        hub.stop_server("grace", "steps")
    assert any(m.startswith("Starting JupyterLab") for m in messages), messages
    assert pending_at_start == "spawn"
    progress = [e["progress"] for e in events if "progress" in e]
    assert progress == sorted(progress) and progress[-1] == 100  # type: ignore[type-var]
    hub.stop_server("grace", "steps")


# --- the spawn page: query arguments and a refused form, as a logged-in user meets them ----------
#
# One rule on JupyterHub 5.3 and 6.x (einfra_spawner.asked.query_options): the ``opt-`` keys of
# /hub/spawn's query if there is any, else the plain keys, never JupyterHub's own ``next``.


def spawn_error(page: Response) -> str | None:
    """The error message JupyterHub's spawn page shows (``None``: none), as the user reads it."""
    found = re.search(r'<p class="spawn-error-msg[^"]*">(.*?)</p>', page.text, re.S)
    return None if found is None else unescape(found.group(1)).strip()


@pytest.mark.parametrize("prefix", ["opt-", ""], ids=["opt- keys", "plain keys"])
def test_options_in_the_spawn_page_query_start_the_server_and_reset_its_home(hub: Hub, prefix: str) -> None:
    user = "sq-opt" if prefix else "sq-plain"
    session = hub.log_in(user)
    home = home_of(hub, user, "q")
    query = f"{prefix}profile=jupyterlab&{prefix}cpu=2&next=%2Fhub%2Fhome"
    try:
        session.request("GET", f"/hub/spawn/{user}/q?{query}")
        hub.wait_for(lambda: (hub.server(user, "q") or {}).get("ready"), f"{user}/q to start")
        model = hub.server(user, "q")
        assert model is not None
        assert model["user_options"] == {"profile": "jupyterlab", "cpu": "2"}
        (home / "results.csv").write_text("1,2,3\n")
        hub.stop_server(user, "q")

        # A reset asked in the query acts (this very request asks for it) and is not kept.
        session.request("GET", f"/hub/spawn/{user}/q?{prefix}home=reset&next=%2Fhub%2Fhome")
        hub.wait_for(lambda: (hub.server(user, "q") or {}).get("ready"), f"{user}/q to start again")
        aside = sorted(home.parent.glob(f"{home.name}.reset-*"))
        assert len(aside) == 1, f"the query's reset did not act; the log:\n{hub.log_tail()}"
        assert (aside[0] / "results.csv").read_text() == "1,2,3\n"
        assert not (home / "results.csv").exists()
        assert (hub.server(user, "q") or {})["user_options"] == {}
    finally:
        if (hub.server(user, "q") or {}).get("ready"):
            hub.stop_server(user, "q")


def test_plain_keys_beside_opt_keys_are_no_options(hub: Hub) -> None:
    user = "sq-mixed"
    session = hub.log_in(user)
    home = home_of(hub, user, "m")
    try:
        session.request("GET", f"/hub/spawn/{user}/m?opt-cpu=1&next=%2Fhub%2Fhome")
        hub.wait_for(lambda: (hub.server(user, "m") or {}).get("ready"), f"{user}/m to start")
        (home / "notes.txt").write_text("mine\n")
        hub.stop_server(user, "m")
        # As on JupyterHub 6: with an opt- key present, "home=reset" is not an option.
        session.request("GET", f"/hub/spawn/{user}/m?opt-cpu=2&home=reset&next=%2Fhub%2Fhome")
        hub.wait_for(lambda: (hub.server(user, "m") or {}).get("ready"), f"{user}/m to start again")
        assert (hub.server(user, "m") or {})["user_options"] == {"cpu": "2"}
        assert (home / "notes.txt").read_text() == "mine\n"
        assert sorted(home.parent.glob(f"{home.name}.reset-*")) == []
    finally:
        if (hub.server(user, "m") or {}).get("ready"):
            hub.stop_server(user, "m")


def test_a_refused_query_shows_the_form_with_the_resolvers_message_alone(hub: Hub) -> None:
    user = "sq-refused"
    session = hub.log_in(user)
    # A "%" in the message, as a user may type one: shown as typed (no "%%", no format error).
    page = session.request("GET", f"/hub/spawn/{user}/r?opt-cpu=50%25")
    # JupyterHub 6 answers with the refusal's status; 5 with 200 and the form.
    assert page.status == (400 if hub.rest6 else 200), page.text
    assert spawn_error(page) == f"Error: {refusal_of(user, {'cpu': '50%'})}"
    assert "HTTP 400" not in page.text
    assert 'class="einfra-form' in page.text  # the form, to choose again
    assert not (hub.server(user, "r") or {}).get("ready")
    assert not home_of(hub, user, "r").exists()  # the backend was never called


def test_a_refused_form_post_shows_the_resolvers_message_alone(hub: Hub) -> None:
    user = "sq-form"
    session = hub.log_in(user)
    form = session.request("GET", f"/hub/spawn/{user}/f")
    assert form.status == 200, form.text
    # The page's form posts to itself with the XSRF token in its action's query.
    action = re.search(r'<form[^>]*action="([^"]*_xsrf=[^"]*)"', form.text)
    assert action is not None, form.text
    fields = {"profile": ["jupyterlab"], field_name("jupyterlab", "cpu"): ["50%"]}
    page = session.request(
        "POST", unescape(action.group(1)), urllib.parse.urlencode(fields, doseq=True).encode()
    )
    assert page.status == (400 if hub.rest6 else 200), page.text
    profiles = load_profiles(DEMO_PROFILES)
    expected = refusal_of(user, request_from_form(fields, profiles, UserContext(name=user)))
    assert spawn_error(page) == f"Error: {expected}"
    assert "HTTP 400" not in page.text
    assert not (hub.server(user, "f") or {}).get("ready")
    assert not home_of(hub, user, "f").exists()
