"""Prometheus metrics under TF Serving's names, in a registry of our own.

TF Serving's exporter turns metric paths into names by replacing '/' with ':'
(/tensorflow/serving/request_count -> :tensorflow:serving:request_count), and dashboards built for it
query exactly those names, so we use them verbatim. Histograms are in microseconds with TF Serving's
exponential buckets (10 us * 1.8^i, i < 33: servables/tensorflow/util.cc).

Beyond TF Serving's names, `tfserve_bench_model_executions{model_name,state}` reports each model's
unbatched execution scheduler (serving/execution/scheduler.py): executions running now, waiting for a slot now, and
the peak running at once since start (which shows whether the configured bound was reached), and
`tfserve_bench_model_execution_outcomes_total{model_name,outcome}` counts executed / refused / expired.

`:tfserve_bench:serving:request_stage_latency{model_name,API,entrypoint,stage}` (µs, TF Serving's buckets) splits
each successful Predict into the stages of StageClock below, so a front end's own cost can be read off the metrics
endpoint (docs/performance.md, "Per-stage time").

request_count is exported *without* the `_total` suffix prometheus_client adds to counters (TF Serving's
exporter does not add it): it is a custom collector producing an untyped family with TF Serving's sample name.
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import defaultdict
from itertools import accumulate
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, UnknownMetricFamily
from prometheus_client.registry import Collector

from export.contract import (EXECUTION_OUTCOMES_METRIC, EXECUTIONS_METRIC, INPUT_BATCH_SIZE, PADDING_SIZE,
                             PROCESSED_BATCH_SIZE, QUEUING_LATENCY, REQUEST_COUNT, REQUEST_LATENCY, REQUEST_STAGE_LATENCY,
                             REQUEST_STAGES, RUNTIME_LATENCY)

LATENCY_BUCKETS_US = tuple(10.0 * 1.8**i for i in range(33))
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(15))  # 1 .. 16384 rows


class _RequestCountCollector(Collector):
    """`:tensorflow:serving:request_count{model_name,status}` exactly as TF Serving spells it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)

    def inc(self, model_name: str, status: str) -> None:
        with self._lock:
            self._counts[(model_name, status)] += 1

    def collect(self):
        family = UnknownMetricFamily(REQUEST_COUNT, "The total number of requests.",
                                     labels=["model_name", "status"])
        with self._lock:
            items = sorted(self._counts.items())
        for (model, status), value in items:
            family.add_metric([model, status], value)
        yield family


class _ExecutionCollector(Collector):
    """Reads the execution schedulers' counters at scrape time (nothing is updated per request)."""

    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self._source = source

    def collect(self):
        family = GaugeMetricFamily(EXECUTIONS_METRIC, "Unbatched model executions by state: running now, "
                                   "waiting for a slot now, peak_running since start.", labels=["model_name", "state"])
        outcomes = CounterMetricFamily(EXECUTION_OUTCOMES_METRIC, "Unbatched requests by outcome at the execution "
                                       "scheduler: executed, refused (queue full), expired (deadline while waiting).",
                                       labels=["model_name", "outcome"])
        for model, stats in sorted(self._source().items()):
            for state, value in (("running", stats.running), ("waiting", stats.waiting),
                                 ("peak_running", stats.peak_running)):
                family.add_metric([model, state], value)
            for outcome, value in (("executed", stats.executions), ("refused", stats.refused_full),
                                   ("expired", stats.expired_waiting)):
                outcomes.add_metric([model, outcome], value)
        yield family
        yield outcomes


