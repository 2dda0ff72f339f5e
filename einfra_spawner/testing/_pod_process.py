"""Process mode: a pod's first container run as a local process, as the kubelet's container.

When the harness runs in process mode, :class:`._pod_life.PodLife` starts a pod's containers
with :func:`run_as_process`: the container's command runs through :mod:`._processes` on the
pod's own 127.0.0.N address with the environment a container would get (:mod:`._podenv`). The
pod turns Running once the process listens on its readiness port (or at once when there is
none); a command that cannot start gives a StartError as containerd words it, and the process's
exit ends the container with its exit code.
"""

from __future__ import annotations

from ._defaults import now
from ._events import WARNING
from ._pod_status import JsonDict, PodHandle
from ._podenv import container_environment
from ._processes import ProcessRunner, ProcessStartError


async def run_as_process(
    pod_handle: PodHandle,
    processes: ProcessRunner,
    pod: JsonDict,
    container: JsonDict,
    running: dict[str, JsonDict],
    restarts: int,
    last_states: dict[str, JsonDict],
    *,
    port_timeout: float,
    wait_for_port: bool,
) -> tuple[str, JsonDict]:
    """Run ``container`` until its process exits; (container name, terminated state)."""
    metadata = pod["metadata"]
    uid, name = metadata["uid"], container["name"]
    ip = processes.allocate_ip(uid)
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    env = container_environment(
        pod_handle.store, pod, container, ip, pod_handle.host_ip(pod["spec"].get("nodeName", ""))
    )
    started = now()
    try:
        process = await processes.start(uid, metadata["name"], argv, env, ip)
    except ProcessStartError as error:
        message = (
            f"failed to create containerd task: failed to create shim task: OCI runtime "
            f"create failed: runc create failed: unable to start container process: "
            f"{error}: unknown"
        )
        pod_handle.record(pod, WARNING, "Failed", f"Error: {message}", name)
        return name, {
            "exitCode": 128,
            "reason": "StartError",
            "message": message,
            "startedAt": started,
            "finishedAt": now(),
        }
    port = readiness_port(container, wait_for_port=wait_for_port)
    if port is not None:
        await processes.wait_for_port(process, port, port_timeout)
    if process.process.returncode is None:
        pod = pod_handle.read()
        pod_handle.write(
            pod,
            phase="Running",
            states=running,
            ready=True,
            pod_ip=ip,
            restarts=restarts,
            last_states=last_states,
        )
    code = await process.process.wait()
    return name, {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": started,
        "finishedAt": now(),
    }


def readiness_port(container: JsonDict, *, wait_for_port: bool) -> int | None:
    """The port whose opening makes the container ready: its readiness probe's, or (with
    ``wait_for_port``) its first declared port; None: ready once started."""
    probe = container.get("readinessProbe") or {}
    for kind in ("tcpSocket", "httpGet"):
        port = (probe.get(kind) or {}).get("port")
        if isinstance(port, int):
            return port
    if wait_for_port:
        for entry in container.get("ports") or ():
            if isinstance(entry.get("containerPort"), int):
                return int(entry["containerPort"])
    return None
