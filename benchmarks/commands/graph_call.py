"""Which way of calling a restored SavedModel signature costs least? (`python -m benchmarks.commands.graph_call`)

The embedded server's graph mode must not add cost the runtime does not need. This script times, for
batch-1 requests on one exported version, every way we know of calling the same signature, checks they
return the same numbers, and writes the table to a JSON file. serving/runners.py uses the winner.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np


def _p50_us(fn: Callable[[], object], iterations: int, warmup: int = 200) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = np.empty(iterations)
    for i in range(iterations):
        t = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t
    return float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 99) * 1e6)


def measure(version_dir: Path, signature: str, iterations: int, rounds: int = 3) -> list[dict]:
    import tensorflow as tf

    from serving.runners import GraphRunner

    loaded = tf.saved_model.load(str(version_dir))
    sig = loaded.signatures[signature]
    in_name = list(sig.structured_input_signature[1])[0]
    n_features = sig.structured_input_signature[1][in_name].shape[-1]
    x = np.random.default_rng(0).standard_normal((1, n_features)).astype(np.float32)
    t = tf.constant(x)
    out_name = sorted(sig.structured_outputs)[0]
    reference = sig(**{in_name: t})[out_name].numpy()
    candidates: dict[str, Callable[[], object]] = {
        "signature(**kw) with tf.constant": lambda: sig(**{in_name: tf.constant(x)})[out_name].numpy(),
        "signature(**kw) with numpy": lambda: sig(**{in_name: x})[out_name].numpy(),
        "tf.function(lambda t: signature(t))": None,
        "ConcreteFunction._call_flat": lambda: _first(sig._call_flat([tf.constant(x)], sig.captured_inputs), out_name),
        "AtomicFunction.call_flat": lambda: sig._inference_function.call_flat(tf.constant(x), *sig.captured_inputs)[0].numpy(),
    }
    wrapped = tf.function(lambda v: sig(**{in_name: v}))
    candidates["tf.function(lambda t: signature(t))"] = lambda: wrapped(tf.constant(x))[out_name].numpy()
    runner = GraphRunner(version_dir, "bench")
    candidates["server GraphRunner.run (chosen path)"] = lambda: runner.run(signature, {in_name: x})[out_name]

    session_call = _session_call(version_dir, signature)
    if callable(session_call):
        candidates["tf.compat.v1 Session.make_callable (TF Serving's route)"] = lambda: session_call(x)

    # Rounds interleave the candidates so that load from other processes hits them all alike; the median of
    # the per-round percentiles is reported.
    results: dict[str, list[tuple[float, float]]] = {}
    errors: dict[str, str] = {} if callable(session_call) else \
        {"tf.compat.v1 Session.make_callable (TF Serving's route)": session_call}
    same: dict[str, bool] = {}
    for _ in range(rounds):
        for name, fn in candidates.items():
            if name in errors:
                continue
            try:
                if name not in same:
                    same[name] = bool(np.allclose(np.asarray(fn()).reshape(reference.shape), reference,
                                                  rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(reference).max()))))
                results.setdefault(name, []).append(_p50_us(fn, iterations // rounds))
            except Exception as exc:  # an alternative that does not work is a result too
                errors[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
    rows = []
    for name in list(candidates) + [n for n in errors if n not in candidates]:
        if name in errors:
            rows.append({"call": name, "error": errors[name]})
        else:
            p50s, p99s = zip(*results[name])
            rows.append({"call": name, "p50_us": round(float(np.median(p50s)), 1),
                         "p99_us": round(float(np.median(p99s)), 1), "same_output": same[name]})
    return rows


def _first(result, out_name: str):
    value = result[out_name] if isinstance(result, dict) else result[0]
    return value.numpy()


def _session_call(version_dir: Path, signature: str):
    """TF Serving's own route (v1 Session running the MetaGraph), or the error message when Python's v1
    loader cannot restore the model."""
    import tensorflow as tf

    try:
        graph = tf.Graph()
        with graph.as_default():
            sess = tf.compat.v1.Session(graph=graph)
            meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(version_dir))
        sdef = meta.signature_def[signature]
        out_key = sorted(sdef.outputs)[0]
        call = sess.make_callable(sdef.outputs[out_key].name, [next(iter(sdef.inputs.values())).name])
        return call
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.commands.graph_call", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path("artifacts/models"))
    parser.add_argument("--model", default="residual_regressor")
    parser.add_argument("--version", type=int, default=None, help="default: the highest version")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--iterations", type=int, default=3000, help="timed calls per candidate (split over rounds)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median of their percentiles)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/results/graph_call_bench.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model_dir = args.models_dir / args.model
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()) if model_dir.is_dir() else []
    if not versions:
        parser.error(f"no versions under {model_dir}: export first (`make export`)")
    version = args.version or versions[-1]
    rows = measure(model_dir / str(version), args.signature, args.iterations, args.rounds)
    print(f"{'call':58s} {'p50 us':>9s} {'p99 us':>9s}  same output")
    for r in rows:
        if "error" in r:
            print(f"{r['call']:58s} {'n/a':>9s} {'':>9s}  {r['error'][:70]}")
        else:
            print(f"{r['call']:58s} {r['p50_us']:9.1f} {r['p99_us']:9.1f}  {r['same_output']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"model": args.model, "version": version, "signature": args.signature,
                               "batch_size": 1, "iterations": args.iterations, "rounds": args.rounds, "host": platform.node(),
                               "cpus": os.cpu_count(), "created_at": datetime.now(timezone.utc).isoformat(),
                               "rows": rows}, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
