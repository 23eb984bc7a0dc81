"""`python -m benchmarks locust` (make loadtest): Locust against a running endpoint or, by default,
an embedded server this command starts (--server embedded|noop|none)."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.commands.common import DEFAULT_MODELS, add_run_args, add_server_args, finish_run, open_run
from benchmarks.commands.served import ServedConfig, run_served
from benchmarks.load.locust_run import LocustConfig, run_locust
from benchmarks.requests.discovery import discover_models
from benchmarks.targets.managed import start_for_run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--model", default="", help="model to call (default: first exported model)")
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
    p.add_argument("--no-ours", action="store_true",
                   help="skip our own closed-loop client at the same concurrency (by default it runs after each "
                        "Locust test, against the same server, so the report can put the two side by side)")
    add_run_args(p)


def main(args: argparse.Namespace) -> int:
    infos = discover_models(args.models_dir)
    model = args.model or (infos[0].name if infos else "")
    if not model:
        raise FileNotFoundError(f"no exported models under {args.models_dir} and no --model given")
    n_features = next((i.n_features for i in infos if i.name == model), 10)
    w = open_run(args, "locust", server_kind=args.server, server_mode=args.mode)
    server = None
    try:
        server = start_for_run(args, w.run_dir, (model,))
        if server is not None:
            gt, rt, label = server.grpc_target, server.rest_target, server.label
        else:
            gt, rt, label = args.target, args.rest_target, "external"
        rows = []
        for transport in args.transports:  # Locust then ours, per transport: close in time on a busy machine
            rows += run_locust(LocustConfig(gt, rt, model=model, batch_size=args.batch_size, n_features=n_features,
                                            users=args.users, spawn_rate=args.spawn_rate, run_time=args.run_time,
                                            workers=args.workers, transports=(transport,), step_shape=args.step,
                                            step_users=args.step_users, step_seconds=args.step_seconds,
                                            steps=args.steps, server_label=label, out_dir=w.run_dir / "locust"), w)
            if not args.no_ours and not args.step:
                rows += run_served(ServedConfig(transport, gt if transport == "grpc" else rt, [(model, n_features)],
                                                batch_sizes=(args.batch_size,), concurrencies=(args.users,),
                                                window_s=1.0, max_windows=8, server_label=label, progress=False), w)
    finally:
        if server:
            server.stop()
    for r in rows:
        print(f">> {r.kind} {r.scenario}: n={r.n} p50={r.p50_ms:.3f} ms p99={r.p99_ms:.3f} ms "
              f"{r.throughput_rps:.0f} req/s errors={r.errors}", flush=True)
    finish_run(w)
    return 0
