"""How much does the embedded server cost on top of the model? (`python -m benchmarks perf-check`)

Measures, on one exported model, and writes one result row per measurement into a run directory
(<results-dir>/<run-id>/results.json, results.csv, report.md) plus the ratios in perf_check.json:

  overhead      served graph-mode gRPC p50 (batch 1, one stream) / (in-process SavedModel signature call
                p50 + bare gRPC echo round trip p50)                          goal <= 1.2
                (also against the fastest in-process call, the one the server uses, and against the echo
                server of the other kind)
  batching      throughput at 64 concurrent streams, batching on / off        goal >= 3
                (batching file: docker/batching/batching_cpu.config, what TF Serving's CPU container reads;
                also with batch_timeout_micros raised to --tuned-timeout-micros, the guide's next step)
  eager / graph p50 and 64-stream throughput of eager-mode serving relative to graph mode (xla too)

Every served measurement also records, because wall-clock numbers on a shared 2-core machine are noisy:
  * server CPU per request (psutil: user+system time of the server process over the measured requests),
  * client CPU per request (this process), and how many cores each used, so it is clear who is the bottleneck,
  * for batching runs, the average processed batch size from the server's Prometheus histogram.
Each measurement is repeated --repeats times (fresh server each time); the row is the median run, with
min/max of the runs in extra.spread_min_max.

The in-process model cost (CPU per call at batch 1 and per row at batch 64) gives the ceiling of the batching
ratio on this server: batching can at most remove the model's per-request share of the server's CPU, so
  ceiling = server CPU per request unbatched / (that - model CPU at batch 1 + model CPU per row at batch 64).

Requests go through the benchmarks' load loop with the grpc.aio client (pre-serialised bytes); single stream
= one request in flight, --requests of them. The echo servers (benchmarks/targets/echo.py) are gRPC servers
(thread-pool and asyncio, the embedded server's kind) answering Predict with the request bytes: "gRPC and
nothing else". Client and server share this machine's cores, as in the other benchmarks.
Numbers are measurements, not assertions: nothing here fails because a goal is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmarks.requests.discovery import ModelInfo, discover_models
from benchmarks.requests.payloads import build_payload
from benchmarks.clients.transports import client_name, make_transport
from benchmarks.commands.common import DEFAULT_MODELS, add_run_args, finish_run, open_run
from benchmarks.load.managers import ClosedLoop, MeasuredPoint, WindowPlan, run_point
from benchmarks.measure.calls import CallTiming, time_calls
from benchmarks.results.profiler import profile
from benchmarks.results.schema import ResultRow, ResultWriter, atomic_write_text
from benchmarks.targets.managed import REPO_ROOT, ManagedServer
from export.contract import LOCAL_MODEL_CONFIG_FILE, PREDICT_METHOD

CPU_BATCHING_FILE = REPO_ROOT / "docker" / "batching" / "batching_cpu.config"
SUMMARY_JSON = "perf_check.json"
GOALS = {"overhead_ratio": "<= 1.2", "batching_throughput_ratio": ">= 3"}
ECHO_KINDS = ("sync", "aio")
WARMUP_REQUESTS = 200
GRPC_CLIENT = "aio"  # grpc.aio, the client the module docstring names; rows say so in `client`
SPREAD_FIELDS = ("p50_us", "p99_us", "throughput_rps", "server_cpu_us_per_request", "client_cpu_us_per_request",
                 "avg_processed_batch", "cpu_us_per_call")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--model", default="residual_regressor")
    p.add_argument("--requests", type=int, default=2000, help="single-stream round trips per measurement")
    p.add_argument("--streams", type=int, default=64, help="concurrent streams for throughput (default 64)")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per throughput run")
    p.add_argument("--repeats", type=int, default=3, help="runs of every measurement; the median is reported")
    p.add_argument("--batching-file", type=Path, default=CPU_BATCHING_FILE)
    p.add_argument("--tuned-timeout-micros", type=int, default=5000,
                   help="also measure batching with this batch_timeout_micros (0 = skip; default 5000)")
    p.add_argument("--modes", default="graph,eager,xla", help="served modes to measure (graph is required)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"also write the summary (ratios, goals, model cost) here; the run directory always "
                        f"has it as {SUMMARY_JSON}")
    add_run_args(p)


# ---------------------------------------------------------------------------------------------- rows
def _figure(row: ResultRow, name: str) -> float | None:
    if name in ("p50_us", "p99_us"):
        value = getattr(row, name.replace("_us", "_ms")) * 1000.0
        return None if value != value else round(value, 1)  # NaN (no successes): no figure
    if name == "throughput_rps":
        return round(row.throughput_rps, 1) if row.kind == "grpc" else None
    return row.extra.get(name)


def median_row(rows: list[ResultRow]) -> ResultRow:
    """The run with the median headline figure (throughput for streams, p50 otherwise), plus min/max of
    every figure across the runs."""
    streams = (rows[0].concurrency or 1) > 1
    ordered = sorted(rows, key=(lambda r: r.throughput_rps) if streams else (lambda r: r.p50_ms))
    mid = ordered[len(ordered) // 2]
    spread = {}
    for name in SPREAD_FIELDS:
        values = [v for v in (_figure(r, name) for r in rows) if v is not None]
        if values:
            spread[name] = [min(values), max(values)]
    mid.extra = {**mid.extra, "repeats": len(rows), "spread_min_max": spread}
    return mid


def span_row(point: MeasuredPoint, measurement: str, **kw) -> ResultRow:
    """A served measurement's row (the profiler's), named, with the server's mean processed batch size."""
    batch = point.server_metrics.get("processed_batch_size_mean")
    return profile(point, extra={"measurement": measurement, "avg_processed_batch": round(batch, 2) if batch else None},
                   **{"kind": "grpc", "batch_size": 1, "client": client_name("grpc", GRPC_CLIENT), **kw})


