"""`python -m benchmarks noop-server`: the Python no-op TF Serving look-alike (targets/noop_python.py) as its
own process, so it does not share a load generator's GIL. ManagedServer("noop") starts it this way."""
from __future__ import annotations

from benchmarks.commands.common import ListArg

import argparse
import json
import logging
import signal
import threading
from pathlib import Path

from benchmarks.targets.noop_python import NoopConfig, NoopServer

log = logging.getLogger("noop-server")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only by default)")
    p.add_argument("--grpc-port", type=int, default=8600, help="gRPC port (0 = pick a free one)")
    p.add_argument("--rest-port", type=int, default=8601, help="REST port (0 = pick a free one)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="sleep this long in every Predict (simulate work)")
    p.add_argument("--models", action=ListArg, nargs="*", default=[], help="model names to accept (default: any)")
    p.add_argument("--ready-file", default="", help="write {'grpc_port','rest_port'} JSON here once listening")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s noop-server %(message)s")
    srv = NoopServer(NoopConfig(args.grpc_port, args.rest_port, args.host, args.delay_ms, tuple(args.models)),
                     rest_process=True).start()
    if args.ready_file:
        from benchmarks.results.schema import atomic_write_text

        atomic_write_text(Path(args.ready_file), json.dumps({"grpc_port": srv.grpc_port, "rest_port": srv.rest_port}))
    log.info("listening: gRPC %s:%d  REST http://%s:%d  (Ctrl-C to stop)", args.host, srv.grpc_port, args.host,
             srv.rest_port)
    done = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: done.set())
    done.wait()
    srv.stop()
    log.info("stopped after %d requests", srv.core.requests)
    return 0
