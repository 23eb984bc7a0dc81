"""Which way of calling a restored SavedModel signature costs least? (`python -m benchmarks graph-call`)

The embedded server's graph mode must not add cost the runtime does not need. This command times, for
batch-1 requests on one exported version, every way we know of calling the same signature, checks they
return the same numbers, and writes one in-process result row per way (mode = the way's short name,
extra.call = what it does, extra.same_output) into a run directory. serving/execution/runners.py uses the winner.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.commands.common import DEFAULT_MODELS, add_run_args, finish_run, open_run
from benchmarks.measure.calls import time_calls
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.results.schema import ResultRow, atomic_write_text

# short name (the result row's mode) -> what is called
CALLS = {
    "signature-tf-constant": "signature(**kw) with tf.constant",
    "signature-numpy": "signature(**kw) with numpy",
    "tf-function-wrapper": "tf.function(lambda t: signature(t))",
    "concrete-call-flat": "ConcreteFunction._call_flat",
    "atomic-call-flat": "AtomicFunction.call_flat",
    "graph-runner": "server GraphRunner.run, executor function (_FlatCall)",
    "v1-session": "server SessionRunner.run (v1 Session, TF Serving's route; executor session)",
}


def candidates(version_dir: Path, signature: str, batch_size: int = 1) -> tuple[object, dict[str, Callable[[], object]], np.ndarray, dict]:
    """(the loaded SavedModel, short name -> a batch-1 call, the reference output, short name -> error of a way
    that cannot run). The loaded object must outlive the calls: it owns the variables they capture."""
    import tensorflow as tf

    from serving.execution.runners import GraphRunner

    loaded = tf.saved_model.load(str(version_dir))
    sig = loaded.signatures[signature]
    in_name = list(sig.structured_input_signature[1])[0]
    n_features = sig.structured_input_signature[1][in_name].shape[-1]
    x = np.random.default_rng(0).standard_normal((batch_size, n_features)).astype(np.float32)
    out_name = sorted(sig.structured_outputs)[0]
    reference = sig(**{in_name: tf.constant(x)})[out_name].numpy()
    wrapped = tf.function(lambda v: sig(**{in_name: v}))
    runner = GraphRunner(version_dir, "bench", executor="function")
    calls: dict[str, Callable[[], object]] = {
        "signature-tf-constant": lambda: sig(**{in_name: tf.constant(x)})[out_name].numpy(),
        "signature-numpy": lambda: sig(**{in_name: x})[out_name].numpy(),
        "tf-function-wrapper": lambda: wrapped(tf.constant(x))[out_name].numpy(),
        "concrete-call-flat": lambda: _first(sig._call_flat([tf.constant(x)], sig.captured_inputs), out_name),
        "atomic-call-flat": lambda: sig._inference_function.call_flat(tf.constant(x), *sig.captured_inputs)[0].numpy(),
        "graph-runner": lambda: runner.run(signature, {in_name: x})[out_name],
    }
    session_call = _session_call(version_dir, signature, in_name, out_name)
    if callable(session_call):
        calls["v1-session"] = lambda: session_call(x)
        return loaded, calls, reference, {}
    return loaded, calls, reference, {"v1-session": session_call}


def _row(name: str, hist: LatencyHistogram, wall_s: float, model: str, extra: dict, batch_size: int = 1,
         **kw) -> ResultRow:
    row = ResultRow.from_histogram(hist, duration_s=wall_s, kind="inprocess", model=model, mode=name,
                                   batch_size=batch_size,
                                   scenario="steady", concurrency=1, server="inprocess", **kw)
    row.extra = {"call": CALLS[name], **extra}
    return row


def measure(version_dir: Path, signature: str, iterations: int, rounds: int = 3, *, model: str,
            extra: dict | None = None, batch_size: int = 1, gap_s: float = 0.0) -> list[ResultRow]:
    """One row per way of calling; a way that fails is a row with its error (n = 0)."""
    _loaded, calls, reference, errors = candidates(version_dir, signature, batch_size)
    hists: dict[str, LatencyHistogram] = {}
    walls: dict[str, float] = {}
    same: dict[str, bool] = {}
    # Rounds interleave the ways, so that load from other processes hits them all alike.
    for _ in range(rounds):
        for name, fn in calls.items():
            if name in errors:
                continue
            try:
                if name not in same:
                    same[name] = bool(np.allclose(np.asarray(fn()).reshape(reference.shape), reference,
                                                  rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(reference).max()))))
                t = time_calls(fn, max(1, iterations // rounds), gap_s=gap_s)
            except Exception as exc:  # a way that does not work is a result too
                errors[name] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
                continue
            hists.setdefault(name, LatencyHistogram()).merge(t.hist)
            walls[name] = walls.get(name, 0.0) + t.wall_s
    rows = []
    for name in CALLS:
        if name in errors:
            row = _row(name, LatencyHistogram(), 0.0, model, dict(extra or {}), batch_size, errors=1,
                       errors_by_code={errors[name].split(":")[0]: 1})
            row.warnings = [errors[name]]
        elif name in hists:
            row = _row(name, hists[name], walls[name], model,
                       {**(extra or {}), "same_output": same[name], "rounds": rounds}, batch_size)
        else:
            continue
        rows.append(row)
    return rows


def _first(result, out_name: str):
    value = result[out_name] if isinstance(result, dict) else result[0]
    return value.numpy()


def _session_call(version_dir: Path, signature: str, in_name: str, out_name: str):
    """The server's Session path (what it runs for a TF1 model the TF2 loader refuses; TF Serving's own
    route), or the error message when Python's v1 loader cannot restore the model."""
    from serving.execution.session_bundle import SessionRunner

    try:
        runner = SessionRunner(version_dir, "bench")
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
    return lambda x: runner.run(signature, {in_name: x})[out_name]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--model", default="residual_regressor")
    p.add_argument("--version", type=int, default=None, help="default: the highest version")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--iterations", type=int, default=3000, help="timed calls per way (split over rounds)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds, merged into one histogram per way")
    p.add_argument("--batch-size", type=int, default=1, help="rows per call (default 1)")
    p.add_argument("--gap-ms", type=float, default=0.0,
                   help="idle time between timed calls, as a served stream has between requests (default 0: "
                        "back to back, which flatters TF's thread pools)")
    p.add_argument("--server-threads", action="store_true",
                   help="TF's threads as the server sets them (1 intra-op + 1 inter-op on 2 cores; "
                        "serving.cli.server.tf_thread_counts) instead of TF's defaults")
    p.add_argument("--out", type=Path, default=None,
                   help="also write the table (one entry per way: p50/p99 µs, same output or error) as JSON here")
    add_run_args(p)