def _call_row(t: CallTiming, model: str, mode: str, measurement: str) -> ResultRow:
    row = ResultRow.from_histogram(t.hist, duration_s=t.wall_s, kind="inprocess", model=model, mode=mode,
                                   batch_size=1, scenario="steady", concurrency=1, server="inprocess")
    row.extra = {"measurement": measurement, "cpu_us_per_call": round(t.cpu_us_per_call, 1)}
    return row


# ---------------------------------------------------------------------------------------------- in-process
def _tf_threads() -> tuple[int, int]:
    """The TensorFlow threads the server uses by default, so "in-process" means the same runtime."""
    try:
        from serving.cli.server import tf_thread_counts
    except ImportError:  # a server without the setting (measuring an older checkout): TF's defaults
        return 0, 0
    return tf_thread_counts(-1, -1)


def in_process(version_dir: Path, model: str, requests: int) -> tuple[ResultRow, ResultRow, dict]:
    """The signature call, the server's graph path, and the model's CPU cost at batch 1 and per row at 64."""
    import numpy as np
    import tensorflow as tf

    from serving.execution.runners import GraphRunner

    intra, inter = _tf_threads()
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    loaded = tf.saved_model.load(str(version_dir))  # kept referenced: it owns the variables the signature uses
    sig = loaded.signatures["serving_default"]
    n = sig.structured_input_signature[1]["inputs"].shape[-1]
    x = np.random.default_rng(0).uniform(-0.1, 0.1, (1, n)).astype(np.float32)
    runner = GraphRunner(version_dir, "perf")
    sig_call = time_calls(lambda: sig(inputs=tf.constant(x))["predictions"].numpy(), requests)
    fast_call = time_calls(lambda: runner.run("serving_default", {"inputs": x}), requests)
    x64 = np.repeat(x, 64, axis=0)
    batch64 = time_calls(lambda: runner.run("serving_default", {"inputs": x64}), requests)
    model_cost = {"model_cpu_us_batch1": round(fast_call.cpu_us_per_call, 1),
                  "model_cpu_us_per_row_batch64": round(batch64.cpu_us_per_call / 64, 2),
                  "tf_threads": {"intra_op": intra, "inter_op": inter}}
    return (_call_row(sig_call, model, "savedmodel", "in-process signature call"),
            _call_row(fast_call, model, "graph-runner", "in-process fastest call (server's graph path)"), model_cost)


