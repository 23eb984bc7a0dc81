"""`python -m benchmarks report RUN`: re-render report.md and the plots of a run already on disk."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.commands.common import DEFAULT_RESULTS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run id, run directory or 'latest'")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)


def main(args: argparse.Namespace) -> int:
    from benchmarks.results.plots import write_plots  # matplotlib: imported only when plotting
    from benchmarks.results.report import write_report
    from benchmarks.results.schema import load_run, resolve_run

    run = load_run(resolve_run(args.run, args.results_dir))
    made = write_plots(run.rows, run.run_dir)
    print(write_report(run.run_dir, run.run_id, run.environment, run.rows, made))
    return 0