def _table(rows: list[ResultRow]) -> list[dict]:
    out = []
    for r in rows:
        entry = {"call": r.extra["call"], "mode": r.mode}
        if r.errors:
            entry["error"] = r.warnings[0]
        else:
            entry.update(p50_us=round(r.p50_ms * 1000, 1), p99_us=round(r.p99_ms * 1000, 1),
                         same_output=r.extra["same_output"])
        out.append(entry)
    return out


def main(args: argparse.Namespace) -> int:
    from benchmarks.requests.discovery import discover_models
    from export.contract import find_version_dir

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    info = next((i for i in discover_models(args.models_dir) if i.name == args.model), None)
    version = args.version or (info.versions[-1] if info else None)
    found = find_version_dir(Path(args.models_dir) / args.model, version) if version else None
    if found is None:
        print(f"error: no version {version or ''} of {args.model} under {args.models_dir}: export first "
              "(`make export`)", file=sys.stderr)
        return 2
    if args.server_threads:
        from serving.cli.server import configure_tensorflow_threads

        configure_tensorflow_threads()
    w = open_run(args, "graph-call", server_kind="none", server_mode="graph")
    w.extend(measure(found.path, args.signature, args.iterations, args.rounds, model=args.model,
                     extra={"version": version, "signature": args.signature, "gap_ms": args.gap_ms,
                            "server_threads": args.server_threads},
                     batch_size=args.batch_size, gap_s=args.gap_ms / 1000))
    table = _table(w.rows)
    print(f"{'call':58s} {'p50 us':>9s} {'p99 us':>9s}  same output")
    for t in table:
        if "error" in t:
            print(f"{t['call']:58s} {'n/a':>9s} {'':>9s}  {t['error'][:70]}")
        else:
            print(f"{t['call']:58s} {t['p50_us']:9.1f} {t['p99_us']:9.1f}  {t['same_output']}")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps({"run_id": w.run_id, "model": args.model, "version": version,
                                                      "signature": args.signature, "rows": table}, indent=2))
    finish_run(w)
    return 0


if __name__ == "__main__":
    from benchmarks.commands.common import run_module

    raise SystemExit(run_module("python -m benchmarks.commands.graph_call", __doc__, add_arguments, main))