# ---------------------------------------------------------------------------------------------- served
def _served_point(server: ManagedServer, payload: bytes, manager: ClosedLoop, plan: WindowPlan,
                  method: str = PREDICT_METHOD) -> MeasuredPoint:
    """One span against `server`, raw bytes (no client-side proto work inside the timing), its CPU charged."""
    return run_point(lambda: make_transport("grpc", server.grpc_target, concurrency=manager.concurrency,
                                            grpc_client=GRPC_CLIENT, grpc_method=method),
                     [payload], manager, plan, server_pids=tuple(server.pids),
                     metrics_url=server.metrics_url if server.rest_port > 0 else "")


def single_stream(server: ManagedServer, payload: bytes, requests: int, method: str = PREDICT_METHOD) -> MeasuredPoint:
    """`requests` round trips of `method`, one in flight, after a warm-up of up to WARMUP_REQUESTS."""
    plan = WindowPlan(warmup_s=0, warmup_requests=min(WARMUP_REQUESTS, requests))
    return _served_point(server, payload, ClosedLoop(1, requests), plan, method)


def concurrent_streams(server: ManagedServer, payload: bytes, streams: int, seconds: float) -> MeasuredPoint:
    """Closed loop: `streams` requests in flight for `seconds` (one window) after a warm-up of up to 2 s."""
    plan = WindowPlan(window_s=seconds, fixed_windows=1, warmup_s=min(2.0, seconds / 4))
    return _served_point(server, payload, ClosedLoop(streams), plan)


@dataclass
class ServedCase:
    label: str  # "graph", "graph + batching", ... (the measurement names start with "served <label>")
    mode: str
    batching_file: Path | None = None
    suffix: str = ""  # of the server label in result rows

    @property
    def server_label(self) -> str:
        return f"embedded-{self.mode}{self.suffix}"


def served_cases(modes: list[str], batching_file: Path, tuned_file: Path | None, tuned_us: int) -> list[ServedCase]:
    cases = [ServedCase("graph", "graph"), ServedCase("graph + batching", "graph", batching_file, "+batching")]
    if tuned_file is not None:
        cases.append(ServedCase(f"graph + batching {tuned_us} us timeout", "graph", tuned_file,
                                f"+batching-{tuned_us}us"))
    return cases + [ServedCase(m, m) for m in modes if m != "graph"]


def measure_server(args: argparse.Namespace, running: ManagedServer, payload: bytes,
                   names: tuple[str | None, str | None], **row_kw) -> list[ResultRow]:
    """One started server: its single-stream row and/or its concurrent-streams row (a None name skips it)."""
    single, streams = names
    kw = dict(model=args.model, target=running.grpc_target, **row_kw)
    rows = []
    if single:
        rows.append(span_row(single_stream(running, payload, args.requests), single,
                             scenario="closed", **kw))
    if streams:
        rows.append(span_row(concurrent_streams(running, payload, args.streams, args.seconds),
                             streams, scenario="closed", **kw))
    return rows


def run_repeats(args: argparse.Namespace, w: ResultWriter, make_server: Callable[[], ManagedServer],
                payload: bytes, names: tuple[str | None, str | None], **row_kw) -> None:
    """--repeats fresh servers; the median row of each measurement goes into the run."""
    runs: list[list[ResultRow]] = []
    for rep in range(args.repeats):
        print(f"[perf] {row_kw['server']} (run {rep + 1}/{args.repeats})", flush=True)
        with make_server() as running:
            runs.append(measure_server(args, running, payload, names, **row_kw))
    for same_measurement in zip(*runs):
        _log(w.append(median_row(list(same_measurement))))


# ---------------------------------------------------------------------------------------------- ratios
def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 3)


