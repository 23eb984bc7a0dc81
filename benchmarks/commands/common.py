"""Shared CLI plumbing: run directories, environment capture, report + plots at the end."""
from __future__ import annotations

import argparse
import logging
import shlex
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
        add_old_name(p, "--grpc-target", "target")
    if rest:
        p.add_argument("--rest-target", default=DEFAULT_REST_TARGET, help=f"REST host:port (default {DEFAULT_REST_TARGET})")


def add_old_name(p: argparse.ArgumentParser, old: str, dest: str, type=str) -> None:  # noqa: A002 (argparse's word)
    """A flag's earlier spelling, still accepted and not listed in --help (durations now end in -seconds)."""
    p.add_argument(old, dest=dest, type=type, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def target_of(args: argparse.Namespace, kind: str) -> str:  # the endpoint the flags name for `kind` (grpc | rest)
    return args.target if kind == "grpc" else args.rest_target


def add_serve_args_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `python -m serving serve` (repeat), e.g. --server-arg=--enable-batching "
                        "--server-arg=--batching-parameters-file=docker/batching/batching_cpu.config")


def recorded_command(argv: list[str]) -> str:
    """The command line as a shell re-runs it: quoted, so an empty argument (--rest-target '') survives."""
    return "python -m benchmarks " + shlex.join(argv)


def open_run(args: argparse.Namespace, prefix: str, *, server_kind: str = "", server_mode: str = "") -> ResultWriter:
    run_id = args.run_id or new_run_id(prefix)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("func", "argv") and not callable(v)}
    env = capture_environment(server_kind=server_kind, server_mode=server_mode, settings=settings,
                              command=recorded_command(getattr(args, "argv", sys.argv[1:])))
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


class ListArg(argparse.Action):
    """The one list style of every list flag: values separated by commas, spaces or both (`--batch-sizes 1,32`,
    `--models a b`, `--models a,b`). `item` converts each value; numbers must be positive; `allowed` are the
    choices (checked here, after splitting, so `a,b` is not judged as one value)."""

    def __init__(self, option_strings, dest, item=str, allowed=None, nargs="+", **kwargs):  # noqa: ANN001
        self.item, self.allowed = item, tuple(allowed) if allowed else None
        if self.allowed and "metavar" not in kwargs:
            kwargs["metavar"] = "{" + ",".join(self.allowed) + "}"
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        raw = [x for v in values for x in v.replace(",", " ").split()]
        try:
            items = tuple(self.item(x) for x in raw)
        except ValueError:
            parser.error(f"argument {option_string}: expected {self.item.__name__} values, got {' '.join(values)!r}")
        if self.item in (int, float) and any(v <= 0 for v in items):
            parser.error(f"argument {option_string}: expected positive values, got {' '.join(values)!r}")
        bad = [x for x in items if self.allowed and x not in self.allowed]
        if bad:
            parser.error(f"argument {option_string}: invalid choice {bad[0]!r} (choose from {', '.join(self.allowed)})")
        setattr(namespace, self.dest, items)


def run_module(prog: str, doc: str | None, add_arguments, main) -> int:
    """`python -m benchmarks.commands.<module>`: the same parser and entry point the registry uses."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return main(parser.parse_args())


def add_calls_argument(p: argparse.ArgumentParser) -> None:
    """--calls: how a closed-loop point calls the server (perf_analyzer's synchronous calls vs its --async)."""
    p.add_argument("--calls", choices=("auto", "sync", "async"), default="auto",
                   help="closed-loop calls: sync = each stream a thread making blocking calls on a connection of its "
                        "own (as perf_analyzer's synchronous calls), async = every stream on the event loop, auto "
                        "(default) = sync at 1 stream, async above; grpc.aio has no blocking calls and stays async")
