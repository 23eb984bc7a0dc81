"""The profiler on fixed inputs: a measured point (windows, CPU, server delta, stability) -> exact row fields,
with the one CPU-per-request rule and the one saturation rule (judged on the sending loop's thread)."""
from __future__ import annotations

import pytest

from benchmarks.load.managers import MeasuredPoint
from benchmarks.measure.cpu_meter import CpuReading, cpu_us_per_request
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.recorder import Window
from benchmarks.results.profiler import profile


def _window(index: int, ms: list[float], errors: dict[str, int] | None = None) -> Window:
    hist = LatencyHistogram.from_samples_ms(ms)
    return Window(index, float(index), float(index + 1), hist, errors or {}, len(ms), int(sum(ms) * 1e6))


def _point(thread_s: float, stable: bool | None = True) -> MeasuredPoint:
    windows = [_window(0, [1.0] * 100), _window(1, [2.0] * 100, {"UNAVAILABLE": 3}), _window(2, [1.0] * 100)]
    cpu = CpuReading(wall_s=3.0, process_s=1.5, thread_s=thread_s, pids_s=0.6, machine_busy_s=3.0, cores=2,
                     pids=(4242,))
    return MeasuredPoint({"concurrency": 8}, windows, cpu, {"processed_batch_size_mean": 4.0}, stable, 7.5,
                         [100.0, 100.0, 100.0, 100.0])


def test_a_measured_point_becomes_one_row_with_every_common_figure() -> None:
    row = profile(_point(thread_s=1.2), kind="grpc", model="m", mode="noop", batch_size=2, server="s",
                  extra={"own": 1})
    assert (row.kind, row.model, row.batch_size, row.concurrency, row.scenario) == ("grpc", "m", 2, 8, "closed")
    assert row.n == 300 and row.errors == 3 and row.errors_by_code == {"UNAVAILABLE": 3}
    assert row.duration_s == 3.0 and row.throughput_rps == 100.0 == row.achieved_rate and row.rows_per_s == 200.0
    assert row.p50_ms == pytest.approx(1.0, rel=0.01) and row.max_ms == pytest.approx(2.0, rel=0.01)
    assert row.stable is True and row.client_cpu_percent == 50.0 and row.client_saturated is False
    assert row.extra == {"windows": 4, "window_throughputs": [100.0] * 4, "max_deviation_pct": 7.5,
                         "system_cpu_percent": 50.0, "loop_thread_cpu_percent": 40.0,
                         # 50 % of a core / 100 req/s = 5,000 µs; the server's 20 % -> 2,000 µs
                         "client_cpu_us_per_request": 5000.0, "client_cores": 0.5,
                         "server_cpu_us_per_request": 2000.0, "server_cores": 0.2,
                         "server_metrics": {"processed_batch_size_mean": 4.0}, "calls": "async", "own": 1}
    assert row.warnings == ["3 failed requests: {'UNAVAILABLE': 3}"]


def test_saturation_is_judged_on_the_sending_loop_thread_and_instability_warns() -> None:
    # the process at 50 % but its event-loop thread at 90 % of a core: saturated (the thread holds the GIL)
    row = profile(_point(thread_s=2.7, stable=False), kind="grpc", model="m", mode="noop", batch_size=1)
    assert row.client_saturated is True and row.stable is False
    assert row.warnings[0] == "unstable: last 3 of 4 windows differ by up to 7.5%"
    assert row.warnings[1].startswith("load generator near saturation (event loop 90% of a core, process 50%)")
    # and a process above 100 % (grpcio's C-core threads) with a calm loop thread is not
    calm = _point(thread_s=0.9)
    calm.cpu.process_s = 4.0
    assert profile(calm, kind="grpc", model="m", mode="noop", batch_size=1).client_saturated is False


def test_one_cpu_per_request_rule_for_rows_and_reports() -> None:
    assert cpu_us_per_request(50.0, 100.0) == 5000.0
    assert cpu_us_per_request(None, 100.0) is None and cpu_us_per_request(50.0, 0.0) is None
    row = profile(_point(thread_s=1.2), kind="grpc", model="m", mode="noop", batch_size=1)
    # the report's Locust-vs-ours table applies the same rule to a row's stored figures
    assert cpu_us_per_request(row.client_cpu_percent, row.throughput_rps) == row.extra["client_cpu_us_per_request"]


def test_an_open_loop_point_names_its_rate_and_its_dropped_sends() -> None:
    point = _point(thread_s=1.2, stable=None)
    point.load, point.dropped, point.window_throughputs = {"target_rate": 50.0}, 7, []
    row = profile(point, kind="rest", model="m", mode="noop", batch_size=1, scenario="open")
    assert row.target_rate == 50.0 and row.concurrency is None and row.stable is None
    assert row.extra["dropped_open_loop"] == 7 and "windows" not in row.extra
    assert not any(w.startswith("unstable") for w in row.warnings)