def compute_ratios(rows: list[ResultRow], streams: int, modes: list[str], model_cost: dict,
                   tuned_us: int) -> dict[str, float | None]:
    by = {r.extra.get("measurement"): r for r in rows}
    p50 = {name: r.p50_ms * 1000.0 for name, r in by.items()}  # µs
    served = p50["served graph single stream"]
    off, on = by[f"served graph {streams} streams"], by[f"served graph + batching {streams} streams"]
    sig, fast = p50["in-process signature call"], p50["in-process fastest call (server's graph path)"]
    echo = {k: p50[f"gRPC echo round trip ({k} server)"] for k in ECHO_KINDS}
    off_cpu = off.extra["server_cpu_us_per_request"]
    ratios = {
        "overhead_ratio": _ratio(served, sig + echo["sync"]),
        "overhead_ratio_vs_aio_echo": _ratio(served, sig + echo["aio"]),
        "overhead_ratio_vs_fastest_inprocess": _ratio(served, fast + min(echo.values())),
        "batching_throughput_ratio": _ratio(on.throughput_rps, off.throughput_rps),
        "batching_server_cpu_per_request_ratio": _ratio(off_cpu, on.extra["server_cpu_us_per_request"]),
    }
    tuned = by.get(f"served graph + batching {tuned_us} us timeout {streams} streams")
    if tuned is not None:
        ratios["batching_tuned_throughput_ratio"] = _ratio(tuned.throughput_rps, off.throughput_rps)
    if off_cpu:
        best = off_cpu - model_cost["model_cpu_us_batch1"] + model_cost["model_cpu_us_per_row_batch64"]
        ratios["batching_ratio_ceiling_from_server_cpu"] = _ratio(off_cpu, max(best, 1.0))
    for mode in (m for m in modes if m != "graph"):
        ratios[f"{mode}_graph_p50_ratio"] = _ratio(p50[f"served {mode} single stream"], served)
        ratios[f"{mode}_graph_throughput_ratio"] = _ratio(by[f"served {mode} {streams} streams"].throughput_rps,
                                                          off.throughput_rps)
    return ratios


# ---------------------------------------------------------------------------------------------- output
def _log(r: ResultRow) -> ResultRow:
    x = r.extra
    line = f"  {x['measurement']}: p50 {r.p50_ms * 1000:.1f} us, p99 {r.p99_ms * 1000:.1f} us"
    if r.kind == "grpc":
        line += (f", {r.throughput_rps:.1f} req/s, {r.errors} errors; server {x['server_cpu_us_per_request']} us "
                 f"CPU/req ({x['server_cores']} cores), client {x['client_cpu_us_per_request']} us CPU/req "
                 f"({x['client_cores']} cores)")
        line += f"; avg batch {x['avg_processed_batch']}" if x.get("avg_processed_batch") else ""
    print(line, flush=True)
    return r


def print_table(rows: list[ResultRow], ratios: dict) -> None:
    print(f"\n{'measurement':56s} {'p50 us':>9s} {'req/s':>8s} {'srv us/req':>10s} {'cli us/req':>10s} {'batch':>6s}")
    for r in rows:
        x = r.extra
        rps = f"{r.throughput_rps:.1f}" if r.kind == "grpc" else ""
        srv = x.get("server_cpu_us_per_request", x.get("cpu_us_per_call"))
        print(f"{x['measurement']:56s} {r.p50_ms * 1000:9.1f} {rps:>8} {srv or '':>10} "
              f"{x.get('client_cpu_us_per_request') or '':>10} {x.get('avg_processed_batch') or '':>6}")
    print()
    for k, v in ratios.items():
        print(f"{k:44s} {v if v is not None else 'n/a':>8}  {('goal ' + GOALS[k]) if k in GOALS else ''}")


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def tuned_batching_file(batching_file: Path, timeout_us: int) -> Path | None:
    """A copy of the batching file with batch_timeout_micros set to `timeout_us` (None when 0)."""
    if timeout_us <= 0:
        return None
    text = batching_file.read_text()
    line = f"batch_timeout_micros {{ value: {timeout_us} }}"
    tuned, n = re.subn(r"batch_timeout_micros\s*\{\s*value:\s*\d+\s*\}", line, text)
    fd, name = tempfile.mkstemp(prefix="batching-tuned-", suffix=".config")
    os.close(fd)
    Path(name).write_text(tuned if n else f"{text}\n{line}\n")
    return Path(name)


