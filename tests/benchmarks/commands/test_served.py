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
from benchmarks.clients.transports import GrpcTransport, ok
from benchmarks.commands import served


@pytest.fixture(scope="module")
def noop():
    with NoopServer(NoopConfig(delay_ms=0.5)) as s:
        yield s


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind,grpc_client", [("grpc", "aio"), ("grpc", "curl"), ("rest", "aio")])
def test_server_killed_mid_run_counts_errors_and_keeps_results(tmp_path, monkeypatch, kind, grpc_client):
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="noop"))
    answers, answered = [0], threading.Event()
    real_make_transport = served.make_transport

    def counting_transport(*args, **kwargs):  # the client side tells when 40 answers came back: kill then
        transport = real_make_transport(*args, **kwargs)
        send = transport.send

        async def counted(payload: bytes):
            status, body = await send(payload)
            answers[0] += ok(status)
            if answers[0] >= 40:
                answered.set()
            return status, body

        transport.send = counted
        return transport

    monkeypatch.setattr(served, "make_transport", counting_transport)
    with ManagedServer("noop", log_path=tmp_path / "noop.log") as srv:
        target = srv.grpc_target if kind == "grpc" else srv.rest_target
        killer = threading.Thread(target=lambda: (answered.wait(20), srv.kill()), daemon=True)
        killer.start()  # hard kill while requests are in flight, once 40 were answered
        # no warm-up: every request after the probe is in the measured windows (6 x 0.5 s, far longer than the
        # 40 answers before the kill; the time after it is spent failing, so longer windows only cost CPU)
        rows = run_served(ServedConfig(kind=kind, target=target, models=[("m", 10)], batch_sizes=(2,),
                                       concurrencies=(4,), window_s=0.5, fixed_windows=6, warmup_s=0.0,
                                       timeout_s=2.0, server_label="noop", grpc_client=grpc_client,
                                       progress=False), w)
        killer.join(30)
    assert answered.is_set(), "the server never answered 40 requests"
    row = rows[0]
    assert row.n >= 40, "every answer that came back before the kill is counted"
    assert row.errors > 0 and sum(row.errors_by_code.values()) == row.errors
    expected = {"UNAVAILABLE"} if kind == "grpc" else {"connection_error"}
    assert set(row.errors_by_code) <= expected | {"DEADLINE_EXCEEDED", "timeout", "CANCELLED"}
    assert set(row.errors_by_code) & expected
    assert any("failed requests" in x for x in row.warnings)
    doc = json.loads((tmp_path / "run" / RESULTS_JSON).read_text())
    assert doc["results"][0]["errors"] == row.errors and doc["results"][0]["n"] == row.n


@pytest.mark.timeout(120)
def test_loadgen_server_scenario_returns_verdict_and_keeps_summary(tmp_path, noop):
    # A 1 µs latency bound no gRPC round trip meets: LoadGen's verdict is INVALID for that reason, on any machine.
    p = build_payload("m", 1, 10)
    res = run_loadgen(lambda: GrpcTransport(f"127.0.0.1:{noop.grpc_port}"), [p.grpc_bytes],
                      LoadGenConfig(scenario="server", target_qps=300, min_duration_ms=1000, min_query_count=50,
                                    target_latency_ms=0.001), tmp_path / "lg")
    summary = (tmp_path / "lg" / "mlperf_log_summary.txt").read_text()
    assert res.verdict == "INVALID" and "Result is : INVALID" in summary
    assert res.summary["Performance constraints satisfied"] == "NO"
    assert res.summary["target_latency (ns)"] == "1000" and res.summary["min_query_count"] == "50"
    assert res.issued >= 50 and res.window.sent == res.issued and res.cpu.wall_s > 0
    assert res.window.errors == {}
    assert res.loadgen_percentiles_ms["p50.00"] == float(res.summary["50.00 percentile latency (ns)"]) / 1e6
    assert res.achieved_qps == float(res.summary["Completed samples per second"])


@pytest.mark.timeout(120)
def test_served_rows_carry_loadgen_verdict_and_server_metrics(tmp_path, noop):
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="noop"))
    metrics = f"http://127.0.0.1:{noop.rest_port}/monitoring/prometheus/metrics"
    rows = run_served(ServedConfig(kind="grpc", target=f"127.0.0.1:{noop.grpc_port}", models=[("m", 10)],
                                   batch_sizes=(4,), concurrencies=(2,), window_s=0.3, max_windows=4, warmup_s=0.1,
                                   metrics_url=metrics, loadgen_scenarios=("server",), loadgen_qps=(200.0,),
                                   loadgen_min_duration_ms=500, loadgen_target_latency_ms=0.001,
                                   loadgen_dir=tmp_path / "lg", server_label="noop", progress=False), w)
    closed, lg = rows
    assert closed.scenario == "closed"
    # stable exactly when the search stopped before its cap or the last 3 windows agreed within 10 %
    windows, dev = closed.extra["windows"], closed.extra["max_deviation_pct"]
    assert closed.stable == (windows < 4 or (dev is not None and dev <= 10.0))
    assert any(x.startswith("unstable:") for x in closed.warnings) == (not closed.stable)
    assert closed.serialize_ms > 0 and closed.deserialize_ms > 0
    sm = closed.extra["server_metrics"]
    # server-side count covers at least every request the client recorded in the reported windows
    assert sm["request_count_by_status"]["OK"] >= closed.n
    assert sm["processed_batch_size_mean"] == pytest.approx(4.0)
    assert lg.scenario == "server" and lg.extra["loadgen"]["verdict"] == "INVALID"
    assert lg.extra["loadgen"]["constraints"]["Performance constraints satisfied"] == "NO"
    assert lg.warnings[0].startswith("LoadGen verdict INVALID: Performance constraints satisfied=NO")
    assert (tmp_path / "lg" / "grpc-m-b4-server-200qps" / "mlperf_log_summary.txt").exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("calls,conc,expected", [("auto", 1, "sync"), ("async", 1, "async"), ("auto", 2, "async"),
                                                 ("sync", 2, "sync")])
def test_calls_choose_blocking_or_loop_calls_and_the_row_says_which(tmp_path, noop, calls, conc, expected):
    """--calls (ServedConfig.calls): auto makes blocking calls at one stream only; sync and async force either.
    Every request of the point is answered either way."""
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="noop"))
    cfg = ServedConfig(kind="rest", target=f"127.0.0.1:{noop.rest_port}", models=[("m", 10)], batch_sizes=(1,),
                       concurrencies=(conc,), window_s=0.2, fixed_windows=2, warmup_s=0.05, server_label="noop",
                       calls=calls, progress=False)
    (row,) = run_served(cfg, w)
    assert row.extra["calls"] == expected and row.n > 0 and row.errors == 0, row.warnings
