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
import sys

from benchmarks.commands.registry import COMMANDS, find
from export.tf_startup import quiet_tensorflow_startup


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The command list from the registry; only the command named in argv gets its arguments (and its module
    imported), so listing the commands costs nothing."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="debug logging, and TensorFlow's start-up banners (hidden by default)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)  # top-level options take no values
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help.replace("%%", "%"))
        if cmd.name == chosen:
            p.set_defaults(command=cmd.name)  # lets a module serving several commands see which one this is
            cmd.load().add_arguments(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_tensorflow_startup(verbose=bool({"-v", "--verbose"} & set(argv)))
    try:
        args = build_parser(argv).parse_args(argv)
        args.argv = argv  # recorded in the run's environment as the command that re-runs it
    except RuntimeError as e:  # a registered module without the command interface
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(find(args.command).load().main(args) or 0)
    except (FileNotFoundError, ValueError, TimeoutError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rows measured so far are in results.json", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
