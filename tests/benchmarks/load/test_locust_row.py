"""What a Locust run leaves behind (the raw document our locustfile writes from Locust's runner: merged
histograms, errors, Locust's own rounded stats, the workers that reported) folded into a result row, offline
and with exact values; the real distributed run is in tests/benchmarks/commands/test_embedded.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load.locust_run import LocustConfig, _row, _seconds
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.cpu_sampler import ProcessCpu


def _raw(workers_reported: list[str], cpu_warning: bool = False) -> dict:
    grpc = LatencyHistogram()
    for us in [1000] * 30 + [2000] * 10:  # 40 successes: p50 1 ms, p99 2 ms
        grpc.record_us(us)
    return {"model": "m", "batch_size": 2, "t_start": 100.0, "t_stop": 110.0, "distributed": bool(workers_reported),
            "workers_reported": workers_reported, "histograms": {"grpc": grpc.encode()},
            "errors": {"grpc": {"UNAVAILABLE": 3, "DEADLINE_EXCEEDED": 1}},
            "locust_stats": {"m:predict|grpc": {"num_requests": 44, "num_failures": 4, "p50_ms": 1.0, "p99_ms": 2.0}},
            "cpu_warning": cpu_warning}


def _cfg(workers: int) -> LocustConfig:
    return LocustConfig(grpc_target="127.0.0.1:1", rest_target="127.0.0.1:2", model="m", batch_size=2, users=6,
                        workers=workers, server_label="noop")


def test_distributed_row_from_the_raw_document(tmp_path: Path):
    cpu = [ProcessCpu("master", 10, 12.0, 11.0), ProcessCpu("worker0", 11, 60.0, 55.0),
           ProcessCpu("worker1", 12, 70.0, 65.0)]
    row = _row(_cfg(workers=3), "grpc", _raw(["w0", "w1"], cpu_warning=True), 10.0, cpu, 0, tmp_path)
    assert (row.kind, row.scenario, row.concurrency, row.batch_size) == ("locust", "locust-grpc", 6, 2)
    assert row.target == "127.0.0.1:1" and row.server == "noop"
    assert row.n == 40 and row.errors == 4 and row.errors_by_code == {"UNAVAILABLE": 3, "DEADLINE_EXCEEDED": 1}
    assert row.p50_ms == pytest.approx(1.0, rel=1e-3) and row.p99_ms == pytest.approx(2.0, rel=1e-3)
    assert row.throughput_rps == 4.0 and row.achieved_rate == 4.0 and row.rows_per_s == 8.0
    assert row.client_cpu_percent == 142.0 and row.client_saturated is False  # master's CPU is not load
    assert [p["role"] for p in row.client_processes] == ["master", "worker0", "worker1"]
    assert row.extra["workers"] == 3 and row.extra["workers_reported"] == 2 and row.extra["distributed"] is True
    assert row.extra["locust_rounded_stats"] == {"m:predict|grpc": {"num_requests": 44, "num_failures": 4,
                                                                    "p50_ms": 1.0, "p99_ms": 2.0}}
    assert row.extra["locust_csv"] == str(tmp_path / "locust_stats.csv") and row.extra["master_exit_code"] == 0
    assert row.warnings == ["Locust reported a load-generator CPU above 90%: results are client-bound",
                            "4 failed requests: {'UNAVAILABLE': 3, 'DEADLINE_EXCEEDED': 1}",
                            "only 2 of 3 workers reported"]


def test_local_row_judges_saturation_on_the_main_thread(tmp_path: Path):
    raw = _raw([])
    raw["errors"] = {}
    row = _row(_cfg(workers=0), "grpc", raw, 10.0, [ProcessCpu("local", 10, 97.0, 96.0)], 0, tmp_path)
    assert row.errors == 0 and row.client_saturated is True and row.client_cpu_percent == 97.0
    assert row.warnings == ["Locust near saturation (a load-generating process's main thread at 96% of a core): "
                            "numbers may reflect Locust, not the server"]
    # CPU not sampled at all (fewer than 2 samples in the span): saturation unknown, not "no"
    row = _row(_cfg(workers=0), "rest", raw, 10.0, [ProcessCpu("local", 10, None, None)], 0, tmp_path)
    assert row.client_saturated is None and row.client_cpu_percent is None
    assert row.n == 0 and row.target == "127.0.0.1:2"  # no REST histogram in the document


@pytest.mark.parametrize("text,seconds", [("20s", 20.0), ("2m", 120.0), ("1m30s", 90.0), ("1h", 3600.0), ("15", 15.0)])
def test_run_time_in_locusts_notation(text, seconds):
    assert _seconds(text) == seconds


def test_bad_run_time_says_how_to_write_it():
    with pytest.raises(ValueError, match=r"bad run time '10x': use e.g. 30s, 2m, 1m30s"):
        _seconds("10x")
