"""Locust users for any model TF Serving serves, over gRPC (official protos) and REST.

Usable directly (`locust -f benchmarks/load/locustfile.py --host http://127.0.0.1:8501 --bench-model NAME ...`,
local, `--master` or `--worker`) or through `python -m benchmarks locust`, which runs it headless and folds the
raw timings below into the result schema.

Requests come from the project's request builder, the one our own client uses: a model with a manifest
(--bench-n-features N) gets the float32 [batch, N] request without asking the server; any other model is
described by the server's signature (GetModelMetadata), and --bench-inputs takes the same input flags as
`python -m benchmarks grpc` (--shape, --input-data, --method classify|regress, --feature ...).

Options (locust_run.BENCH_OPTIONS; also as LOCUST_BENCH_* environment variables, or in a locust.conf) are set
on the master: Locust sends a master's custom options to its workers with each spawn, so a worker needs only
the master's address. Each worker builds its request when its test starts, so the model is asked for once per
worker process.

Why our own histograms: Locust rounds stored response times to about 2 significant digits, so percentiles
from its CSV are coarse. Every request is also recorded, unrounded, into an HdrHistogram through the
events.request listener; workers ship theirs to the master with each stats report, together with who they
are, how many requests they sent and the CPU they used; the master keeps it per worker (locust_workers.py).
"""
from __future__ import annotations

# gRPC must be switched to gevent before any channel exists (as in Locust's examples/grpc).
import grpc  # noqa: E402  isort: skip
import grpc.experimental.gevent as grpc_gevent  # noqa: E402  isort: skip

grpc_gevent.init_gevent()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from locust import FastHttpUser, User, events, task  # noqa: E402
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a file by locust: find our package

from benchmarks.load.locust_run import add_bench_options  # noqa: E402
from benchmarks.load.locust_workers import WorkerLedger  # noqa: E402
from benchmarks.measure.histogram import LatencyHistogram  # noqa: E402
from benchmarks.measure.cpu_sampler import cpu_seconds  # noqa: E402
from export.contract import GRPC_MESSAGE_OPTIONS  # noqa: E402

log = logging.getLogger("tfserve-bench")

events.init_command_line_parser.add_listener(add_bench_options)


def build_payload(opts):
    """The one call into the project's request builder (the same requests our own client sends)."""
    from benchmarks.commands.input_flags import add_input_arguments, input_options
    from benchmarks.requests.builder import RequestSpec, build_requests

    flags = argparse.ArgumentParser(prog="--bench-inputs", add_help=False)
    add_input_arguments(flags)
    inputs = input_options(flags.parse_args(shlex.split(opts.bench_inputs)))
    return build_requests(RequestSpec(opts.bench_model, "grpc", opts.bench_grpc_target, opts.bench_n_features,
                                      inputs)).payload(opts.bench_batch)


# ------------------------------------------------------------------------------------------
# raw timing collection
# ------------------------------------------------------------------------------------------
class _Raw:
    def __init__(self) -> None:
        self.env = None
        self.payload = None
        self.hists: dict[str, LatencyHistogram] = {}  # since the last report (worker) / merged (master, local)
        self.errors: dict[str, Counter] = {}
        self.sent: Counter = Counter()  # this process: requests per transport, cumulative
        self.failed: Counter = Counter()
        self.first_request: float | None = None
        self.last_request: float | None = None
        self.t_start: float | None = None
        self.t_stop: float | None = None
        self.cpu_at_start: list[float] = []  # [time, process CPU s, main thread CPU s] when this process's test began
        self.ledger = WorkerLedger()  # master: one record per worker

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


def _cpu() -> tuple[float, float]:
    import psutil

    return cpu_seconds(psutil.Process())


@events.init.add_listener
def _init(environment, **_kw):
    RAW.env = environment


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, response=None, context=None,
                exception=None, **_kw):
    kind = "grpc" if request_type.lower() == "grpc" else "rest"
    now = time.time()
    RAW.first_request = RAW.first_request or now
    RAW.last_request = now
    RAW.sent[kind] += 1
    if exception is None:
        RAW.hist(kind).record_us(response_time * 1000.0)
    else:
        RAW.failed[kind] += 1
        RAW.err(kind)[_error_code(exception, response)] += 1


@events.report_to_master.add_listener
def _ship(client_id, data):
    data["bench_raw"] = {k: h.encode() for k, h in RAW.hists.items()}
    data["bench_errors"] = {k: dict(c) for k, c in RAW.errors.items()}
    data["bench_worker"] = {"host": socket.gethostname(), "pid": os.getpid(), "requests": dict(RAW.sent),
                            "errors": dict(RAW.failed), "first_request": RAW.first_request,
                            "last_request": RAW.last_request, "cpu": RAW.cpu_at_start + [time.time(), *_cpu()]}
    RAW.hists.clear()
    RAW.errors.clear()


@events.worker_report.add_listener
def _receive(client_id, data):
    for k, enc in data.get("bench_raw", {}).items():
        RAW.hist(k).merge(LatencyHistogram.decode(enc))
    for k, errs in data.get("bench_errors", {}).items():
        RAW.err(k).update(errs)
    if "bench_worker" in data:
        RAW.ledger.record_report(client_id, data["bench_worker"])


