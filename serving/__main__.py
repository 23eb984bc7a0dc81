"""`python -m serving`: `serve` runs the embedded server, `launch` picks real TF Serving or the embedded one."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve exported models. `serve`: the embedded server (TF Serving's gRPC + REST APIs, "
                    "graph/xla/eager modes). `launch`: real TF Serving in Docker when a Docker engine answers, "
                    "else the embedded server. `check-model`: the embedded server's answers for a SavedModel against "
                    "TensorFlow's v1 Session loader's. Run `python -m serving <command> --help` for each one's flags.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{serve,launch,check-model}")
    from serving.cli.serve_flags import add_serve_arguments

    add_serve_arguments(sub.add_parser("serve", help="run the embedded server in the foreground"))
    launch = sub.add_parser("launch", help="run TF Serving (Docker) or the embedded server, whichever is available")
    from serving.cli.launch import add_launch_arguments

    add_launch_arguments(launch)
    from serving.cli.check_model_flags import add_check_model_arguments

    add_check_model_arguments(sub.add_parser(
        "check-model", help="compare the embedded server's answers for a SavedModel with TensorFlow's v1 Session "
                            "loader's (exit 1 on a mismatch)"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from export.tf_startup import quiet_tensorflow_startup

    args = build_parser().parse_args(argv)  # imports no TensorFlow
    # The server never uses scikit-learn, and in graph or xla mode with no --import module no Keras either:
    # TensorFlow's import skips them (export/tf_startup.py says why and what it saves).
    graph_only = args.command == "serve" and args.mode in ("graph", "xla") and not args.imports
    quiet_tensorflow_startup(verbose=getattr(args, "verbose", False),  # only `serve` has --verbose
                             hide=("sklearn", "keras") if graph_only else ("sklearn",))
    if args.command == "launch":
        from serving.cli.launch import run_launch

        return run_launch(args)
    if args.command == "check-model":
        from serving.cli.check_model import run_check_model

        return run_check_model(args)
    from serving.cli.serve_flags import config_from_args
    from serving.cli.server import run_server

    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_server(config)


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # TF and gRPC leave non-daemon C++ threads whose teardown at interpreter exit can hang for seconds; the
    # server has already drained and closed everything it owns, so leave without running those finalizers.
    os._exit(code)
