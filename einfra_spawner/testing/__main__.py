"""Command line of the test harness: run the fake Kubernetes API server in its own process.

``python -m einfra_spawner.testing serve --port 0 --nodes nodes.yaml --latency-ms 2`` prints
the server's URL on the first line of stdout and serves until SIGTERM/SIGINT (or, with
``--stop-on-stdin-eof``, until its stdin closes). ``python -m einfra_spawner.testing
default-nodes`` prints the default nodes as YAML, a starting point for ``--nodes``.
This is a test harness, not a Kubernetes cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from ._config import Timings
from ._harness import FakeKubernetes
from ._nodes import default_nodes, dump_nodes, load_nodes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m einfra_spawner.testing",
        description="einfra-spawner's test harness: a fake Kubernetes API server with a "
        "simulated scheduler and kubelet (not a cluster).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the fake API server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    serve.add_argument("--nodes", metavar="FILE.yaml", help="nodes (default: CPU and GPU nodes)")
    serve.add_argument(
        "--namespace", action="append", default=[], help="create this namespace too (repeatable)"
    )
    serve.add_argument(
        "--process-mode",
        action="store_true",
        help="run each Running pod's first container as a local process",
    )
    serve.add_argument(
        "--wait-for-port",
        action="store_true",
        help="process mode: Running only once the first container port answers",
    )
    serve.add_argument(
        "--no-validate",
        action="store_true",
        help="skip OpenAPI schema and name/quantity validation (benchmarks)",
    )
    serve.add_argument("--schema-version", default="1.33", help="Kubernetes schema version")
    serve.add_argument("--latency-ms", type=float, default=0.0, help="latency per API request")
    serve.add_argument("--error-rate", type=float, default=0.0, help="probability of a 5xx")
    serve.add_argument("--error-status", type=int, default=503, help="status of random 5xx")
    serve.add_argument("--throttle-rate", type=float, default=0.0, help="probability of a 429")
    serve.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    serve.add_argument("--schedule-delay-ms", type=float, default=0.0)
    serve.add_argument("--running-delay-ms", type=float, default=50.0, help="pod bound to a node -> Running")
    serve.add_argument("--pvc-bind-delay-ms", type=float, default=5.0)
    serve.add_argument(
        "--time-factor",
        type=float,
        default=0.01,
        help="scale of grace periods and back-offs (0.01: 30 s -> 0.3 s)",
    )
    serve.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds")
    serve.add_argument(
        "--watch-timeout", type=float, default=1800.0, help="seconds, for watches without timeoutSeconds"
    )
    serve.add_argument("--history-limit", type=int, default=10_000, help="changes kept for resuming watches")
    serve.add_argument(
        "--fail-image-pull",
        action="append",
        default=[],
        metavar="IMAGE",
        help="pulling this image fails (repeatable)",
    )
    serve.add_argument(
        "--crash-image",
        action="append",
        default=[],
        metavar="IMAGE",
        help="containers of this image exit with code 1 (repeatable)",
    )
    serve.add_argument("--kubeconfig", metavar="PATH", help="write a kubeconfig here")
    serve.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes (used by FakeKubernetesProcess)",
    )
    serve.add_argument("--log-level", default="WARNING")
    commands.add_parser("default-nodes", help="print the default nodes as YAML")
    return parser


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while await reader.read(4096):
            pass
    finally:
        transport.close()


async def _serve(options: argparse.Namespace) -> int:
    timings = Timings(
        schedule_delay=options.schedule_delay_ms / 1000,
        running_delay=options.running_delay_ms / 1000,
        pvc_bind_delay=options.pvc_bind_delay_ms / 1000,
        time_factor=options.time_factor,
    )
    harness = FakeKubernetes(
        load_nodes(options.nodes) if options.nodes else None,
        namespaces=options.namespace,
        validate=not options.no_validate,
        schema_version=options.schema_version,
        process_mode=options.process_mode,
        wait_for_port=options.wait_for_port,
        timings=timings,
        image_pull_failures=options.fail_image_pull,
        crashing_images=options.crash_image,
        latency=options.latency_ms / 1000,
        error_rate=options.error_rate,
        throttle_rate=options.throttle_rate,
        seed=options.seed,
        bookmark_interval=options.bookmark_interval,
        watch_timeout=options.watch_timeout,
        history_limit=options.history_limit,
        host=options.host,
        port=options.port,
    )
    harness.faults.error_status = options.error_status
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with harness:
        if options.kubeconfig:
            harness.write_kubeconfig(options.kubeconfig)
        print(harness.url, flush=True)
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        if options.stop_on_stdin_eof:
            waiters.append(asyncio.ensure_future(_stdin_closed()))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    if options.command == "default-nodes":
        print(dump_nodes(default_nodes()), end="")
        return 0
    logging.basicConfig(
        level=options.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(options))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