@events.heartbeat_sent.add_listener
def _worker_cpu(client_id, timestamp):
    node = RAW.env.runner.clients.get(client_id) if RAW.env and RAW.env.runner else None
    if node is not None and RAW.t_start is not None and RAW.t_stop is None:
        RAW.ledger.record_cpu(client_id, node.cpu_usage)


def _watch_workers(runner: MasterRunner) -> None:
    """Name a worker that goes missing (no heartbeat for 3 s) or quits while the test runs."""
    seen: set[str] = set()
    while RAW.t_stop is None:
        now, present = time.time(), {c.id: c.state for c in runner.clients.all}
        seen |= present.keys()
        for client_id, state in present.items():
            if state == STATE_MISSING:
                RAW.ledger.record_lost(client_id, "missing", now)
        for client_id in seen - present.keys():
            RAW.ledger.record_lost(client_id, "quit", now)
        gevent.sleep(0.5)


@events.test_start.add_listener
def _start(environment, **_kw):
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        gevent.spawn(_watch_workers, runner)
    else:
        RAW.cpu_at_start = [time.time(), *_cpu()]
        try:
            RAW.payload = build_payload(environment.parsed_options)
        except (ValueError, RuntimeError, FileNotFoundError) as e:
            log.error("cannot build the request: %s", e)
            runner.quit()
            return
    if not isinstance(runner, WorkerRunner) and RAW.t_start is None:
        RAW.t_start = time.time()


def _write(environment) -> None:
    raw_file = getattr(environment.parsed_options, "bench_raw_file", "")
    if not raw_file or isinstance(environment.runner, WorkerRunner):
        return
    from benchmarks.results.schema import atomic_write_text

    runner, opts = environment.runner, environment.parsed_options
    t_start = RAW.t_start or time.time()
    doc = {
        "model": opts.bench_model, "batch_size": opts.bench_batch, "grpc_target": opts.bench_grpc_target,
        "host": environment.host, "t_start": RAW.t_start, "t_stop": RAW.t_stop or time.time(),
        "distributed": isinstance(runner, MasterRunner),
        "histograms": {k: h.encode() for k, h in RAW.hists.items()},
        "errors": {k: dict(c) for k, c in RAW.errors.items()},
        "locust_total": {"num_requests": runner.stats.total.num_requests,
                         "num_failures": runner.stats.total.num_failures},
        "locust_stats": {e.name + "|" + e.method: {
            "num_requests": e.num_requests, "num_failures": e.num_failures,
            "p50_ms": e.get_response_time_percentile(0.5), "p99_ms": e.get_response_time_percentile(0.99)}
            for e in runner.stats.entries.values()},
        "cpu_warning": bool(getattr(runner, "cpu_warning_emitted", False) or
                            getattr(runner, "worker_cpu_warning_emitted", False)),
        **RAW.ledger.summary(t_start),
    }
    atomic_write_text(Path(raw_file), json.dumps(doc, indent=1))


@events.test_stop.add_listener
def _stop(environment, **_kw):
    if RAW.t_stop is None:
        RAW.t_stop = time.time()
    _write(environment)  # partial: workers' final reports may still come


@events.quitting.add_listener
def _quit(environment, **_kw):
    if isinstance(environment.runner, WorkerRunner) and RAW.sent:
        log.warning("this worker sent %s requests (%s failed)", dict(RAW.sent), dict(RAW.failed))
    _write(environment)  # final: after the workers' last reports


# ------------------------------------------------------------------------------------------
# users
# ------------------------------------------------------------------------------------------
def _think(user) -> float:
    return user.environment.parsed_options.bench_wait_s if user.environment.parsed_options else 0.0


class GrpcPredictUser(User):
    """The model's method (Predict, Classify or Regress) over gRPC, with the request serialised once."""

    wait_time = _think

    def on_start(self) -> None:
        target = self.environment.parsed_options.bench_grpc_target
        self._channel = grpc.insecure_channel(target, options=GRPC_MESSAGE_OPTIONS)
        self._call = self._channel.unary_unary(RAW.payload.grpc_method)  # bytes in, bytes out

    def on_stop(self) -> None:
        self._channel.close()

    @task
    def call(self) -> None:
        p = RAW.payload
        t0 = time.perf_counter()
        exc, length = None, 0
        try:
            length = len(self._call(p.grpc_bytes, timeout=30))
        except grpc.RpcError as e:
            exc = e
        self.environment.events.request.fire(request_type="grpc", name=f"{p.model}:{p.method}",
                                             response_time=(time.perf_counter() - t0) * 1000.0,
                                             response_length=length, response=None, context=None, exception=exc)


class RestPredictUser(FastHttpUser):
    """The same request over REST (POST /v1/models/<model>:predict|classify|regress)."""

    wait_time = _think

    @task
    def call(self) -> None:
        p = RAW.payload
        self.client.post(p.rest_path, data=p.rest_body, name=f"{p.model}:{p.method}",
                         headers={"Content-Type": "application/json"})
