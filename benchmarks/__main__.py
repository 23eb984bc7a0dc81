"""python -m benchmarks <command> --help  — every command writes <results-dir>/<run-id>/results.json,
results.csv, report.md (and PNG plots where there is something to plot).

Typical use:
  python -m benchmarks inprocess --models-dir artifacts/models --batch-sizes 1,32,1024
  python -m benchmarks grpc --target 127.0.0.1:8500 --concurrency 1,8,32 --loadgen server --loadgen-qps 200
  python -m benchmarks rest --target 127.0.0.1:8501 --concurrency 1,8,32
  python -m benchmarks capacity            # how fast can this load generator go (against a no-op server)?
  python -m benchmarks locust --users 8 --workers 2 --run-time 20s
  python -m benchmarks compare <base-run> <new-run>
  python -m benchmarks perf-analyzer --target 127.0.0.1:8500 --models residual_regressor   # make crosscheck
  python -m benchmarks suite [--quick]     # make bench
  python -m benchmarks demo                # make demo: export if needed, graph vs eager server, all tables
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from benchmarks.commands.common import DEFAULT_MODELS, add_run_args, finish_run, float_list, int_list, open_run
from benchmarks.commands.input_flags import add_input_arguments, input_options, served_models

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _served_args(p: argparse.ArgumentParser, kind: str) -> None:
    from benchmarks.clients.transports import DEFAULT_GRPC_CLIENT, GRPC_CLIENTS
    p.add_argument("--target", default=None,
                   help="host:port of the endpoint (default 127.0.0.1:8500 for gRPC, 127.0.0.1:8501 for REST)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS,
                   help="exported models (read for names and n_features; nothing is loaded)")
    p.add_argument("--models", nargs="*", default=[], metavar="NAME[:N_FEATURES]",
                   help="model names to call (default: every model under --models-dir); a model without a "
                        "manifest there is described by the server's signature (see inputs below)")
    p.add_argument("--n-features", type=int, default=0,
                   help="float32 [batch, N] requests without asking the server (default: ask it)")
    p.add_argument("--batch-sizes", type=int_list, default=(1, 8, 64), help="comma list (default 1,8,64)")
    p.add_argument("--concurrency", type=int_list, default=(1, 4, 16, 64),
                   help="closed-loop concurrency sweep, comma list (default 1,4,16,64)")
    p.add_argument("--window-s", type=float, default=2.0, help="measurement window length (default 2 s)")
    p.add_argument("--max-windows", type=int, default=10,
                   help="cap on windows per point; a point without 3 agreeing windows is marked unstable (default 10)")
    p.add_argument("--stability-pct", type=float, default=10.0,
                   help="3 consecutive windows must agree within this %% on throughput and mean latency (default 10)")
    p.add_argument("--loadgen", nargs="*", default=[], choices=["single_stream", "server", "offline"],
                   help="also run these MLPerf LoadGen scenarios (open loop)")
    p.add_argument("--loadgen-qps", type=float_list, default=(100.0,),
                   help="Server: Poisson arrival rates; Offline: expected qps (comma list, default 100)")
    p.add_argument("--loadgen-duration-ms", type=int, default=5000, help="LoadGen min duration (default 5000)")
    p.add_argument("--loadgen-latency-ms", type=float, default=100.0,
                   help="Server scenario p99 latency bound for LoadGen's VALID verdict (default 100)")
    p.add_argument("--server-label", default="", help="how to name the server in the results (e.g. embedded-graph)")
    p.add_argument("--metrics-url", default="",
                   help="Prometheus endpoint to diff per point, e.g. http://127.0.0.1:8501/monitoring/prometheus/metrics")
    p.add_argument("--grpc-channels", type=int, default=1,
                   help="grpc.aio client: channels (TCP connections) to spread calls over")
    p.add_argument("--grpc-client", choices=GRPC_CLIENTS, default=DEFAULT_GRPC_CLIENT,
                   help=f"gRPC client (default {DEFAULT_GRPC_CLIENT}): curl = libcurl's HTTP/2 via pycurl, whose "
                        "latencies agree with Triton's perf_analyzer and which costs 2-3x less client CPU per call; "
                        "aio = grpc.aio (the reference implementation; its p50 ran 0.14-0.17 ms above perf_analyzer's at 1 stream "
                        "here, see `perf-analyzer`)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request deadline")
    add_input_arguments(p)
    add_run_args(p)


def cmd_served(args: argparse.Namespace) -> int:
    from benchmarks.commands.served import ServedConfig, run_served

    kind = args.command if args.command in ("grpc", "rest") else args.kind
    if args.target is None:
        args.target = "127.0.0.1:8500" if kind == "grpc" else "127.0.0.1:8501"
    models, inputs = served_models(args, kind), input_options(args)  # bad input exits here, before a run exists
    w = open_run(args, kind, server_kind=args.server_label or "external")
    cfg = ServedConfig(kind=kind, target=args.target, models=models, batch_sizes=args.batch_sizes,
                       concurrencies=() if args.command == "loadgen" else args.concurrency,
                       window_s=args.window_s, max_windows=args.max_windows, stability_pct=args.stability_pct,
                       timeout_s=args.timeout_s, grpc_channels=args.grpc_channels, grpc_client=args.grpc_client,
                       server_label=args.server_label or "external", metrics_url=args.metrics_url,
                       loadgen_scenarios=tuple(args.loadgen) if args.command != "sweep" else (),
                       loadgen_qps=args.loadgen_qps, loadgen_min_duration_ms=args.loadgen_duration_ms,
                       loadgen_target_latency_ms=args.loadgen_latency_ms, loadgen_dir=w.run_dir / "loadgen",
                       progress=not args.no_progress, inputs=inputs, allow_errors=args.allow_errors)
    run_served(cfg, w)
    finish_run(w)
    return 0


def cmd_inprocess(args: argparse.Namespace) -> int:
    from benchmarks.commands.inprocess import InprocessConfig, run_inprocess

    w = open_run(args, "inprocess", server_kind="none", server_mode="inprocess")
    run_inprocess(InprocessConfig(args.models_dir, tuple(args.models), tuple(args.modes), args.batch_sizes,
                                  args.budget_s, version=args.version, progress=not args.no_progress), w)
    finish_run(w)
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    from benchmarks.commands.capacity import choose_server, run_capacity

    server = choose_server(args.server, args.install)  # before open_run: the environment block names it
    w = open_run(args, "capacity", server_kind="noop-native" if server == "native" else "noop", server_mode="noop")
    run_capacity(w, concurrencies=args.concurrency, transports=tuple(args.transports),
                 grpc_clients=tuple(args.grpc_clients), server=server, window_s=args.window_s,
                 max_windows=args.max_windows, grpc_channels=args.grpc_channels, progress=not args.no_progress)
    finish_run(w)
    return 0


def cmd_noop(args: argparse.Namespace) -> int:
    from benchmarks.targets import noop_python as noop_server

    return noop_server.main(args)


def cmd_locust(args: argparse.Namespace) -> int:
    from benchmarks.commands.locust import main

    return main(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmarks.results.compare import run_compare
    from benchmarks.results.schema import resolve_run

    base = resolve_run(args.base, args.results_dir)
    new = resolve_run(args.new, args.results_dir)
    code, text, _ = run_compare(base, new, threshold=args.threshold / 100.0, max_samples=args.max_samples,
                                ignore=tuple(args.ignore))
    print(text)
    print(">> verdict:", {0: "no significant regression beyond threshold", 1: "REGRESSION beyond threshold"}.get(
        code, "nothing compared (no comparable rows)"))
    return code


def cmd_suite(args: argparse.Namespace) -> int:
    from benchmarks.commands.suite import main

    return main(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from benchmarks.commands.demo import main

    return main(args)


def cmd_wrk(args: argparse.Namespace) -> int:
    from benchmarks.commands.wrk import main

    return main(args)


def cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.results.plots import write_plots
    from benchmarks.results.report import write_report
    from benchmarks.results.schema import load_run, resolve_run

    run = load_run(resolve_run(args.run, args.results_dir))
    made = write_plots(run.rows, run.run_dir)
    print(write_report(run.run_dir, run.run_id, run.environment, run.rows, made))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.clients.transports import GRPC_CLIENTS
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inprocess", help="Keras eager / predict_on_batch / tf.function / XLA / SavedModel, per batch size")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--models", nargs="*", default=[], help="only these models (default: all exported)")
    p.add_argument("--modes", nargs="*", default=["eager", "predict_on_batch", "graph", "xla", "savedmodel"],
                   choices=["eager", "predict_on_batch", "graph", "xla", "savedmodel"])
    p.add_argument("--batch-sizes", type=int_list, default=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                   help="comma list (default 1,2,4,...,1024)")
    p.add_argument("--budget-s", type=float, default=1.0, help="steady-state seconds per point (default 1)")
    p.add_argument("--version", type=int, default=None, help="model version (default newest)")
    add_run_args(p)
    p.set_defaults(func=cmd_inprocess)

    for kind in ("grpc", "rest"):
        p = sub.add_parser(kind, help=f"{kind.upper()} Predict: closed-loop concurrency sweep (+ optional LoadGen scenarios)")
        _served_args(p, kind)
        p.set_defaults(func=cmd_served)
    p = sub.add_parser("sweep", help="closed-loop concurrency sweep only (perf_analyzer's stability rule)")
    p.add_argument("--kind", choices=["grpc", "rest"], default="grpc")
    _served_args(p, "grpc")
    p.set_defaults(func=cmd_served)
    p = sub.add_parser("loadgen", help="MLPerf LoadGen open-loop scenarios only (give --loadgen SCENARIO ...)")
    p.add_argument("--kind", choices=["grpc", "rest"], default="grpc")
    _served_args(p, "grpc")
    p.set_defaults(func=cmd_served)

    p = sub.add_parser("capacity", help="load-generator capacity: drive a no-op server as hard as possible",
                       description="How many requests/s one load-generator process drives (goal 5,000, stretch "
                                   "10,000), per client, with its CPU cost per request. The no-op server must be "
                                   "cheaper than the client or the run measures the server: --server auto uses "
                                   "nghttpd (gRPC) + nginx (REST) when installed, else the Python no-op server "
                                   "with a warning.")
    p.add_argument("--concurrency", type=int_list, default=(16, 64, 256), help="comma list (default 16,64,256)")
    p.add_argument("--transports", nargs="*", default=["grpc", "rest"], choices=["grpc", "rest"])
    p.add_argument("--grpc-clients", nargs="*", default=list(GRPC_CLIENTS), choices=GRPC_CLIENTS,
                   help="gRPC clients to measure (default: all)")
    p.add_argument("--server", choices=["auto", "native", "python"], default="auto",
                   help="no-op server: native = nghttpd + nginx (Debian packages), python = benchmarks noop-server; "
                        "auto = native when installed (default)")
    p.add_argument("--install", action="store_true",
                   help="apt-get install nghttp2-server and nginx-light if missing (root)")
    p.add_argument("--window-s", type=float, default=2.0, help="measurement window (default 2 s)")
    p.add_argument("--max-windows", type=int, default=6, help="cap on windows per point (default 6)")
    p.add_argument("--grpc-channels", type=int, default=1, help="grpc.aio client: channels (default 1)")
    add_run_args(p)
    p.set_defaults(func=cmd_capacity)

    from benchmarks.targets import noop_python as noop_server

    p = sub.add_parser("noop-server", help="serve a no-op Predict over gRPC and REST (capacity tests, tooling tests)")
    noop_server.add_arguments(p)
    p.set_defaults(func=cmd_noop)

    from benchmarks.commands.locust import add_arguments as locust_args

    p = sub.add_parser("locust", help="Locust headless load test (gRPC + REST users; --workers N for distributed)")
    locust_args(p)
    add_run_args(p)
    p.set_defaults(func=cmd_locust)

    from benchmarks.results.compare import IGNORABLE

    p = sub.add_parser("compare", help="compare two runs: %% change + bootstrap verdict; exit 1 on a significant regression, "
                            "2 when the runs share no comparable row")
    p.add_argument("base", help="run id (under --results-dir), run directory or results.json; 'latest' works")
    p.add_argument("new")
    p.add_argument("--results-dir", type=Path, default=Path("artifacts/results"))
    p.add_argument("--threshold", type=float, default=5.0, help="regression threshold in %% of median latency (default 5)")
    p.add_argument("--max-samples", type=int, default=4000, help="samples drawn from each histogram (default 4000)")
    p.add_argument("--ignore", nargs="*", default=[], choices=IGNORABLE,
                   help="key fields to ignore when matching rows (e.g. compare eager vs graph servers)")
    p.set_defaults(func=cmd_compare)

    from benchmarks.commands.suite import add_arguments as suite_args

    p = sub.add_parser("suite", help="standard suite: in-process + gRPC + REST (+ LoadGen) against the embedded server")
    suite_args(p)
    add_run_args(p)
    p.set_defaults(func=cmd_suite)

    from benchmarks.commands.demo import add_arguments as demo_args

    p = sub.add_parser("demo", help="end to end: export if needed, graph vs eager server, all tables and plots (<10 min)")
    demo_args(p)
    add_run_args(p)
    p.set_defaults(func=cmd_demo)

    from benchmarks.commands.wrk import add_arguments as wrk_args

    p = sub.add_parser("wrk", help="cross-check our REST client's p50 against wrk at the same concurrency")
    wrk_args(p)
    add_run_args(p)
    p.set_defaults(func=cmd_wrk)

    from benchmarks.commands import perf_analyzer as perf_analyzer_cmd

    p = sub.add_parser("perf-analyzer", help="cross-check: Triton's perf_analyzer beside our gRPC clients, same points",
                       description=perf_analyzer_cmd.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    perf_analyzer_cmd.add_arguments(p)
    p.set_defaults(func=perf_analyzer_cmd.main)

    p = sub.add_parser("report", help="re-render report.md and plots of an existing run")
    p.add_argument("run", help="run id, run directory or 'latest'")
    p.add_argument("--results-dir", type=Path, default=Path("artifacts/results"))
    p.set_defaults(func=cmd_report)

    from benchmarks.reliability.cli import add_reliability_arguments, run_reliability

    p = sub.add_parser("reliability", help="rollout, broken versions, kill/restart, overload, hostile input, soak")
    add_reliability_arguments(p)
    p.set_defaults(func=run_reliability)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, TimeoutError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rows measured so far are in results.json", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
