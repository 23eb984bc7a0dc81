"""How much does the embedded server cost on top of the model? (`python -m serving.perf_check`)

Measures, on one exported model, and writes a JSON result file plus a table:

  overhead      served graph-mode gRPC p50 (batch 1, one stream) / (in-process SavedModel signature call
                p50 + bare gRPC echo round trip p50)                          goal <= 1.2
                (also reported against the fastest in-process call, the one the server uses)
  batching      throughput at 64 concurrent streams, batching on / off        goal >= 3
                (batching file: docker/batching/batching_cpu.config, what TF Serving's CPU container reads)
  eager / graph p50 and 64-stream throughput of eager-mode serving relative to graph mode (xla too)

The echo server is a grpc server of the same kind (sync, same thread pool size) answering the Predict
method with the request bytes: it is "gRPC and nothing else". Clients run in this process on the same
machine as the server, as the benchmarks do; on a 2-core machine they compete with the server for CPU.
Numbers are measurements, not assertions: nothing here fails because a goal is missed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
CPU_BATCHING_FILE = REPO_ROOT / "docker" / "batching" / "batching_cpu.config"
_LISTENING = re.compile(r"listening: gRPC (\S+):(\d+)")
_ECHO = re.compile(r"ECHO_PORT (\d+)")


@dataclass
class Measurement:
    name: str
    p50_us: float | None = None
    p99_us: float | None = None
    throughput_rps: float | None = None
    errors: int = 0
    detail: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- echo server
def run_echo_server(threads: int) -> None:
    """A gRPC server that answers Predict with the request bytes (child process of this script)."""
    import grpc

    def echo(request: bytes, _context) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService", {"Predict": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.server(ThreadPoolExecutor(max_workers=threads), handlers=[handler], options=[("grpc.so_reuseport", 0)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"ECHO_PORT {port}", flush=True)
    server.wait_for_termination()  # SIGTERM from the parent ends the process


# ---------------------------------------------------------------------------------------------- helpers
def _start(argv: list[str], pattern: re.Pattern, timeout: float = 240) -> tuple[subprocess.Popen, int, Path]:
    log = Path(tempfile.mkstemp(prefix="perf-check-", suffix=".log")[1])
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pattern.search(log.read_text(errors="replace"))
        if m:
            return proc, int(m.groups()[-1]), log
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{' '.join(argv[:5])} did not start:\n{log.read_text()[-3000:]}")


def _wait_serving(port: int, timeout: float = 240) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    raise RuntimeError(f"server on {port} never became SERVING")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _request_bytes(model: str, n_features: int, rows: int = 1) -> bytes:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    x = np.random.default_rng(0).uniform(-0.1, 0.1, (rows, n_features)).astype(np.float32)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs["inputs"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_content=x.tobytes(),
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in x.shape])))
    return req.SerializeToString()


def single_stream(port: int, payload: bytes, requests: int, name: str) -> Measurement:
    """Batch-1 round trips, one at a time, raw bytes (no client-side proto work inside the timing)."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(PREDICT_METHOD)
        for _ in range(min(200, requests)):
            call(payload, timeout=30)
        times = np.empty(requests)
        for i in range(requests):
            t = time.perf_counter()
            call(payload, timeout=30)
            times[i] = time.perf_counter() - t
    return Measurement(name, p50_us=round(float(np.percentile(times, 50)) * 1e6, 1),
                       p99_us=round(float(np.percentile(times, 99)) * 1e6, 1), detail={"requests": requests})


def concurrent_streams(port: int, payload: bytes, streams: int, seconds: float, name: str) -> Measurement:
    """Closed loop: `streams` coroutines each keep one request in flight for `seconds` (grpc.aio client)."""
    import grpc

    async def run() -> tuple[int, int, list[float]]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary(PREDICT_METHOD)
            ok, errors, lat = 0, 0, []
            warm_end = time.perf_counter() + min(2.0, seconds / 4)
            end = warm_end + seconds

            async def stream() -> None:
                nonlocal ok, errors
                while True:
                    t = time.perf_counter()
                    if t >= end:
                        return
                    try:
                        await call(payload, timeout=30)
                        if t >= warm_end:
                            ok += 1
                            lat.append(time.perf_counter() - t)
                    except grpc.RpcError:
                        if t >= warm_end:
                            errors += 1

            await asyncio.gather(*(stream() for _ in range(streams)))
            return ok, errors, lat

    ok, errors, lat = asyncio.run(run())
    arr = np.array(lat) if lat else np.array([np.nan])
    return Measurement(name, p50_us=round(float(np.percentile(arr, 50)) * 1e6, 1),
                       p99_us=round(float(np.percentile(arr, 99)) * 1e6, 1),
                       throughput_rps=round(ok / seconds, 1), errors=errors,
                       detail={"streams": streams, "seconds": seconds, "ok": ok})


