"""Process mode: a Running pod's command as a local process on its own 127.0.0.N address."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from einfra_spawner.testing import FakeKubernetes

from .core_v1 import CoreV1
from .manifests import pod_body

# A tiny web server: listens where --ip/--port say (after an optional delay) and answers
# with what it sees of its environment. With --ignore-term it outlives SIGTERM, noting each
# one in the file --term-note names (if any).
SERVER = """
import http.server, json, os, signal, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
def note_term(signum, frame):
    if args.get("--term-note"):
        with open(args["--term-note"], "a") as note:
            note.write("SIGTERM\\n")
if args.get("--ignore-term"):
    signal.signal(signal.SIGTERM, note_term)
time.sleep(float(args.get("--delay", "0")))
print("listening", flush=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"home": os.environ["HOME"], "cwd": os.getcwd(),
                           "url": os.environ.get("JUPYTERHUB_SERVICE_URL"),
                           "greeting": os.environ.get("GREETING"),
                           "token": os.environ.get("TOKEN"),
                           "argv": sys.argv[1:]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

http.server.HTTPServer((args["--ip"], int(args["--port"])), Handler).serve_forever()
"""

pytestmark = pytest.mark.fake_k8s(process_mode=True)


def server_pod(name: str, *args: str, **spec: Any) -> dict[str, Any]:
    return pod_body(
        name, command=[sys.executable, "-c", SERVER], args=["--ip=0.0.0.0", "--port=8888", *args], **spec
    )


async def fetch(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


def pid_of(fake: FakeKubernetes, name: str) -> int:
    pod = fake.get("pods", "default", name)
    assert pod is not None and fake.kubelet.processes is not None
    running = fake.kubelet.processes.get(pod["metadata"]["uid"])
    assert running is not None
    return running.process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_pod_answers_on_its_own_address(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    env = [
        {"name": "GREETING", "value": "hello $(WHO)"},
        {"name": "WHO", "value": "later"},
        {"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/user/ada/"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
    ]
    await v1.create_namespaced_secret(
        "default", {"metadata": {"name": "creds"}, "stringData": {"token": "t0ken"}}
    )
    for name in ("one", "two"):  # the same port, on two pod addresses
        await v1.create_namespaced_pod(
            "default", server_pod(name, env=env, readinessProbe={"tcpSocket": {"port": 8888}})
        )
    one = await fake_k8s.wait_for_pod_phase("default", "one", "Running")
    two = await fake_k8s.wait_for_pod_phase("default", "two", "Running")
    ip = one["status"]["podIP"]
    assert ip.startswith("127.") and ip != "127.0.0.1" and ip != two["status"]["podIP"]
    seen = await fetch(f"http://{ip}:8888/")
    assert seen["argv"] == [f"--ip={ip}", "--port=8888"]
    assert seen["url"] == f"http://{ip}:8888/user/ada/"
    assert seen["greeting"] == "hello $(WHO)"  # only variables defined before are expanded
    assert seen["token"] == "t0ken"
    assert seen["home"] == seen["cwd"] and seen["home"].endswith("/home")
    assert seen["home"] != (await fetch(f"http://{two['status']['podIP']}:8888/"))["home"]
    log = await v1.read_namespaced_pod_log("one", "default")
    assert "listening" in log

    pid = pid_of(fake_k8s, "one")
    await v1.delete_namespaced_pod("one", "default")
    await fake_k8s.wait_for(lambda: fake_k8s.get("pods", "default", "one") is None)
    assert not alive(pid)
    await fake_k8s.wait_for(lambda: not Path(seen["home"]).exists())  # removed just after
    with pytest.raises(aiohttp.ClientConnectionError):
        await fetch(f"http://{ip}:8888/")


async def test_running_waits_for_the_readiness_port(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    await v1.create_namespaced_pod(
        "default", server_pod("slow", "--delay=0.3", readinessProbe={"tcpSocket": {"port": 8888}})
    )
    pod = await fake_k8s.wait_for_pod_phase("default", "slow", "Running")
    # Reported Running only once the port accepts connections.
    assert (await fetch(f"http://{pod['status']['podIP']}:8888/"))["argv"]


async def test_exit_codes_end_the_pod(fake_k8s: FakeKubernetes, v1: CoreV1) -> None:
    for name, code in (("fails", 3), ("succeeds", 0)):
        await v1.create_namespaced_pod(
            "default",
            pod_body(
                name, command=[sys.executable, "-c", f"raise SystemExit({code})"], restartPolicy="Never"
            ),
        )
    failed = await fake_k8s.wait_for_pod_phase("default", "fails", "Failed")
    assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    done = await fake_k8s.wait_for_pod_phase("default", "succeeds", "Succeeded")
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    await v1.create_namespaced_pod(
        "default", pod_body("missing", command=["/no/such/binary"], restartPolicy="Never")
    )
    started = await fake_k8s.wait_for_pod_phase("default", "missing", "Failed")
    terminated = started["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")


async def test_sigkill_after_the_grace_period(fake_k8s: FakeKubernetes, v1: CoreV1, tmp_path: Path) -> None:
    note = tmp_path / "term-note"
    await v1.create_namespaced_pod(
        "default",
        server_pod(
            "stubborn", "--ignore-term=1", f"--term-note={note}", readinessProbe={"tcpSocket": {"port": 8888}}
        ),
    )
    pod = await fake_k8s.wait_for_pod_phase("default", "stubborn", "Running")
    assert fake_k8s.kubelet.processes is not None
    running = fake_k8s.kubelet.processes.get(pod["metadata"]["uid"])
    assert running is not None
    await v1.delete_namespaced_pod("stubborn", "default", grace_period_seconds=20)
    await fake_k8s.wait_for(lambda: fake_k8s.get("pods", "default", "stubborn") is None, 3)
    # SIGTERM first, which the server outlived (it noted it), then SIGKILL, which ended it.
    assert note.read_text() == "SIGTERM\n"
    assert running.process.returncode == -signal.SIGKILL
    assert not alive(running.process.pid)


async def test_closing_the_harness_kills_every_process(fake_k8s_factory: Any) -> None:
    fake: FakeKubernetes = await fake_k8s_factory(process_mode=True)
    async with fake.api_client() as api:
        v1 = CoreV1(api)
        await v1.create_namespaced_pod(
            "default", server_pod("left", "--ignore-term=1", readinessProbe={"tcpSocket": {"port": 8888}})
        )
        pod = await fake.wait_for_pod_phase("default", "left", "Running")
    pid = pid_of(fake, "left")
    assert fake.kubelet.processes is not None
    running = fake.kubelet.processes.get(pod["metadata"]["uid"])
    assert running is not None and running.folder.is_dir()
    await fake.close()
    assert not alive(pid)
    assert not running.folder.exists()


async def test_wait_for_port_uses_the_first_container_port(fake_k8s_factory: Any) -> None:
    fake: FakeKubernetes = await fake_k8s_factory(process_mode=True, wait_for_port=True)
    async with fake.api_client() as api:
        await CoreV1(api).create_namespaced_pod(
            "default", server_pod("ported", "--delay=0.2", ports=[{"containerPort": 8888}])
        )
        pod = await fake.wait_for_pod_phase("default", "ported", "Running")
        assert (await fetch(f"http://{pod['status']['podIP']}:8888/"))["argv"]
