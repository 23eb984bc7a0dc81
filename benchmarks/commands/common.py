"""Shared CLI plumbing: run directories, environment capture, report + plots at the end."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from benchmarks.results.schema import ResultWriter, capture_environment, new_run_id
from export.contract import SERVER_MODES

DEFAULT_RESULTS = Path("artifacts/results")
DEFAULT_MODELS = Path("artifacts/models")
DEFAULT_GRPC_TARGET = "127.0.0.1:8500"  # TF Serving's default ports (--port, --rest_api_port)
DEFAULT_REST_TARGET = "127.0.0.1:8501"
SERVERS = ("embedded", "noop", "none")  # --server: what a command starts (managed.start_for_run); none: --target
DEFAULT_SERVER_MODE = "graph"


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS,
                   help="where run directories are created (default artifacts/results)")
    p.add_argument("--run-id", default="", help="name of the run directory (default: timestamp-kind-random)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def add_server_args(p: argparse.ArgumentParser, server_help: str | None = None, *, servers: tuple[str, ...] = SERVERS,
                    default: str = SERVERS[0], grpc: bool = True, rest: bool = True) -> None:
    """--server and --mode (the server a command starts), and the endpoints used with --server none."""
    p.add_argument("--server", choices=servers, default=default, help=server_help)
    p.add_argument("--mode", choices=SERVER_MODES, default=DEFAULT_SERVER_MODE, help="embedded server mode")
    add_target_args(p, grpc=grpc, rest=rest)


def add_target_args(p: argparse.ArgumentParser, *, grpc: bool = True, rest: bool = True) -> None:
    """The one spelling of an endpoint on every command that sends requests: --target (gRPC), --rest-target."""
    if grpc:
        p.add_argument("--target", default=DEFAULT_GRPC_TARGET, help=f"gRPC host:port (default {DEFAULT_GRPC_TARGET})")
        p.add_argument("--grpc-target", dest="target", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    if rest:
        p.add_argument("--rest-target", default=DEFAULT_REST_TARGET, help=f"REST host:port (default {DEFAULT_REST_TARGET})")


def target_of(args: argparse.Namespace, kind: str) -> str:  # the endpoint the flags name for `kind` (grpc | rest)
    return args.target if kind == "grpc" else args.rest_target


def add_serve_args_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `python -m serving serve` (repeat), e.g. --server-arg=--enable-batching "
                        "--server-arg=--batching-parameters-file=docker/batching/batching_cpu.config")


def open_run(args: argparse.Namespace, prefix: str, *, server_kind: str = "", server_mode: str = "") -> ResultWriter:
    run_id = args.run_id or new_run_id(prefix)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("func",) and not callable(v)}
    env = capture_environment(server_kind=server_kind, server_mode=server_mode, settings=settings,
                              command=" ".join(["python -m benchmarks", *sys.argv[1:]]))
    w = ResultWriter(Path(args.results_dir) / run_id, env)
    logging.getLogger("benchmarks").info("results -> %s", w.run_dir)
    print(f">> results: {w.run_dir}", flush=True)
    return w


def finish_run(w: ResultWriter, *, plots: bool = True) -> Path:
    """Plots and report.md beside results.json; returns the report path."""
    from dataclasses import asdict

    from benchmarks.results.plots import write_plots  # matplotlib costs seconds to import: only when plotting
    from benchmarks.results.report import write_report

    made = write_plots(w.rows, w.run_dir) if plots else []

    path = write_report(w.run_dir, w.run_id, asdict(w.environment), w.rows, made)
    print(f">> report: {path}" + (f"  plots: {', '.join(p.name for p in made)}" if made else ""), flush=True)
    return path


def _positive_list(s: str, convert, what: str) -> tuple:
    try:
        vals = tuple(convert(x) for x in s.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {s!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive {what}, got {s!r}")
    return vals


def int_list(s: str) -> tuple[int, ...]:
    return _positive_list(s, int, "integers")


def float_list(s: str) -> tuple[float, ...]:
    return _positive_list(s, float, "numbers")


def run_module(prog: str, doc: str | None, add_arguments, main) -> int:
    """`python -m benchmarks.commands.<module>`: the same parser and entry point the registry uses."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return main(parser.parse_args())
