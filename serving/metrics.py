"""Prometheus metrics under TF Serving's names, in a registry of our own.

TF Serving's exporter turns metric paths into names by replacing '/' with ':'
(/tensorflow/serving/request_count -> :tensorflow:serving:request_count), and dashboards built for it
query exactly those names, so we use them verbatim. Histograms are in microseconds with TF Serving's
exponential buckets (10 us * 1.8^i, i < 33: servables/tensorflow/util.cc).

Beyond TF Serving's names, `tfserve_bench_model_executions{model_name,state}` reports each model's
unbatched execution scheduler (serving/execution/scheduler.py): executions running now, waiting for a slot now, and
the peak running at once since start (which shows whether the configured bound was reached), and
`tfserve_bench_model_execution_outcomes_total{model_name,outcome}` counts executed / refused / expired.

request_count is exported *without* the `_total` suffix prometheus_client adds to counters (TF Serving's
exporter does not add it): it is a custom collector producing an untyped family with TF Serving's sample name.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, UnknownMetricFamily
from prometheus_client.registry import Collector

from export.contract import (EXECUTION_OUTCOMES_METRIC, EXECUTIONS_METRIC, INPUT_BATCH_SIZE, PADDING_SIZE,
                             PROCESSED_BATCH_SIZE, QUEUING_LATENCY, REQUEST_COUNT, REQUEST_LATENCY, RUNTIME_LATENCY)

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
