"""How much does the embedded server cost on top of the model? (`python -m benchmarks.commands.perf_check`)

Measures, on one exported model, and writes a JSON result file plus a table:

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
Each measurement is repeated --repeats times (fresh server each time); the median is reported with min/max.

The in-process model cost (CPU per call at batch 1 and per row at batch 64) gives the ceiling of the batching
ratio on this server: batching can at most remove the model's per-request share of the server's CPU, so
  ceiling = server CPU per request unbatched / (that - model CPU at batch 1 + model CPU per row at batch 64).

The echo servers are gRPC servers (thread-pool and asyncio, the embedded server's kind) answering the Predict
method with the request bytes: "gRPC and nothing else". Clients run in this process on the same machine as
the server, as the benchmarks do; on a 2-core machine they compete with the server for CPU.
Numbers are measurements, not assertions: nothing here fails because a goal is missed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
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

REPO_ROOT = Path(__file__).resolve().parents[2]
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
    server_cpu_us_per_request: float | None = None
    client_cpu_us_per_request: float | None = None
    server_cores: float | None = None
    client_cores: float | None = None
    avg_processed_batch: float | None = None
    detail: dict = field(default_factory=dict)


@dataclass
class _Server:
    """A started server child process: its gRPC port, its REST port (if any), and its psutil handle."""

    proc: subprocess.Popen
    port: int
    rest_port: int | None = None

    def cpu_seconds(self) -> float:
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system + t.children_user + t.children_system


# ---------------------------------------------------------------------------------------------- echo servers
def run_echo_server(threads: int, kind: str) -> None:
    """A gRPC server that answers Predict with the request bytes (child process of this script)."""
    import grpc

    if kind == "aio":
        async def serve() -> None:
            async def echo(request: bytes, _context) -> bytes:
                return request

            handler = grpc.method_handlers_generic_handler(
                "tensorflow.serving.PredictionService", {"Predict": grpc.unary_unary_rpc_method_handler(echo)})
            server = grpc.aio.server(handlers=[handler], options=[("grpc.so_reuseport", 0)])
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            print(f"ECHO_PORT {port}", flush=True)
            await server.wait_for_termination()

        asyncio.run(serve())
        return

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
def _start(argv: list[str], pattern: re.Pattern, timeout: float = 240) -> tuple[subprocess.Popen, re.Match, Path]:
    log = Path(tempfile.mkstemp(prefix="perf-check-", suffix=".log")[1])
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pattern.search(log.read_text(errors="replace"))
        if m:
            return proc, m, log
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


def _batch_hist(rest_port: int | None) -> tuple[float, float]:
    """(count, sum) of :tensorflow:serving:batching_session:processed_batch_size over all models."""
    if rest_port is None:
        return 0.0, 0.0
    import requests

    text = requests.get(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics", timeout=10).text
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith(":tensorflow:serving:batching_session:processed_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
    return count, total


class _CpuWindow:
    """Server and client CPU seconds and the batch histogram around a measured window."""

    def __init__(self, server: _Server) -> None:
        self.server = server

    def __enter__(self) -> "_CpuWindow":
        self.batches0 = _batch_hist(self.server.rest_port)
        self.s0, self.c0, self.w0 = self.server.cpu_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s1, self.c1, self.w1 = self.server.cpu_seconds(), time.process_time(), time.perf_counter()
        self.batches1 = _batch_hist(self.server.rest_port)

    def fill(self, m: Measurement, requests: int) -> Measurement:
        wall = max(1e-9, self.w1 - self.w0)
        n = max(1, requests)
        m.server_cpu_us_per_request = round((self.s1 - self.s0) / n * 1e6, 1)
        m.client_cpu_us_per_request = round((self.c1 - self.c0) / n * 1e6, 1)
        m.server_cores = round((self.s1 - self.s0) / wall, 2)
        m.client_cores = round((self.c1 - self.c0) / wall, 2)
        batches = self.batches1[0] - self.batches0[0]
        if batches > 0:
            m.avg_processed_batch = round((self.batches1[1] - self.batches0[1]) / batches, 2)
        return m


def single_stream(server: _Server, payload: bytes, requests: int, name: str,
                  method: str = PREDICT_METHOD) -> Measurement:
    """Round trips of one request, one at a time, raw bytes (no client-side proto work inside the timing)."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        call = ch.unary_unary(method)
        for _ in range(min(200, requests)):
            call(payload, timeout=30)
        times = np.empty(requests)
        with _CpuWindow(server) as window:
            for i in range(requests):
                t = time.perf_counter()
                call(payload, timeout=30)
                times[i] = time.perf_counter() - t
    m = Measurement(name, p50_us=round(float(np.percentile(times, 50)) * 1e6, 1),
                    p99_us=round(float(np.percentile(times, 99)) * 1e6, 1), detail={"requests": requests})
    return window.fill(m, requests)


