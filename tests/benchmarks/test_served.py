"""Served benchmarks against the no-op server: errors counted when the server dies mid-run (and the
results still written), LoadGen verdicts, Prometheus deltas."""
from __future__ import annotations

import json
import threading

import pytest

from benchmarks.load.loadgen import LoadGenConfig, run_loadgen
from benchmarks.targets.noop_python import NoopConfig, NoopServer
from benchmarks.requests.payloads import build_payload
from benchmarks.results.schema import RESULTS_JSON, ResultWriter, capture_environment
from benchmarks.commands.served import ServedConfig, run_served
from benchmarks.targets.managed import ManagedServer
from benchmarks.clients.transports import GrpcTransport


@pytest.fixture(scope="module")
def noop():
    with NoopServer(NoopConfig(delay_ms=0.5)) as s:
        yield s


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind,grpc_client", [("grpc", "aio"), ("grpc", "curl"), ("rest", "aio")])
def test_server_killed_mid_run_counts_errors_and_keeps_results(tmp_path, kind, grpc_client):
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="noop"))
    with ManagedServer("noop", log_path=tmp_path / "noop.log") as srv:
        target = srv.grpc_target if kind == "grpc" else srv.rest_target
        killer = threading.Timer(1.5, srv.kill)  # hard kill while requests are in flight
        killer.start()
        try:
            rows = run_served(ServedConfig(kind=kind, target=target, models=[("m", 10)], batch_sizes=(2,),
                                           concurrencies=(4,), window_s=0.5, fixed_windows=6, warmup_s=0.2,
                                           timeout_s=2.0, server_label="noop", grpc_client=grpc_client,
                                           progress=False), w)
        finally:
            killer.cancel()
    row = rows[0]
    assert row.n > 0, "requests before the kill must have succeeded"
    assert row.errors > 0 and sum(row.errors_by_code.values()) == row.errors
    expected = {"UNAVAILABLE"} if kind == "grpc" else {"connection_error"}
    assert set(row.errors_by_code) <= expected | {"DEADLINE_EXCEEDED", "timeout", "CANCELLED"}
    assert set(row.errors_by_code) & expected
    assert any("failed requests" in x for x in row.warnings)
    doc = json.loads((tmp_path / "run" / RESULTS_JSON).read_text())
    assert doc["results"][0]["errors"] == row.errors and doc["results"][0]["n"] == row.n


@pytest.mark.timeout(120)
def test_loadgen_server_scenario_returns_verdict_and_keeps_summary(tmp_path, noop):
    p = build_payload("m", 1, 10)
    res = run_loadgen(lambda: GrpcTransport(f"127.0.0.1:{noop.grpc_port}"), [p.grpc_bytes],
                      LoadGenConfig(scenario="server", target_qps=300, min_duration_ms=1000, min_query_count=50,
                                    target_latency_ms=50), tmp_path / "lg")
    summary = (tmp_path / "lg" / "mlperf_log_summary.txt").read_text()
    assert res.verdict in ("VALID", "INVALID")
    assert f"Result is : {res.verdict}" in summary
    assert res.issued >= 50 and res.window.sent == res.issued and res.cpu.wall_s > 0
    assert res.loadgen_percentiles_ms["p50.00"] > 0 and res.achieved_qps and res.achieved_qps > 100


@pytest.mark.timeout(120)
def test_served_rows_carry_loadgen_verdict_and_server_metrics(tmp_path, noop):
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="noop"))
    metrics = f"http://127.0.0.1:{noop.rest_port}/monitoring/prometheus/metrics"
    rows = run_served(ServedConfig(kind="grpc", target=f"127.0.0.1:{noop.grpc_port}", models=[("m", 10)],
                                   batch_sizes=(4,), concurrencies=(2,), window_s=0.3, max_windows=4, warmup_s=0.1,
                                   metrics_url=metrics, loadgen_scenarios=("single_stream",),
                                   loadgen_min_duration_ms=500, loadgen_dir=tmp_path / "lg", server_label="noop",
                                   progress=False), w)
    closed, lg = rows
    assert closed.scenario == "closed" and closed.stable in (True, False)
    assert closed.serialize_ms > 0 and closed.deserialize_ms > 0
    sm = closed.extra["server_metrics"]
    # server-side count covers at least every request the client recorded in the reported windows
    assert sm["request_count_by_status"]["OK"] >= closed.n
    assert sm["processed_batch_size_mean"] == pytest.approx(4.0)
    assert lg.scenario == "single_stream" and lg.extra["loadgen"]["verdict"] in ("VALID", "INVALID")
    assert (tmp_path / "lg").exists()