# ---------------------------------------------------------------------------------------------- main
def _check(args: argparse.Namespace) -> tuple[str | None, ModelInfo | None, list[str]]:
    """(problem, the model, served modes): a problem is one line for stderr."""
    config = Path(args.models_dir) / LOCAL_MODEL_CONFIG_FILE
    info = next((i for i in discover_models(args.models_dir) if i.name == args.model), None)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not config.is_file() or info is None:
        return f"{config} or versions of {args.model} not found: export first (`make export`)", None, modes
    if not Path(args.batching_file).is_file():
        return f"batching file {args.batching_file} not found (--batching-file)", None, modes
    if "graph" not in modes:
        return "--modes must include graph (every ratio is relative to it)", None, modes
    if args.repeats < 1 or args.requests < 1 or args.streams < 1 or args.seconds <= 0:
        return "--repeats, --requests, --streams and --seconds must be positive", None, modes
    return None, info, modes


def measure_all(args: argparse.Namespace, w: ResultWriter, info: ModelInfo, modes: list[str]) -> dict:
    """Every measurement into `w`; returns the in-process model cost."""
    print(f"[perf] in-process calls of {args.model} v{info.versions[-1]}", flush=True)
    runs = [in_process(info.latest_dir, args.model, args.requests) for _ in range(args.repeats)]
    for i in (0, 1):
        _log(w.append(median_row([r[i] for r in runs])))
    payload = build_payload(args.model, 1, info.n_features).grpc_bytes
    for kind in ECHO_KINDS:
        run_repeats(args, w, lambda k=kind: ManagedServer("echo", mode=k, log_path=w.run_dir / f"echo-{k}.log"),
                    payload, (f"gRPC echo round trip ({kind} server)", None), mode="echo", server=f"echo-{kind}")
    tuned = tuned_batching_file(Path(args.batching_file), args.tuned_timeout_micros)
    try:
        for case in served_cases(modes, Path(args.batching_file), tuned, args.tuned_timeout_micros):
            def server(c: ServedCase = case) -> ManagedServer:
                return ManagedServer("embedded", mode=c.mode, models_dir=args.models_dir, models=(args.model,),
                                     batching_file=c.batching_file, start_timeout_s=240, stop_timeout_s=60,
                                     extra_args=["--file-system-poll-wait-seconds", "0"],
                                     log_path=w.run_dir / f"{c.server_label}.log")

            single = f"served {case.label} single stream" if case.batching_file is None else None
            run_repeats(args, w, server, payload, (single, f"served {case.label} {args.streams} streams"),
                        mode=case.mode, server=case.server_label)
    finally:
        if tuned is not None:
            tuned.unlink(missing_ok=True)
    return runs[len(runs) // 2][2]


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    problem, info, modes = _check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    w = open_run(args, "perf-check", server_kind="embedded", server_mode="graph")
    load_start = _loadavg()
    model_cost = measure_all(args, w, info, modes)
    ratios = compute_ratios(w.rows, args.streams, modes, model_cost, args.tuned_timeout_micros)
    summary = {"run_id": w.run_id, "model": args.model, "version": info.versions[-1], "repeats": args.repeats,
               "batching_file": str(args.batching_file), "load_average_at_start": load_start,
               "load_average_at_end": _loadavg(), "in_process_model_cost": model_cost, "ratios": ratios,
               "goals": GOALS}
    for path in [w.run_dir / SUMMARY_JSON] + ([args.out] if args.out else []):
        atomic_write_text(Path(path), json.dumps(summary, indent=2))
    print_table(w.rows, ratios)
    finish_run(w)
    print(f"wrote {w.run_dir / SUMMARY_JSON}" + (f" and {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    from benchmarks.commands.common import run_module

    raise SystemExit(run_module("python -m benchmarks.commands.perf_check", __doc__, add_arguments, main))
