"""`python -m benchmarks compare BASE NEW` (make compare): per matching row, the change in median latency with a
bootstrap confidence interval (results/compare.py); exit status 1 on a significant regression beyond the threshold,
2 when the two runs share no comparable row (a CI gate must not read "nothing compared" as a pass)."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.commands.common import DEFAULT_RESULTS, ListArg
from benchmarks.results.compare import IGNORABLE, MAX_SAMPLES, THRESHOLD_PCT


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help="run id (under --results-dir), run directory or results.json; 'latest' works")
    p.add_argument("new")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--threshold", type=float, default=THRESHOLD_PCT,
                   help=f"regression threshold in %% of median latency (default {THRESHOLD_PCT:g})")
    p.add_argument("--max-samples", type=int, default=MAX_SAMPLES,
                   help=f"samples drawn from each histogram (default {MAX_SAMPLES})")
    p.add_argument("--ignore", action=ListArg, nargs="*", default=[], allowed=IGNORABLE,
                   help="key fields to ignore when matching rows (e.g. compare eager vs graph servers)")


def main(args: argparse.Namespace) -> int:
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
