"""perf_analyzer's output, parsed offline: its -f CSV (one row per concurrency, latencies in µs) and the
client summary and per-window lines it prints with -v, for a stable point and for one that never stabilised.
The texts below are written in perf_analyzer's formats (tritonclient 2.41.0); the real binary runs in
tests/benchmarks/commands/test_any_model.py."""
from __future__ import annotations

import math

import pytest

from benchmarks.commands.perf_analyzer import CLIENT, pa_row
from benchmarks.measure.perf_analyzer_tool import parse_output

CSV = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait
1,402.5,31,2440,0,0,0,0,12,2410,2980,3150,3720,2483,9,2474
8,1600.67,35,19850,0,0,0,0,14,19840,24100,26300,31050,19899,12,19887
"""

STABLE_STDOUT = """\
*** Measurement Settings ***
  Batch size: 4
  Service Kind: TensorFlow Serving
  Using "time_windows" mode for stabilization
  Measurement window: 2000 msec
  Using synchronous calls for inference
  Stabilizing using p50 latency

Request concurrency: 8
  Pass [1] throughput: 1520.5 infer/sec. p50 latency: 20480 usec
  Pass [2] throughput: 1602 infer/sec. p50 latency: 19712 usec
  Pass [3] throughput: 1598.25 infer/sec. p50 latency: 19840 usec
  Pass [4] throughput: 1601.75 infer/sec. p50 latency: 19800 usec
  Client: 
    Request count: 2403
    Throughput: 1600.67 infer/sec
    p50 latency: 19840 usec
    p90 latency: 24100 usec
    p95 latency: 26300 usec
    p99 latency: 31050 usec
    Avg gRPC time: 19990 usec ((un)marshal request/response 12 usec + response wait 19978 usec)
Inferences/Second vs. Client p50 Batch Latency
Concurrency: 8, throughput: 1600.67 infer/sec, latency 19840 usec
"""

UNSTABLE_STDOUT = """\
*** Measurement Settings ***
  Batch size: 1
  Service Kind: TensorFlow Serving
  Using "time_windows" mode for stabilization
  Measurement window: 2000 msec
  Using synchronous calls for inference
  Stabilizing using p50 latency

Request concurrency: 8
  Pass [1] throughput: 900 infer/sec. p50 latency: 8000 usec
  Pass [2] throughput: 1400 infer/sec. p50 latency: 5100 usec
  Pass [3] throughput: 1000.5 infer/sec. p50 latency: 7900 usec
  Pass [4] throughput: 1300 infer/sec. p50 latency: 6000 usec
  Pass [5] throughput: 1100 infer/sec. p50 latency: 7000 usec
Failed to obtain stable measurement within 5 measurement windows for concurrency 8. Please try to increase the --measurement-interval.
"""


def test_stable_point_takes_the_csv_row_of_its_concurrency_and_the_client_summary():
    point = parse_output(CSV, STABLE_STDOUT, batch_size=4, concurrency=8)
    assert point.stable is True
    assert (point.batch_size, point.concurrency) == (4, 8)
    assert point.infer_per_s == 1600.67
    assert (point.p50_us, point.p90_us, point.p95_us, point.p99_us) == (19840, 24100, 26300, 31050)
    assert point.request_count == 2403
    assert point.avg_grpc_us == 19990
    assert point.output_tail == STABLE_STDOUT[-800:]


def test_the_other_csv_row_is_picked_by_concurrency_not_position():
    point = parse_output(CSV, "", batch_size=1, concurrency=1)
    assert point.stable is True and point.infer_per_s == 402.5
    assert (point.p50_us, point.p99_us) == (2410, 3720)
    # no client summary printed: no request count, no gRPC time
    assert point.request_count == 0 and point.avg_grpc_us is None


def test_unstable_point_is_its_last_three_windows_mean_rate_and_median_p50():
    # perf_analyzer writes no CSV row when no 3 windows agree: the run_point caller passes "" then
    point = parse_output("", UNSTABLE_STDOUT, batch_size=1, concurrency=8)
    assert point.stable is False
    assert point.infer_per_s == pytest.approx((1000.5 + 1300 + 1100) / 3)
    assert point.p50_us == 7000  # median of 7900, 6000, 7000
    assert math.isnan(point.p90_us) and math.isnan(point.p99_us)
    assert point.request_count == 0 and point.avg_grpc_us is None


def test_a_csv_without_the_asked_concurrency_counts_as_unstable():
    point = parse_output(CSV, UNSTABLE_STDOUT, batch_size=1, concurrency=16)
    assert point.stable is False and point.concurrency == 16
    assert point.p50_us == 7000


def test_output_without_any_window_leaves_the_figures_unknown():
    stdout = "error: failed to get model metadata: failed to connect to all addresses\n"
    point = parse_output("", stdout, batch_size=1, concurrency=1)
    assert point.stable is False
    assert math.isnan(point.infer_per_s) and math.isnan(point.p50_us)
    assert point.output_tail == stdout


def test_pa_row_converts_microseconds_and_rows_to_requests():
    point = parse_output(CSV, STABLE_STDOUT, batch_size=4, concurrency=8)
    point.command = ["perf_analyzer", "-m", "m"]
    row = pa_row(point, "m", "127.0.0.1:9", "embedded-graph")
    assert row.client == CLIENT and row.kind == "grpc" and row.stable is True
    assert (row.p50_ms, row.p90_ms, row.p95_ms, row.p99_ms) == (19.84, 24.1, 26.3, 31.05)
    assert row.rows_per_s == 1600.67
    assert row.throughput_rps == pytest.approx(1600.67 / 4)
    assert row.n == 2403 and row.warnings == []
    assert row.extra["perf_analyzer"]["avg_grpc_us"] == 19990
    assert row.extra["perf_analyzer"]["command"] == "perf_analyzer -m m"


def test_pa_row_of_an_unstable_point_says_which_figures_are_known():
    row = pa_row(parse_output("", UNSTABLE_STDOUT, 1, 8), "m", "t", "x")
    assert row.stable is False and row.p50_ms == 7.0 and math.isnan(row.p99_ms)
    assert len(row.warnings) == 1 and row.warnings[0].startswith("unstable: perf_analyzer found no 3 agreeing")
