"""Locust users for TF Serving's Predict over gRPC (official protos) and REST.

Usable directly (`locust -f benchmarks/load/locustfile.py --host http://127.0.0.1:8501 ...`) or through
`python -m benchmarks locust`, which sets the BENCH_* environment variables and runs headless, local
or distributed (1 master + N workers), and collects the raw timings below into the result schema.

Settings (environment, so that master and workers agree without Locust-specific plumbing):
  BENCH_MODEL (residual_regressor)  BENCH_BATCH (1)  BENCH_N_FEATURES (10)  BENCH_SIGNATURE
  BENCH_GRPC_TARGET (127.0.0.1:8500)  BENCH_WAIT_S (0 = closed loop, no think time)
  BENCH_LOCUST_RAW: file where the master (or a local run) writes the merged raw histograms.

Why our own histograms: Locust rounds stored response times to about 2 significant digits, so
percentiles from its CSV are coarse. Every request is also recorded, unrounded, into an HdrHistogram
through the events.request listener; workers ship theirs to the master with each stats report.
"""
from __future__ import annotations

# gRPC must be switched to gevent before any channel exists (as in Locust's examples/grpc).
import grpc  # noqa: E402  isort: skip
import grpc.experimental.gevent as grpc_gevent  # noqa: E402  isort: skip

grpc_gevent.init_gevent()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

from locust import FastHttpUser, User, constant, events, task  # noqa: E402
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a file by locust: find our package

from benchmarks.measure.histogram import LatencyHistogram  # noqa: E402
from benchmarks.requests.builder import RequestSpec, build_requests  # noqa: E402
from benchmarks.requests.tensors import InputOptions  # noqa: E402
from export.contract import DEFAULT_SIGNATURE, GRPC_MESSAGE_OPTIONS, PREDICT_METHOD  # noqa: E402

MODEL = os.environ.get("BENCH_MODEL", "residual_regressor")
BATCH = int(os.environ.get("BENCH_BATCH", "1"))
N_FEATURES = int(os.environ.get("BENCH_N_FEATURES", "10"))
SIGNATURE = os.environ.get("BENCH_SIGNATURE", DEFAULT_SIGNATURE)
GRPC_TARGET = os.environ.get("BENCH_GRPC_TARGET", "127.0.0.1:8500")
WAIT_S = float(os.environ.get("BENCH_WAIT_S", "0"))
RAW_FILE = os.environ.get("BENCH_LOCUST_RAW", "")

# built once per process; the project's fast path for the default signature, else the served signature's
PAYLOAD = build_requests(RequestSpec(MODEL, "grpc", GRPC_TARGET, N_FEATURES,
                                     InputOptions(signature=SIGNATURE))).payload(BATCH)


# ------------------------------------------------------------------------------------------
# raw timing collection
# ------------------------------------------------------------------------------------------
class _Raw:
    def __init__(self) -> None:
        self.hists: dict[str, LatencyHistogram] = {}
        self.errors: dict[str, Counter] = {}
        self.t_start: float | None = None
        self.t_stop: float | None = None
        self.workers_reported: set[str] = set()

    def hist(self, kind: str) -> LatencyHistogram:
        return self.hists.setdefault(kind, LatencyHistogram())

    def err(self, kind: str) -> Counter:
        return self.errors.setdefault(kind, Counter())


RAW = _Raw()


def _error_code(exception, response) -> str:
    if isinstance(exception, grpc.RpcError) and hasattr(exception, "code"):
        return exception.code().name
    status = getattr(response, "status_code", None)
    if status:
        return str(status)
    return type(exception).__name__


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, response=None, context=None,
                exception=None, **_kw):
    kind = request_type.lower() if request_type.lower() == "grpc" else "rest"
    if exception is None:
        RAW.hist(kind).record_us(response_time * 1000.0)
    else:
        RAW.err(kind)[_error_code(exception, response)] += 1


@events.report_to_master.add_listener
def _ship(client_id, data):
    data["bench_raw"] = {k: h.encode() for k, h in RAW.hists.items()}
    data["bench_errors"] = {k: dict(c) for k, c in RAW.errors.items()}
    RAW.hists.clear()
    RAW.errors.clear()


@events.worker_report.add_listener
def _receive(client_id, data):
    RAW.workers_reported.add(client_id)
    for k, enc in data.get("bench_raw", {}).items():
        RAW.hist(k).merge(LatencyHistogram.decode(enc))
    for k, errs in data.get("bench_errors", {}).items():
        RAW.err(k).update(errs)


@events.test_start.add_listener
def _start(environment, **_kw):
    if not isinstance(environment.runner, WorkerRunner) and RAW.t_start is None:
        RAW.t_start = time.time()


def _write(environment) -> None:
    if not RAW_FILE or isinstance(environment.runner, WorkerRunner):
        return
    from benchmarks.results.schema import atomic_write_text

    runner = environment.runner
    doc = {
        "model": MODEL, "batch_size": BATCH, "grpc_target": GRPC_TARGET, "host": environment.host,
        "t_start": RAW.t_start, "t_stop": RAW.t_stop or time.time(),
        "distributed": isinstance(runner, MasterRunner),
        "workers_reported": sorted(RAW.workers_reported),
        "histograms": {k: h.encode() for k, h in RAW.hists.items()},
        "errors": {k: dict(c) for k, c in RAW.errors.items()},
        "locust_stats": {e.name + "|" + e.method: {
            "num_requests": e.num_requests, "num_failures": e.num_failures,
            "p50_ms": e.get_response_time_percentile(0.5), "p99_ms": e.get_response_time_percentile(0.99)}
            for e in runner.stats.entries.values()},
        "cpu_warning": bool(getattr(runner, "cpu_warning_emitted", False) or
                            getattr(runner, "worker_cpu_warning_emitted", False)),
    }
    atomic_write_text(Path(RAW_FILE), json.dumps(doc, indent=1))


@events.test_stop.add_listener
def _stop(environment, **_kw):
    if RAW.t_stop is None:
        RAW.t_stop = time.time()
    _write(environment)  # partial: workers' final reports may still come


@events.quitting.add_listener
def _quit(environment, **_kw):
    _write(environment)  # final: after the workers' last reports


# ------------------------------------------------------------------------------------------
# users
# ------------------------------------------------------------------------------------------
class GrpcPredictUser(User):
    """Predict over gRPC with the official PredictionService method and pre-serialised request."""

    wait_time = constant(WAIT_S)

    def on_start(self) -> None:
        self._channel = grpc.insecure_channel(GRPC_TARGET, options=GRPC_MESSAGE_OPTIONS)
        self._predict = self._channel.unary_unary(PREDICT_METHOD)  # bytes in, bytes out

    def on_stop(self) -> None:
        self._channel.close()

    @task
    def predict(self) -> None:
        t0 = time.perf_counter()
        exc, length = None, 0
        try:
            length = len(self._predict(PAYLOAD.grpc_bytes, timeout=30))
        except grpc.RpcError as e:
            exc = e
        self.environment.events.request.fire(request_type="grpc", name=f"{MODEL}:predict",
                                             response_time=(time.perf_counter() - t0) * 1000.0,
                                             response_length=length, response=None, context=None, exception=exc)


class RestPredictUser(FastHttpUser):
    """Predict over REST (POST /v1/models/<model>:predict) with the same numbers as JSON."""

    wait_time = constant(WAIT_S)

    @task
    def predict(self) -> None:
        self.client.post(PAYLOAD.rest_path, data=PAYLOAD.rest_body, name=f"{MODEL}:predict",
                         headers={"Content-Type": "application/json"})