def in_process(version_dir: Path, requests: int) -> tuple[Measurement, Measurement]:
    import tensorflow as tf

    from serving.runners import GraphRunner

    loaded = tf.saved_model.load(str(version_dir))
    sig = loaded.signatures["serving_default"]
    n = sig.structured_input_signature[1]["inputs"].shape[-1]
    x = np.random.default_rng(0).uniform(-0.1, 0.1, (1, n)).astype(np.float32)
    runner = GraphRunner(version_dir, "perf")

    def timed(fn) -> np.ndarray:
        for _ in range(200):
            fn()
        out = np.empty(requests)
        for i in range(requests):
            t = time.perf_counter()
            fn()
            out[i] = time.perf_counter() - t
        return out

    a = timed(lambda: sig(inputs=tf.constant(x))["predictions"].numpy())
    b = timed(lambda: runner.run("serving_default", {"inputs": x}))
    mk = lambda name, t: Measurement(name, p50_us=round(float(np.percentile(t, 50)) * 1e6, 1),  # noqa: E731
                                     p99_us=round(float(np.percentile(t, 99)) * 1e6, 1), detail={"requests": requests})
    return mk("in-process signature call", a), mk("in-process fastest call (server's graph path)", b)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.perf_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path("artifacts/models"))
    parser.add_argument("--model", default="residual_regressor")
    parser.add_argument("--requests", type=int, default=2000, help="single-stream round trips per measurement")
    parser.add_argument("--streams", type=int, default=64, help="concurrent streams for throughput (default 64)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per throughput run")
    parser.add_argument("--batching-file", type=Path, default=CPU_BATCHING_FILE)
    parser.add_argument("--out", type=Path, default=Path("artifacts/results/embedded_perf.json"))
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        run_echo_server(args.threads)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config = args.models_dir / "models.local.config"
    model_dir = args.models_dir / args.model
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()) if model_dir.is_dir() else []
    if not config.is_file() or not versions:
        parser.error(f"{config} or versions of {args.model} not found: export first (`make export`)")
    if not args.batching_file.is_file():
        parser.error(f"batching file {args.batching_file} not found (--batching-file)")

    results: list[Measurement] = []

    def log(m: Measurement) -> None:
        results.append(m)
        print(f"  {m.name}: p50 {m.p50_us} us, p99 {m.p99_us} us"
              + (f", {m.throughput_rps} req/s, {m.errors} errors" if m.throughput_rps is not None else ""), flush=True)

    print(f"[perf] in-process calls of {args.model} v{versions[-1]}", flush=True)
    sig_call, fast_call = in_process(model_dir / str(versions[-1]), args.requests)
    import tensorflow as tf

    n_features = tf.saved_model.load(str(model_dir / str(versions[-1]))).signatures["serving_default"] \
        .structured_input_signature[1]["inputs"].shape[-1]
    log(sig_call)
    log(fast_call)
    payload = _request_bytes(args.model, n_features)

    print("[perf] bare gRPC echo server", flush=True)
    proc, port, _ = _start([sys.executable, "-m", "serving.perf_check", "--echo-server"], _ECHO)
    try:
        echo = single_stream(port, payload, args.requests, "gRPC echo round trip")
        log(echo)
    finally:
        _stop(proc)

    servers = [("graph", False), ("graph", True), ("eager", False), ("xla", False)]
    for mode, batching in servers:
        label = f"{mode}{' + batching' if batching else ''}"
        print(f"[perf] embedded server, {label}", flush=True)
        argv = [sys.executable, "-m", "serving", "serve", "--model-config-file", str(config), "--mode", mode,
                "--grpc-port", "0", "--rest-port", "-1", "--file-system-poll-wait-seconds", "0"]
        if batching:
            argv += ["--enable-batching", "--batching-parameters-file", str(args.batching_file)]
        proc, port, _ = _start(argv, _LISTENING)
        try:
            _wait_serving(port)
            if not batching:
                log(single_stream(port, payload, args.requests, f"served {label} single stream"))
            log(concurrent_streams(port, payload, args.streams, args.seconds, f"served {label} {args.streams} streams"))
        finally:
            _stop(proc)

    by = {m.name: m for m in results}
    s = args.streams
    served = by["served graph single stream"].p50_us
    ratios = {
        "overhead_ratio": round(served / (sig_call.p50_us + echo.p50_us), 3),
        "overhead_ratio_vs_fastest_inprocess": round(served / (fast_call.p50_us + echo.p50_us), 3),
        "batching_throughput_ratio": round(by[f"served graph + batching {s} streams"].throughput_rps
                                           / by[f"served graph {s} streams"].throughput_rps, 3),
        "eager_graph_p50_ratio": round(by["served eager single stream"].p50_us / served, 3),
        "eager_graph_throughput_ratio": round(by[f"served eager {s} streams"].throughput_rps
                                              / by[f"served graph {s} streams"].throughput_rps, 3),
        "xla_graph_p50_ratio": round(by["served xla single stream"].p50_us / served, 3),
        "xla_graph_throughput_ratio": round(by[f"served xla {s} streams"].throughput_rps
                                            / by[f"served graph {s} streams"].throughput_rps, 3),
    }
    goals = {"overhead_ratio": "<= 1.2", "batching_throughput_ratio": ">= 3"}
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    doc = {"created_at": datetime.now(timezone.utc).isoformat(), "host": platform.node(), "cpus": os.cpu_count(),
           "load_average_at_end": load, "model": args.model, "version": versions[-1],
           "batching_file": str(args.batching_file), "measurements": [asdict(m) for m in results],
           "ratios": ratios, "goals": goals}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(args.out)

    print(f"\n{'measurement':48s} {'p50 us':>9s} {'p99 us':>9s} {'req/s':>9s} {'errors':>7s}")
    for m in results:
        print(f"{m.name:48s} {m.p50_us or '':>9} {m.p99_us or '':>9} {m.throughput_rps or '':>9} {m.errors:>7}")
    print()
    for k, v in ratios.items():
        print(f"{k:40s} {v:8.3f}  {('goal ' + goals[k]) if k in goals else ''}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