def concurrent_streams(server: _Server, payload: bytes, streams: int, seconds: float, name: str) -> Measurement:
    """Closed loop: `streams` coroutines each keep one request in flight for `seconds` (grpc.aio client,
    raw bytes: the cheapest Python client there is; its CPU share is reported next to the server's)."""
    import grpc

    async def run() -> tuple[int, int, list[float], _CpuWindow]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            call = ch.unary_unary(PREDICT_METHOD)
            ok, errors, lat = 0, 0, []
            measuring = [False]
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

            window = _CpuWindow(server)

            async def bracket() -> None:
                await asyncio.sleep(max(0.0, warm_end - time.perf_counter()))
                window.__enter__()
                measuring[0] = True
                await asyncio.sleep(max(0.0, end - time.perf_counter()))
                window.__exit__()

            await asyncio.gather(bracket(), *(stream() for _ in range(streams)))
            return ok, errors, lat, window

    ok, errors, lat, window = asyncio.run(run())
    arr = np.array(lat) if lat else np.array([np.nan])
    m = Measurement(name, p50_us=round(float(np.percentile(arr, 50)) * 1e6, 1),
                    p99_us=round(float(np.percentile(arr, 99)) * 1e6, 1),
                    throughput_rps=round(ok / seconds, 1), errors=errors,
                    detail={"streams": streams, "seconds": seconds, "ok": ok})
    return window.fill(m, ok + errors)


def in_process(version_dir: Path, requests: int) -> tuple[Measurement, Measurement, dict]:
    import tensorflow as tf

    from serving.runners import GraphRunner

    try:  # the same TensorFlow threads as the server uses by default, so "in-process" means the same runtime
        from serving.server import tf_thread_counts

        intra, inter = tf_thread_counts(-1, -1)
    except ImportError:  # an older server (measuring a "before"): TF's defaults
        intra, inter = 0, 0
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    loaded = tf.saved_model.load(str(version_dir))
    sig = loaded.signatures["serving_default"]
    n = sig.structured_input_signature[1]["inputs"].shape[-1]
    x = np.random.default_rng(0).uniform(-0.1, 0.1, (1, n)).astype(np.float32)
    runner = GraphRunner(version_dir, "perf")

    def timed(fn) -> tuple[np.ndarray, float]:
        for _ in range(200):
            fn()
        out = np.empty(requests)
        c0 = time.process_time()
        for i in range(requests):
            t = time.perf_counter()
            fn()
            out[i] = time.perf_counter() - t
        return out, (time.process_time() - c0) / requests * 1e6

    a, a_cpu = timed(lambda: sig(inputs=tf.constant(x))["predictions"].numpy())
    b, b_cpu = timed(lambda: runner.run("serving_default", {"inputs": x}))
    x64 = np.repeat(x, 64, axis=0)
    _, b64_cpu = timed(lambda: runner.run("serving_default", {"inputs": x64}))
    mk = lambda name, t, cpu: Measurement(name, p50_us=round(float(np.percentile(t, 50)) * 1e6, 1),  # noqa: E731
                                          p99_us=round(float(np.percentile(t, 99)) * 1e6, 1),
                                          server_cpu_us_per_request=round(cpu, 1), detail={"requests": requests})
    model_cost = {"model_cpu_us_batch1": round(b_cpu, 1), "model_cpu_us_per_row_batch64": round(b64_cpu / 64, 2),
                  "tf_threads": {"intra_op": intra, "inter_op": inter}}
    return mk("in-process signature call", a, a_cpu), mk("in-process fastest call (server's graph path)", b, b_cpu), model_cost


