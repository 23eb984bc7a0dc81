"""`python -m benchmarks locust` (make loadtest): Locust against a running endpoint or, by default,
an embedded server this command starts (--server embedded|noop|none).

Three ways to run it:
  local            one Locust process, or --workers N: a master and N worker processes on this machine;
  --master         a master only, bound to --bind HOST:PORT, that starts once --expect-workers N workers
                   (on any machines) have connected, and writes the result rows and report;
  --worker         a worker for the master at --master-host HOST[:PORT] (the same as Locust's own
                   `locust -f benchmarks/load/locustfile.py --worker --master-host HOST`): it takes the
                   model, targets and input flags from its master.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.clients.probe import probe
from benchmarks.commands.common import DEFAULT_MODELS, add_run_args, add_server_args, finish_run, open_run
from benchmarks.commands.input_flags import add_input_arguments, input_options
from benchmarks.commands.served import ServedConfig, run_served
from benchmarks.load.locust_run import LOCUST_MASTER_PORT, LocustConfig, run_locust, split_host_port, worker_command
from benchmarks.requests.builder import RequestSpec, build_requests
from benchmarks.requests.discovery import discover_models
from benchmarks.requests.signature import check_models_served
from benchmarks.targets.managed import start_for_run
from export import contract


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--model", default="", help="model to call (default: first exported model); a model without a "
                                               "manifest is described by the server's signature (inputs below)")
    p.add_argument("--n-features", type=int, default=0,
                   help="float32 [batch, N] requests without asking the server (e.g. a no-op server); default: the "
                        "model's manifest, else its served signature")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--users", type=int, default=8, help="concurrent Locust users (default 8)")
    p.add_argument("--spawn-rate", type=float, default=4.0, help="users started per second (default 4)")
    p.add_argument("--run-time", default="20s", help="e.g. 20s, 1m (default 20s)")
    p.add_argument("--workers", type=int, default=0, help="0 = one local process; N = 1 master + N worker processes")
    p.add_argument("--transports", nargs="*", default=["grpc", "rest"], choices=["grpc", "rest"])
    p.add_argument("--step", action="store_true", help="step ramp (LoadTestShape) instead of fixed users")
    p.add_argument("--step-users", type=int, default=4)
    p.add_argument("--step-seconds", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=3)
    add_server_args(p, "start this server for the test (none: use --target/--rest-target)")
    p.add_argument("--metrics-url", default="", help="with --server none: the server's Prometheus endpoint, whose "
                                                     "request counter is reconciled with Locust's counts")
    p.add_argument("--no-ours", action="store_true",
                   help="skip our own closed-loop client at the same concurrency (by default it runs after each "
                        "Locust test, against the same server, so the report can put the two side by side)")
    dist = p.add_argument_group("workers on other machines")
    dist.add_argument("--master", action="store_true",
                      help="run a master only, for workers started elsewhere; they get the targets as given here, "
                           "so name addresses they can reach (--server none --target HOST:PORT ...)")
    dist.add_argument("--bind", default=f"0.0.0.0:{LOCUST_MASTER_PORT}", metavar="HOST:PORT",
                      help=f"--master: address the workers connect to (default 0.0.0.0:{LOCUST_MASTER_PORT})")
    dist.add_argument("--expect-workers", type=int, default=1, help="--master: start once this many have connected")
    dist.add_argument("--expect-workers-max-wait", type=float, default=120.0, help="--master: seconds to wait for them")
    dist.add_argument("--worker", action="store_true", help="run a worker for the master at --master-host")
    dist.add_argument("--master-host", default="", metavar="HOST[:PORT]", help="--worker: the master's address")
    add_input_arguments(p)
    add_run_args(p)


def _check_roles(args: argparse.Namespace) -> None:
    if args.master and args.workers:
        raise ValueError("--master waits for workers started elsewhere; --workers starts them here: pick one")
    if args.master and args.expect_workers < 1:
        raise ValueError(f"--expect-workers must be >= 1, not {args.expect_workers}")
    if args.master and len(args.transports) != 1:
        raise ValueError("--master runs one Locust test, and its workers leave when it ends: "
                         "pass --transports grpc or --transports rest")
    split_host_port(args.bind)


def _input_argv(args: argparse.Namespace) -> tuple[str, ...]:
    """The input flags again, for the locustfile's request builder on every worker."""
    out = ["--signature", args.signature, "--method", args.method, "--string-length", str(args.string_length),
           "--int-range", args.int_range]
    for flag, values in (("--shape", args.shape), ("--feature", args.feature)):
        for v in values:
            out += [flag, v]
    if args.input_data is not None:
        out += ["--input-data", str(Path(args.input_data).resolve())]
    return tuple(out)


