"""`python -m benchmarks suite [--quick]` (make bench): in-process modes, then gRPC and REST against
a served model (by default an embedded server this command starts), LoadGen scenarios in the full
suite, then report + plots. --quick stays under ~2 minutes on a 2-core machine."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.commands.common import (DEFAULT_MODELS, ListArg, add_run_args, add_serve_args_option,
                                        add_server_args, finish_run, open_run)
from benchmarks.requests.discovery import discover_models
from benchmarks.results.findings import API
from benchmarks.requests.signature import check_models_served
from benchmarks.targets.managed import start_for_run
from export.contract import PROMETHEUS_PATH


@dataclass
class SuitePlan:
    models: int  # how many models (first N found)
    inprocess_modes: tuple[str, ...]
    inprocess_batches: tuple[int, ...]
    inprocess_budget_s: float
    served_batches: tuple[int, ...]
    concurrencies: tuple[int, ...]
    window_s: float
    max_windows: int
    loadgen: tuple[str, ...]
    loadgen_qps: tuple[float, ...]
    loadgen_ms: int
    loadgen_batches: tuple[int, ...]  # LoadGen runs on the first model only, at these batch sizes


# LoadGen's early-stopping rule needs ~500 queries before a Server run can be VALID at p99, so the
# rates x durations below are chosen to issue at least that many.
QUICK = SuitePlan(1, ("eager", "graph"), (1, 32), 0.3, (1, 32), (1, 8), 0.5, 4, ("server",), (250.0,), 2000, (1,))
# Standard (`make bench`): every model and in-process mode at 5 batch sizes, 36 closed-loop points of
# <= 5 windows of 1 s, one run of each LoadGen scenario: a few minutes here.
STANDARD = SuitePlan(99, ("eager", "predict_on_batch", "graph", "xla", "savedmodel"),
                     (1, 8, 64, 256, 1024), 0.5, (1, 32), (1, 8, 64), 1.0, 5,
                     ("single_stream", "server", "offline"), (100.0,), 5000, (1,))
# Extended (--extended): ~3-4 min in-process, 72 closed-loop points of <= 10 s, 10 LoadGen runs of >= 5 s:
# 410 rows in 12.6 min here (run 20261127-164936-suite-extended-7f1c73).
EXTENDED = SuitePlan(99, ("eager", "predict_on_batch", "graph", "xla", "savedmodel"),
                 (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), 1.0, (1, 32, 256), (1, 4, 16, 64), 1.5, 6,
                 ("single_stream", "server", "offline"), (100.0, 300.0), 5000, (1,))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run (< 2 min): 1 model, eager+graph, tiny sweeps")
    size.add_argument("--extended", action="store_true",
                      help="11 batch sizes, 4 concurrencies, 2 LoadGen rates, longer windows (~13 min here)")
    add_server_args(p, "server to benchmark: start the embedded one (default), the no-op one, or use "
                       "--target/--rest-target (--rest-target '' = gRPC only)")
    p.add_argument("--models", action=ListArg, nargs="*", default=[], metavar="NAME",
                   help="models to benchmark (default: those under --models-dir); one without a manifest there "
                        "is described by the server's signature (--server none), e.g. a model of your own")
    p.add_argument("--server-label", default="external", help="with --server none: the server's name in the rows")
    p.add_argument("--skip-inprocess", action="store_true")
    add_serve_args_option(p)
    add_run_args(p)


def _external_name(args: argparse.Namespace) -> str:
    """How the report names a server the suite did not start: its label and the endpoints measured."""
    endpoints = ", ".join(f"{API[k]} {t}" for k, t in (("grpc", args.target), ("rest", args.rest_target)) if t)
    return f"{args.server_label} (external; {endpoints})"


def _inprocess_step(args: argparse.Namespace, plan: SuitePlan, infos: list, w) -> None:
    from benchmarks.commands.inprocess import InprocessConfig, run_inprocess

    if args.skip_inprocess or not infos:
        why = "--skip-inprocess" if args.skip_inprocess else f"no exported model under {args.models_dir} to load"
        print(f">> [1/3] in-process: skipped ({why})", flush=True)
        return
    print(">> [1/3] in-process", flush=True)
    run_inprocess(InprocessConfig(args.models_dir, tuple(i.name for i in infos), plan.inprocess_modes,
                                  plan.inprocess_batches, plan.inprocess_budget_s, min_iters=10,
                                  progress=not args.no_progress), w)


def _announce_served_step(targets: dict[str, str]) -> None:
    """Step 3 names each endpoint it measures and each API it skips, with the flag that would add it."""
    print(f">> [3/3] {' and '.join(API[k] + ' at ' + t for k, t in targets.items())}: closed-loop sweeps, "
          "then LoadGen open-loop scenarios", flush=True)
    for kind in sorted(API.keys() - targets.keys()):
        flag = "--target" if kind == "grpc" else "--rest-target (make bench REST_TARGET=host:port)"
        print(f">> {API[kind]}: skipped, no endpoint given ({flag})", flush=True)


def main(args: argparse.Namespace) -> int:
    from benchmarks.commands.served import ServedConfig, run_served

    plan = QUICK if args.quick else EXTENDED if args.extended else STANDARD
    found = {i.name: i for i in discover_models(args.models_dir)}
    names = (args.models or sorted(found))[: plan.models]
    if not names:
        raise FileNotFoundError(f"no exported models under {args.models_dir}: run `make export` first, "
                                "or name a served model with --models and --server none")
    # (name, n_features): 0 = build requests from the signature the server reports
    served = [(n, found[n].n_features if n in found else 0) for n in names]
    # in-process needs the exported files and the project's own [batch, n_features] models
    infos = [found[n] for n in names if n in found and found[n].n_features > 0]
    if args.server == "none":  # an external server: one line naming a model it lacks, before any load
        for kind, target in (("grpc", args.target), ("rest", args.rest_target)):
            if target:
                check_models_served(kind, target, names, sorted(found))
    external = args.server == "none"
    w = open_run(args, "suite-quick" if args.quick else "suite-extended" if args.extended else "suite",
                 server_kind=_external_name(args) if external else args.server,
                 server_mode="" if external else args.mode)
    t0 = time.perf_counter()
    _inprocess_step(args, plan, infos, w)
    server = None
    try:
        if external:
            print(f">> [2/3] server: {args.server_label}, already running (--server none): none started", flush=True)
        else:
            print(f">> [2/3] starting {args.server} server ({args.mode})", flush=True)
        server = start_for_run(args, w.run_dir, tuple(names), tuple(args.server_arg))
        if server is not None:
            targets = {"grpc": server.grpc_target, "rest": server.rest_target}
            label, metrics = server.label, server.metrics_url
        else:
            targets = {k: t for k, t in (("grpc", args.target), ("rest", args.rest_target)) if t}
            label = args.server_label
            metrics = f"http://{args.rest_target}{PROMETHEUS_PATH}" if args.rest_target else ""
        _announce_served_step(targets)
        for kind in targets:
            run_served(ServedConfig(kind=kind, target=targets[kind], models=served,
                                    batch_sizes=plan.served_batches, concurrencies=plan.concurrencies,
                                    window_s=plan.window_s, max_windows=plan.max_windows, warmup_s=min(0.5, plan.window_s),
                                    server_label=label, metrics_url=metrics, progress=not args.no_progress), w)
        for kind in targets:
            run_served(ServedConfig(kind=kind, target=targets[kind], models=served[:1],
                                    batch_sizes=plan.loadgen_batches, concurrencies=(), server_label=label,
                                    metrics_url=metrics, loadgen_scenarios=plan.loadgen, loadgen_qps=plan.loadgen_qps,
                                    loadgen_min_duration_ms=plan.loadgen_ms, loadgen_dir=w.run_dir / "loadgen",
                                    progress=not args.no_progress), w)
    finally:
        if server:
            server.stop()
    finish_run(w)
    print(f">> suite done in {time.perf_counter() - t0:.0f}s: {len(w.rows)} rows", flush=True)
    return 0