class StageClock:
    """One Predict's time by stage, in seconds, from when its front end starts handling it.

    decode: request bytes -> validated numpy inputs (gRPC: parse the PredictRequest + tensors; REST: JSON).
    queue: waiting for an execution slot or a batch, and the hand-offs to and from the thread that runs it
      (with batching on the batch's execution is counted here too: it is not split per request).
    execute: the model call itself (the runtime_latency of an unbatched request).
    encode: outputs -> response bytes (gRPC: PredictResponse + serialisation; REST: JSON).
    framework: the rest of the handled time: our glue (model lookup, metrics) and, for REST, http.server's
      header parsing, body read and reply write. Time inside grpc.aio before our handler starts or after it
      returns the bytes is not visible from Python; client p50 minus the request_latency shows it.
    """

    __slots__ = ("started", "mark", "decode", "queue", "execute", "encode", "model", "api", "entrypoint")

    def __init__(self, entrypoint: str, started: float | None = None) -> None:
        self.started = self.mark = time.perf_counter() if started is None else started
        self.decode = self.queue = self.execute = self.encode = 0.0
        self.model = ""  # set once the request is known to be for a served model (the metric's label)
        self.api = "predict"
        self.entrypoint = entrypoint

    def lap(self, stage: str) -> None:
        """Add the time since the last mark to `stage`."""
        now = time.perf_counter()
        setattr(self, stage, getattr(self, stage) + now - self.mark)
        self.mark = now

    def skip(self) -> None:
        """Move the mark to now: the time since was attributed already (run() splits queue and execute)."""
        self.mark = time.perf_counter()

    def stages_us(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        known = self.decode + self.queue + self.execute + self.encode
        seconds = (self.decode, self.queue, self.execute, self.encode, max(0.0, total - known))
        return {stage: s * 1e6 for stage, s in zip(REQUEST_STAGES, seconds)}


class _StageCollector(Collector):
    """The request_stage_latency histograms, all five stages of a request recorded under one lock.

    Not prometheus_client's Histogram: its observe() walks the 33 buckets in Python, ~5 µs each here, so five
    stages would have cost ~25 µs per request; a bisect into the bounds costs well under 1 µs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (model, api, entrypoint) -> stage -> [per-bucket counts (+Inf last), sum]
        self._data: dict[tuple[str, str, str], dict[str, list]] = {}

    def observe(self, labels: tuple[str, str, str], stages_us: dict[str, float]) -> None:
        with self._lock:
            found = self._data.get(labels)
            if found is None:
                found = self._data[labels] = {s: [[0] * (len(LATENCY_BUCKETS_US) + 1), 0.0] for s in REQUEST_STAGES}
            for stage, us in stages_us.items():
                entry = found[stage]
                entry[0][bisect_left(LATENCY_BUCKETS_US, us)] += 1
                entry[1] += us

    def collect(self):
        family = HistogramMetricFamily(REQUEST_STAGE_LATENCY, "Wall time (in microseconds) of each stage of a request: "
                                       "decode, queue, execute, encode, framework (the rest).",
                                       labels=["model_name", "API", "entrypoint", "stage"])
        with self._lock:
            snapshot = [(labels, stage, list(counts), total) for labels, stages in sorted(self._data.items())
                        for stage, (counts, total) in stages.items()]
        for (model, api, entrypoint), stage, counts, total in snapshot:
            cumulative = list(accumulate(counts))
            buckets = [(f"{le:g}" if le != float("inf") else "+Inf", c)
                       for le, c in zip((*LATENCY_BUCKETS_US, float("inf")), cumulative)]
            family.add_metric([model, api, entrypoint, stage], buckets, total)
        yield family


class ServingMetrics:
    """All metrics of one server process; `exposition()` is what /monitoring/prometheus/metrics returns."""

    def __init__(self) -> None:
        # TF Serving exports no *_created series; they would only add noise to every histogram.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple, object] = {}
        self._request_count = _RequestCountCollector()
        self.registry.register(self._request_count)
        self.request_latency = Histogram(
            REQUEST_LATENCY, "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US, registry=self.registry)
        self.runtime_latency = Histogram(
            RUNTIME_LATENCY, "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"], buckets=LATENCY_BUCKETS_US, registry=self.registry)
        self._stages = _StageCollector()
        self.registry.register(self._stages)
        self.queuing_latency = Histogram(
            QUEUING_LATENCY,
            "Distribution of wall time spent (in microseconds) in queuing",
            ["thread_pool_name"], buckets=LATENCY_BUCKETS_US, registry=self.registry)
        self.input_batch_size = Histogram(
            INPUT_BATCH_SIZE, "Tracks the batch size distribution on the inputs.",
            ["model_name"], buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.processed_batch_size = Histogram(
            PROCESSED_BATCH_SIZE,
            "Tracks the batch size distribution on processing (after padding).",
            ["model_name"], buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.padding_size = Histogram(
            PADDING_SIZE, "Tracks the padding size distribution on batches.",
            ["model_name", "execution_batch_size"], buckets=(0.0,) + BATCH_SIZE_BUCKETS, registry=self.registry)

    def observe_stages(self, clock: StageClock) -> None:
        """Record a finished request's stages (only requests for a served model: bounded label values)."""
        if clock.model:
            self._stages.observe((clock.model, clock.api, clock.entrypoint), clock.stages_us())

    def child(self, metric: Histogram, *labels: str):
        """metric.labels(*labels), memoised: prometheus_client's labels() takes a lock and builds a key per call,
        a visible cost at thousands of requests per second."""
        key = (id(metric),) + labels
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def watch_executions(self, source: Callable[[], dict[str, Any]]) -> None:
        """Export the execution schedulers' state; `source` maps model name -> ExecutionStats."""
        self.registry.register(_ExecutionCollector(source))

    def count_request(self, model_name: str, status: str) -> None:
        self._request_count.inc(model_name, status)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
