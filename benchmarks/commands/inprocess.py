"""In-process latency of the same model run five ways, per batch size.

Modes:
  eager             model(x, training=False) on a pre-built tf.Tensor (Keras eager call)
  predict_on_batch  model.predict_on_batch(x) on numpy (Keras' own fast path, returns numpy)
  graph             tf.function(model) with a [None, n_features] input signature (traced once)
  xla               tf.function(model, jit_compile=True) (XLA compiles once per new input shape)
  savedmodel        the exported SavedModel's serving_default signature (what TF Serving runs)

The first call of each (mode, batch size) is reported on its own row (scenario "first_call"):
it carries tracing/compilation cost that steady-state percentiles must not hide or absorb. Steady
state is then timed call by call into an HdrHistogram until a time budget or iteration cap is hit.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks.commands.common import DEFAULT_MODELS, ListArg, add_old_name, add_run_args, finish_run, open_run
from benchmarks.measure.calls import time_calls
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.requests.discovery import discover_models
from benchmarks.requests.payloads import DEFAULT_BATCH_SIZES, make_inputs
from benchmarks.results.schema import ResultRow, ResultWriter

log = logging.getLogger(__name__)

MODES = ("eager", "predict_on_batch", "graph", "xla", "savedmodel")


@dataclass
class InprocessConfig:
    models_dir: Path
    models: tuple[str, ...] = ()  # empty = every model found
    modes: tuple[str, ...] = MODES
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    budget_s: float = 1.0  # steady-state time per point
    min_iters: int = 20
    max_iters: int = 20000
    warmup_iters: int = 3  # untimed calls after the first call, before steady state
    version: int | None = None  # default: newest version
    seed: int = 0
    progress: bool = True
    notes: list[str] = field(default_factory=list)


def _callables(mode: str, keras_model, loaded, n_features: int, tf) -> Callable:
    spec = [tf.TensorSpec([None, n_features], tf.float32, name="inputs")]
    if mode == "eager":
        return lambda x: keras_model(x, training=False)
    if mode == "predict_on_batch":
        return lambda x: keras_model.predict_on_batch(x)
    if mode == "graph":
        return tf.function(lambda x: keras_model(x, training=False), input_signature=spec)
    if mode == "xla":
        return tf.function(lambda x: keras_model(x, training=False), input_signature=spec, jit_compile=True)
    if mode == "savedmodel":
        sig = loaded.signatures["serving_default"]
        return lambda x: sig(inputs=x)
    raise ValueError(f"unknown in-process mode {mode!r}; choose from {MODES}")


def run_inprocess(cfg: InprocessConfig, writer: ResultWriter | None = None) -> list[ResultRow]:
    import tensorflow as tf  # full TF import only here: the load generators never need it
    from tqdm import tqdm

    from export.contract import keras_path
    from export.keras_source import load_keras_file

    for m in cfg.modes:
        if m not in MODES:
            raise ValueError(f"unknown in-process mode {m!r}; choose from {MODES}")
    infos = [i for i in discover_models(cfg.models_dir) if not cfg.models or i.name in cfg.models]
    if not infos:
        raise FileNotFoundError(f"no exported models under {cfg.models_dir} (run `python -m export` first)")
    missing = set(cfg.models) - {i.name for i in infos}
    if missing:
        raise FileNotFoundError(f"models not found under {cfg.models_dir}: {sorted(missing)}")
    rows: list[ResultRow] = []
    total = len(infos) * len(cfg.modes) * len(cfg.batch_sizes)
    bar = tqdm(total=total, desc="in-process", unit="pt", disable=not cfg.progress)
    for info in infos:
        version = cfg.version or info.versions[-1]
        vdir = info.version_dir(version)
        keras_model = load_keras_file(keras_path(vdir))
        loaded = tf.saved_model.load(str(vdir)) if "savedmodel" in cfg.modes else None
        for mode in cfg.modes:
            fn = _callables(mode, keras_model, loaded, info.n_features, tf)
            for bs in cfg.batch_sizes:
                bar.set_postfix_str(f"{info.name} {mode} b={bs}")
                x_np = make_inputs(bs, info.n_features, cfg.seed)
                x = x_np if mode == "predict_on_batch" else tf.constant(x_np)
                common = dict(kind="inprocess", model=info.name, mode=mode, batch_size=bs, concurrency=1,
                              server="inprocess", extra={"version": version})
                first, row = _measure_point(cfg, lambda: fn(x), common, version)
                rows += [first, row]
                if writer:
                    writer.append(first)
                    writer.append(row)
                bar.update(1)
        del keras_model, loaded
    bar.close()
    return rows


def _measure_point(cfg: InprocessConfig, call, common: dict, version: int) -> tuple[ResultRow, ResultRow]:
    """The first call (tracing/compilation) on its own row, then steady-state calls within the budget."""
    t0 = time.perf_counter_ns()
    call()
    first_ns = time.perf_counter_ns() - t0
    h1 = LatencyHistogram()
    h1.record_ns(first_ns)
    first = ResultRow.from_histogram(h1, duration_s=first_ns / 1e9, scenario="first_call", **common)
    first.throughput_rps = first.rows_per_s = float("nan")  # one call: a rate would mislead
    timing = time_calls(call, cfg.max_iters, cfg.warmup_iters, budget_s=cfg.budget_s, min_calls=cfg.min_iters)
    # Sequential calls: throughput = calls / wall time (includes loop overhead, honestly).
    row = ResultRow.from_histogram(timing.hist, duration_s=timing.wall_s, scenario="steady",
                                   **{**common, "extra": {"version": version, "first_call_ms": first_ns / 1e6}})
    return first, row


# -- `python -m benchmarks inprocess` ------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    d = InprocessConfig
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--models", action=ListArg, nargs="*", default=[],
                   help="only these models (default: all exported)")
    p.add_argument("--modes", action=ListArg, nargs="*", default=list(MODES), allowed=MODES)
    p.add_argument("--batch-sizes", action=ListArg, item=int, default=d.batch_sizes,
                   help="list (default 1,2,4,...,1024)")
    add_old_name(p, "--budget-s", "budget_s", float)
    p.add_argument("--budget-seconds", dest="budget_s", type=float, default=d.budget_s,
                   help=f"steady-state seconds per point (default {d.budget_s:g})")
    p.add_argument("--version", type=int, default=d.version, help="model version (default newest)")
    add_run_args(p)


def main(args: argparse.Namespace) -> int:
    w = open_run(args, "inprocess", server_kind="none", server_mode="inprocess")
    run_inprocess(InprocessConfig(args.models_dir, tuple(args.models), tuple(args.modes), args.batch_sizes,
                                  args.budget_s, version=args.version, progress=not args.no_progress), w)
    finish_run(w)
    return 0
