"""What a Locust run leaves behind (the raw document our locustfile writes from Locust's runner: merged
histograms, errors, Locust's own rounded stats and total, what each worker reported) folded into a result row
and reconciled with the server's request count, offline and with exact values; real distributed runs are in
tests/benchmarks/load/test_locust_distributed.py and tests/benchmarks/commands/test_embedded.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load.locust_run import LocustConfig, _add_workers, _reconcile, _row, _seconds
from benchmarks.load.locust_workers import WorkerLedger
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.cpu_sampler import ProcessCpu


def _raw(distributed: bool, cpu_warning: bool = False) -> dict:
    """The document as the locustfile writes it; the workers' part from the master's own ledger (two workers,
    24 + 20 requests, 3 + 1 failed, so their sum is the master's 40 + 4)."""
    grpc = LatencyHistogram()
    for us in [1000] * 30 + [2000] * 10:  # 40 successes: p50 1 ms, p99 2 ms
        grpc.record_us(us)
    ledger = WorkerLedger()
    if distributed:
        ledger.record_report("c0", {"host": "h", "pid": 7, "requests": {"grpc": 24}, "errors": {"grpc": 3},
                                    "first_request": 100.5, "last_request": 109.5,
                                    "cpu": [100.0, 0.0, 0.0, 110.0, 6.0, 5.5]})
        ledger.record_report("c1", {"host": "h", "pid": 8, "requests": {"grpc": 20}, "errors": {"grpc": 1},
                                    "first_request": 101.0, "last_request": 109.0,
                                    "cpu": [100.0, 0.0, 0.0, 110.0, 7.0, 6.5]})
    return {"model": "m", "batch_size": 2, "t_start": 100.0, "t_stop": 110.0, "distributed": distributed,
            "histograms": {"grpc": grpc.encode()}, "errors": {"grpc": {"UNAVAILABLE": 3, "DEADLINE_EXCEEDED": 1}},
            "locust_total": {"num_requests": 44, "num_failures": 4},
            "locust_stats": {"m:predict|grpc": {"num_requests": 44, "num_failures": 4, "p50_ms": 1.0, "p99_ms": 2.0}},
            "cpu_warning": cpu_warning, **ledger.summary(100.0)}


def _cfg(workers: int) -> LocustConfig:
    return LocustConfig(grpc_target="127.0.0.1:1", rest_target="127.0.0.1:2", model="m", batch_size=2, users=6,
                        workers=workers, server_label="noop")


def _fold(cfg: LocustConfig, transport: str, raw: dict, cpu: list[ProcessCpu], out: Path, server: dict | None):
    """What _run_transport does with the document once Locust has exited (exit code 0, 10 s test)."""
    row = _row(cfg, transport, raw, 10.0, cpu, 0, out, server)
    _add_workers(row, cfg, raw)
    _reconcile(row, transport, raw, server)
    return row


DIFFER = ("(the server also counts requests still in flight when the users were stopped; a lost worker's "
          "unreported requests reach only the server)")


def test_distributed_row_from_the_raw_document(tmp_path: Path):
    cpu = [ProcessCpu("master", 10, 12.0, 11.0), ProcessCpu("worker0", 11, 60.0, 55.0),
           ProcessCpu("worker1", 12, 70.0, 65.0)]
    server = {"request_count_by_status": {"OK": 40, "UNAVAILABLE": 3, "DEADLINE_EXCEEDED": 1}}
    row = _fold(_cfg(workers=3), "grpc", _raw(distributed=True, cpu_warning=True), cpu, tmp_path, server)
    assert (row.kind, row.scenario, row.concurrency, row.batch_size) == ("locust", "locust-grpc", 6, 2)
    assert row.target == "127.0.0.1:1" and row.server == "noop"
    assert row.n == 40 and row.errors == 4 and row.errors_by_code == {"UNAVAILABLE": 3, "DEADLINE_EXCEEDED": 1}
    assert row.p50_ms == pytest.approx(1.0, rel=1e-3) and row.p99_ms == pytest.approx(2.0, rel=1e-3)
    assert row.throughput_rps == 4.0 and row.achieved_rate == 4.0 and row.rows_per_s == 8.0
    assert row.client_cpu_percent == 142.0 and row.client_saturated is False  # master's CPU is not load
    assert [p["role"] for p in row.client_processes] == ["master", "worker0", "worker1"]
    assert row.extra["workers"] == 3 and row.extra["distributed"] is True and row.extra["remote_workers"] is False
    assert [(w["name"], w["requests"], w["cpu_percent"], w["main_thread_cpu_percent"], w["saturated"])
            for w in row.extra["worker_stats"]] == [("h:7", {"grpc": 24}, 60.0, 55.0, False),
                                                   ("h:8", {"grpc": 20}, 70.0, 65.0, False)]
    assert row.extra["sending_intervals"] == [{"from_s": 0.5, "to_s": 1.0, "workers": 1},
                                              {"from_s": 1.0, "to_s": 9.0, "workers": 2},
                                              {"from_s": 9.0, "to_s": 9.5, "workers": 1}]
    assert row.extra["sending_summary"] == "1 from +0.5s to +1.0s, 2 from +1.0s to +9.0s, 1 from +9.0s to +9.5s"
    assert row.extra["locust_rounded_stats"] == {"m:predict|grpc": {"num_requests": 44, "num_failures": 4,
                                                                    "p50_ms": 1.0, "p99_ms": 2.0}}
    assert row.extra["locust_csv"] == str(tmp_path / "locust_stats.csv") and row.extra["master_exit_code"] == 0
    assert row.extra["server_metrics"] == server
    # every count agrees: the master's 40 + 4, Locust's stats, the workers' 24 + 20, the server's counter
    assert row.extra["request_counts"] == {"master": 44, "locust_stats": 44, "workers_sum": 44, "server": 44}
    assert row.extra["request_count_gaps"] == {}
    assert row.warnings == ["4 failed requests: {'UNAVAILABLE': 3, 'DEADLINE_EXCEEDED': 1}",
                            "Locust reported a load-generator CPU above 90%: results are client-bound",
                            "only 2 of 3 workers reported"]


def test_counts_that_differ_are_reported_not_smoothed_over(tmp_path: Path):
    raw = _raw(distributed=True)
    raw["workers"][1]["requests"] = {"grpc": 18}  # a worker whose last report came before its last requests
    server = {"request_count_by_status": {"OK": 45, "UNAVAILABLE": 3}}  # the server also saw those requests
    row = _fold(_cfg(workers=2), "grpc", raw, [], tmp_path, server)
    assert row.extra["request_counts"] == {"master": 44, "locust_stats": 44, "workers_sum": 42, "server": 48}
    assert row.extra["request_count_gaps"] == {"workers_sum": -2, "server": 4}
    assert row.warnings[-1] == ("request counts differ from the master's 44: workers_sum 42 (-2), server 48 (+4) "
                                + DIFFER)
    # a server without the request counter (its metrics delta has no request_count_by_status): no count, no gap
    row = _fold(_cfg(workers=2), "grpc", _raw(distributed=True), [], tmp_path, {"request_latency_count": 44})
    assert row.extra["request_counts"]["server"] is None and row.extra["request_count_gaps"] == {}
    # a server whose counter saw nothing of this run: a count of 0, and a gap
    row = _fold(_cfg(workers=2), "grpc", _raw(distributed=True), [], tmp_path, {"request_count_by_status": {}})
    assert row.extra["request_counts"]["server"] == 0 and row.extra["request_count_gaps"] == {"server": -44}


def test_local_row_judges_saturation_on_the_main_thread(tmp_path: Path):
    raw = _raw(distributed=False)
    raw["errors"] = {}
    raw["locust_total"] = {"num_requests": 40, "num_failures": 0}
    row = _fold(_cfg(workers=0), "grpc", raw, [ProcessCpu("local", 10, 97.0, 96.0)], tmp_path, None)
    assert row.errors == 0 and row.client_saturated is True and row.client_cpu_percent == 97.0
    assert row.extra["worker_stats"] == [] and row.extra["sending_intervals"] == []
    assert "sending_summary" not in row.extra
    # local run, no metrics URL: neither a workers' sum nor a server count, and no gap
    assert row.extra["request_counts"] == {"master": 40, "locust_stats": 40, "workers_sum": None, "server": None}
    assert row.extra["request_count_gaps"] == {}
    assert row.warnings == ["Locust near saturation (a load-generating process's main thread at 96% of a core): "
                            "numbers may reflect Locust, not the server"]
    # CPU not sampled at all (fewer than 2 samples in the span): saturation unknown, not "no"
    row = _row(_cfg(workers=0), "rest", raw, 10.0, [ProcessCpu("local", 10, None, None)], 0, tmp_path, None)
    assert row.client_saturated is None and row.client_cpu_percent is None
    assert row.n == 0 and row.target == "127.0.0.1:2"  # no REST histogram in the document


@pytest.mark.parametrize("text,seconds", [("20s", 20.0), ("2m", 120.0), ("1m30s", 90.0), ("1h", 3600.0), ("15", 15.0)])
def test_run_time_in_locusts_notation(text, seconds):
    assert _seconds(text) == seconds


def test_bad_run_time_says_how_to_write_it():
    with pytest.raises(ValueError, match=r"bad run time '10x': use e.g. 30s, 2m, 1m30s"):
        _seconds("10x")