def _model(args: argparse.Namespace) -> tuple[str, int]:
    """(model, n_features): n_features from the model's manifest, 0 (= ask the server) without one."""
    infos = discover_models(args.models_dir) if args.models_dir and Path(args.models_dir).is_dir() else []
    model = args.model or (infos[0].name if infos else "")
    if not model:
        raise FileNotFoundError(f"no exported models under {args.models_dir} and no --model given")
    info = next((i for i in infos if i.name == model), None)
    manifest = info is not None and contract.manifest_path(info.latest_dir).exists()
    return model, args.n_features or (info.n_features if manifest else 0)


def _preflight(targets: dict[str, str], model: str, n_features: int, args: argparse.Namespace) -> None:
    """Build the request as every worker will, and send it once per transport: an unknown model, a bad shape or
    a bad input file stops the run here, in one line, before any load (unless --allow-errors)."""
    for kind in args.transports:
        check_models_served(kind, targets[kind], [model], [])
        spec = RequestSpec(model, kind, targets[kind], n_features, input_options(args))
        payload = build_requests(spec).payload(args.batch_size)
        res = probe(kind, targets[kind], payload)
        if not res.ok and not args.allow_errors:
            raise RuntimeError(f"{kind} {model} at {targets[kind]}: probe request failed with {res.status}: "
                               f"{res.message} (nothing was sent by Locust; --allow-errors runs anyway)")


def main(args: argparse.Namespace) -> int:
    if args.worker:
        if not args.master_host:
            raise ValueError("--worker needs --master-host HOST[:PORT]")
        argv = worker_command(*split_host_port(args.master_host))
        os.execv(sys.executable, argv)  # Locust's own worker, in this process: signals reach it directly
    _check_roles(args)
    input_options(args)  # a malformed flag exits here, before a server or a run exists
    model, n_features = _model(args)
    if args.server == "none":  # an external server: bad input stops us before a run directory exists
        _preflight({"grpc": args.target, "rest": args.rest_target}, model, n_features, args)
    w = open_run(args, "locust", server_kind=args.server, server_mode=args.mode)
    server = None
    try:
        server = start_for_run(args, w.run_dir, (model,))
        gt, rt, label = ((server.grpc_target, server.rest_target, server.label) if server else
                         (args.target, args.rest_target, "external"))
        metrics_url = server.metrics_url if server else args.metrics_url
        if server:
            _preflight({"grpc": gt, "rest": rt}, model, n_features, args)
        rows = []
        for transport in args.transports:  # Locust then ours, per transport: close in time on a busy machine
            rows += run_locust(LocustConfig(
                gt, rt, model=model, batch_size=args.batch_size, n_features=n_features, input_args=_input_argv(args),
                users=args.users, spawn_rate=args.spawn_rate, run_time=args.run_time, workers=args.workers,
                transports=(transport,), step_shape=args.step, step_users=args.step_users,
                step_seconds=args.step_seconds, steps=args.steps, server_label=label, out_dir=w.run_dir / "locust",
                bind=args.bind if args.master else "", expect_workers=args.expect_workers if args.master else 0,
                expect_workers_wait_s=args.expect_workers_max_wait, metrics_url=metrics_url), w)
            if not args.no_ours and not args.step and not args.master:
                rows += run_served(ServedConfig(transport, gt if transport == "grpc" else rt, [(model, n_features)],
                                                batch_sizes=(args.batch_size,), concurrencies=(args.users,),
                                                window_s=1.0, max_windows=8, server_label=label, progress=False,
                                                inputs=input_options(args), metrics_url=metrics_url), w)
    finally:
        if server:
            server.stop()
    for r in rows:
        print(f">> {r.kind} {r.scenario}: n={r.n} p50={r.p50_ms:.3f} ms p99={r.p99_ms:.3f} ms "
              f"{r.throughput_rps:.0f} req/s errors={r.errors}", flush=True)
    finish_run(w)
    return 0