def _median(ms: list[Measurement]) -> Measurement:
    """The run with the median headline number, plus min/max of every number across the runs."""
    key = (lambda m: m.throughput_rps or 0.0) if ms[0].throughput_rps is not None else (lambda m: m.p50_us or 0.0)
    ordered = sorted(ms, key=key)
    mid = ordered[len(ordered) // 2]
    spread = {}
    for f in ("p50_us", "p99_us", "throughput_rps", "server_cpu_us_per_request", "client_cpu_us_per_request",
              "avg_processed_batch"):
        values = [getattr(m, f) for m in ms if getattr(m, f) is not None]
        if values:
            spread[f] = [min(values), max(values)]
    out = Measurement(**{**asdict(mid), "detail": {**mid.detail, "repeats": len(ms), "spread_min_max": spread}})
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 3)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.commands.perf_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path("artifacts/models"))
    parser.add_argument("--model", default="residual_regressor")
    parser.add_argument("--requests", type=int, default=2000, help="single-stream round trips per measurement")
    parser.add_argument("--streams", type=int, default=64, help="concurrent streams for throughput (default 64)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every measurement; the median is reported")
    parser.add_argument("--batching-file", type=Path, default=CPU_BATCHING_FILE)
    parser.add_argument("--tuned-timeout-micros", type=int, default=5000,
                        help="also measure batching with this batch_timeout_micros (0 = skip; default 5000)")
    parser.add_argument("--modes", default="graph,eager,xla", help="served modes to measure (graph is required)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/results/embedded_perf.json"))
    parser.add_argument("--echo-server", choices=("sync", "aio"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        run_echo_server(args.threads, args.echo_server)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config = args.models_dir / "models.local.config"
    model_dir = args.models_dir / args.model
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()) if model_dir.is_dir() else []
    if not config.is_file() or not versions:
        parser.error(f"{config} or versions of {args.model} not found: export first (`make export`)")
    if not args.batching_file.is_file():
        parser.error(f"batching file {args.batching_file} not found (--batching-file)")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "graph" not in modes:
        parser.error("--modes must include graph (every ratio is relative to it)")
    try:
        load_start = os.getloadavg()
    except OSError:
        load_start = None

    results: list[Measurement] = []

    def log(m: Measurement) -> None:
        results.append(m)
        extra = f", {m.throughput_rps} req/s, {m.errors} errors" if m.throughput_rps is not None else ""
        cpu = (f"; server {m.server_cpu_us_per_request} us CPU/req ({m.server_cores} cores), client "
               f"{m.client_cpu_us_per_request} us CPU/req ({m.client_cores} cores)") if m.client_cores is not None else ""
        batch = f"; avg batch {m.avg_processed_batch}" if m.avg_processed_batch is not None else ""
        print(f"  {m.name}: p50 {m.p50_us} us, p99 {m.p99_us} us{extra}{cpu}{batch}", flush=True)

    print(f"[perf] in-process calls of {args.model} v{versions[-1]}", flush=True)
    runs = [in_process(model_dir / str(versions[-1]), args.requests) for _ in range(args.repeats)]
    sig_call = _median([r[0] for r in runs])
    fast_call = _median([r[1] for r in runs])
    model_cost = runs[len(runs) // 2][2]
    import tensorflow as tf

    n_features = tf.saved_model.load(str(model_dir / str(versions[-1]))).signatures["serving_default"] \
        .structured_input_signature[1]["inputs"].shape[-1]
    log(sig_call)
    log(fast_call)
    payload = _request_bytes(args.model, n_features)

    echoes: dict[str, Measurement] = {}
    for kind in ("sync", "aio"):
        print(f"[perf] bare gRPC echo server ({kind})", flush=True)
        ms = []
        for _ in range(args.repeats):
            proc, match, _ = _start([sys.executable, "-m", "benchmarks.commands.perf_check", "--echo-server", kind], _ECHO)
            try:
                ms.append(single_stream(_Server(proc, int(match.group(1))), payload, args.requests,
                                        f"gRPC echo round trip ({kind} server)"))
            finally:
                _stop(proc)
        echoes[kind] = _median(ms)
        log(echoes[kind])

    tuned_file = None
    if args.tuned_timeout_micros > 0:
        text = args.batching_file.read_text()
        tuned_text, n = re.subn(r"batch_timeout_micros\s*\{\s*value:\s*\d+\s*\}",
                                f"batch_timeout_micros {{ value: {args.tuned_timeout_micros} }}", text)
        if not n:
            tuned_text = text + f"\nbatch_timeout_micros {{ value: {args.tuned_timeout_micros} }}\n"
        tuned_file = Path(tempfile.mkstemp(prefix="batching-tuned-", suffix=".config")[1])
        tuned_file.write_text(tuned_text)

    servers: list[tuple[str, Path | None, str]] = [("graph", None, "graph"), ("graph", args.batching_file, "graph + batching")]
    if tuned_file is not None:
        servers.append(("graph", tuned_file, f"graph + batching {args.tuned_timeout_micros} us timeout"))
    servers += [(m, None, m) for m in modes if m != "graph"]
    listening = re.compile(r"listening: gRPC (\S+):(\d+), REST (?:(\S+):(\d+)|off)")
    for mode, batching, label in servers:
        single: list[Measurement] = []
        multi: list[Measurement] = []
        for rep in range(args.repeats):
            print(f"[perf] embedded server, {label} (run {rep + 1}/{args.repeats})", flush=True)
            argv = [sys.executable, "-m", "serving", "serve", "--model-config-file", str(config), "--mode", mode,
                    "--grpc-port", "0", "--rest-port", "0", "--file-system-poll-wait-seconds", "0"]
            if batching is not None:
                argv += ["--enable-batching", "--batching-parameters-file", str(batching)]
            proc, match, _ = _start(argv, listening)
            server = _Server(proc, int(match.group(2)), int(match.group(4)) if match.group(4) else None)
            try:
                _wait_serving(server.port)
                if batching is None:
                    single.append(single_stream(server, payload, args.requests, f"served {label} single stream"))
                multi.append(concurrent_streams(server, payload, args.streams, args.seconds,
                                                f"served {label} {args.streams} streams"))
            finally:
                _stop(proc)
        if single:
            log(_median(single))
        log(_median(multi))
    if tuned_file is not None:
        tuned_file.unlink(missing_ok=True)

    by = {m.name: m for m in results}
    s = args.streams
    served = by["served graph single stream"]
    off = by[f"served graph {s} streams"]
    on = by[f"served graph + batching {s} streams"]
    ratios = {
        "overhead_ratio": _ratio(served.p50_us, sig_call.p50_us + echoes["sync"].p50_us),
        "overhead_ratio_vs_aio_echo": _ratio(served.p50_us, sig_call.p50_us + echoes["aio"].p50_us),
        "overhead_ratio_vs_fastest_inprocess": _ratio(served.p50_us, fast_call.p50_us + min(
            echoes["sync"].p50_us, echoes["aio"].p50_us)),
        "batching_throughput_ratio": _ratio(on.throughput_rps, off.throughput_rps),
        "batching_server_cpu_per_request_ratio": _ratio(off.server_cpu_us_per_request, on.server_cpu_us_per_request),
    }
    tuned_name = f"served graph + batching {args.tuned_timeout_micros} us timeout {s} streams"
    if tuned_name in by:
        ratios["batching_tuned_throughput_ratio"] = _ratio(by[tuned_name].throughput_rps, off.throughput_rps)
    if off.server_cpu_us_per_request:
        best = off.server_cpu_us_per_request - model_cost["model_cpu_us_batch1"] + model_cost["model_cpu_us_per_row_batch64"]
        ratios["batching_ratio_ceiling_from_server_cpu"] = _ratio(off.server_cpu_us_per_request, max(best, 1.0))
    for mode in modes:
        if mode == "graph":
            continue
        ratios[f"{mode}_graph_p50_ratio"] = _ratio(by[f"served {mode} single stream"].p50_us, served.p50_us)
        ratios[f"{mode}_graph_throughput_ratio"] = _ratio(by[f"served {mode} {s} streams"].throughput_rps,
                                                          off.throughput_rps)
    goals = {"overhead_ratio": "<= 1.2", "batching_throughput_ratio": ">= 3"}
    try:
        load_end = os.getloadavg()
    except OSError:
        load_end = None
    doc = {"created_at": datetime.now(timezone.utc).isoformat(), "host": platform.node(), "cpus": os.cpu_count(),
           "cpu_model": _cpu_model(), "load_average_at_start": load_start, "load_average_at_end": load_end,
           "model": args.model, "version": versions[-1], "repeats": args.repeats,
           "batching_file": str(args.batching_file), "in_process_model_cost": model_cost,
           "measurements": [asdict(m) for m in results], "ratios": ratios, "goals": goals}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(args.out)

    print(f"\n{'measurement':56s} {'p50 us':>9s} {'req/s':>8s} {'srv us/req':>10s} {'cli us/req':>10s} {'batch':>6s}")
    for m in results:
        print(f"{m.name:56s} {m.p50_us or '':>9} {m.throughput_rps or '':>8} {m.server_cpu_us_per_request or '':>10} "
              f"{m.client_cpu_us_per_request or '':>10} {m.avg_processed_batch or '':>6}")
    print()
    for k, v in ratios.items():
        print(f"{k:44s} {v if v is not None else 'n/a':>8}  {('goal ' + goals[k]) if k in goals else ''}")
    print(f"\nwrote {args.out}")
    return 0


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
