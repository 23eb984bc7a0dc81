"""Benchmarks against the real thing: the in-process modes on an exported model, and the embedded
TF Serving-API server (started the way suite/demo start it) driven over gRPC, REST and by Locust in
distributed mode (1 master + 2 workers)."""
from __future__ import annotations

import json

import pytest

from benchmarks.measure.cpu_meter import CPU_SATURATION_PCT
from benchmarks.commands.inprocess import InprocessConfig, run_inprocess
from benchmarks.load.locust_run import LocustConfig, run_locust
from benchmarks.requests.discovery import discover_models
from benchmarks.results.schema import RESULTS_JSON, ResultWriter, capture_environment
from benchmarks.commands.served import ServedConfig, run_served
from benchmarks.targets.managed import ManagedServer

MODEL = "residual_regressor"


@pytest.fixture(scope="module")
def embedded(exported_models_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("embedded") / "server.log"
    with ManagedServer("embedded", mode="graph", models_dir=exported_models_dir, models=(MODEL,),
                       log_path=log) as srv:
        yield srv


@pytest.mark.timeout(300)
def test_inprocess_modes_report_first_call_separately(exported_models_dir, tmp_path):
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="none"))
    rows = run_inprocess(InprocessConfig(exported_models_dir, models=("softplus_regressor",), batch_sizes=(1, 8),
                                         budget_s=0.05, min_iters=5, progress=False), w)
    modes = ("eager", "predict_on_batch", "graph", "xla", "savedmodel")
    assert {(r.mode, r.batch_size, r.scenario) for r in rows} == {
        (m, b, s) for m in modes for b in (1, 8) for s in ("first_call", "steady")}
    for r in rows:
        if r.scenario == "first_call":
            assert r.n == 1 and r.p50_ms == r.max_ms > 0
        else:
            assert r.n >= 5 and r.p50_ms <= r.p99_ms <= r.max_ms
            assert r.rows_per_s == pytest.approx(r.throughput_rps * r.batch_size)
            assert r.extra["first_call_ms"] > 0
    # tracing a tf.function costs far more than one traced call (first call vs steady p50)
    graph_first = next(r for r in rows if r.mode == "graph" and r.batch_size == 1 and r.scenario == "first_call")
    graph_steady = next(r for r in rows if r.mode == "graph" and r.batch_size == 1 and r.scenario == "steady")
    assert graph_first.p50_ms > graph_steady.p50_ms
    assert len(json.loads((tmp_path / "run" / RESULTS_JSON).read_text())["results"]) == len(rows)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind,grpc_client", [("grpc", "aio"), ("grpc", "curl"), ("rest", "aio")])
def test_served_sweep_against_embedded_server(embedded, exported_models_dir, tmp_path, kind, grpc_client):
    n_features = next(i.n_features for i in discover_models(exported_models_dir) if i.name == MODEL)
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="embedded", server_mode="graph"))
    target = embedded.grpc_target if kind == "grpc" else embedded.rest_target
    rows = run_served(ServedConfig(kind=kind, target=target, models=[(MODEL, n_features)], batch_sizes=(4,),
                                   concurrencies=(2,), window_s=0.4, max_windows=3, warmup_s=0.2,
                                   server_label=embedded.label, metrics_url=embedded.metrics_url,
                                   grpc_client=grpc_client, progress=False), w)
    (row,) = rows
    assert row.errors == 0 and row.n > 0, row.errors_by_code
    # the probe's response had the batch's rows (check_*_response warns "... rows ..." otherwise)
    assert not [x for x in row.warnings if "rows" in x or "probe" in x], row.warnings
    assert row.server == "embedded-graph" and row.deserialize_ms is not None
    assert row.client == {"grpc": {"aio": "grpc.aio", "curl": "libcurl"}[grpc_client], "rest": "asyncio-http1"}[kind]
    sm = row.extra["server_metrics"]
    assert sm["request_count_by_status"].get("OK", 0) >= row.n  # the server saw at least what we timed


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_project_model_without_a_models_directory_is_described_by_the_server(embedded, tmp_path, kind):
    """n_features 0 (no manifest at hand): requests come from the signature the server reports."""
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="embedded", server_mode="graph"))
    target = embedded.grpc_target if kind == "grpc" else embedded.rest_target
    (row,) = run_served(ServedConfig(kind=kind, target=target, models=[(MODEL, 0)], batch_sizes=(3,),
                                     concurrencies=(2,), window_s=0.3, fixed_windows=2, warmup_s=0.1,
                                     server_label=embedded.label, progress=False), w)
    assert row.errors == 0 and row.n > 0 and row.batch_size == 3, row.errors_by_code
    assert not [x for x in row.warnings if "rows" in x or "probe" in x], row.warnings


@pytest.mark.timeout(300)
def test_locust_master_and_two_workers_against_embedded(embedded, exported_models_dir, tmp_path):
    n_features = next(i.n_features for i in discover_models(exported_models_dir) if i.name == MODEL)
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="embedded"))
    # What is checked is how the figures travel (workers -> master -> row) and agree, not the server's speed: a
    # 10 ms think time keeps the 4 users from running the workers and the server flat out on a 2-core machine
    # (each worker still sends over 100 req/s, and its main thread's CPU is measured), and 2 s is enough for that.
    rows = run_locust(LocustConfig(embedded.grpc_target, embedded.rest_target, model=MODEL, n_features=n_features,
                                   users=4, spawn_rate=4, run_time="2s", wait_s=0.01, workers=2,
                                   server_label=embedded.label, metrics_url=embedded.metrics_url,
                                   out_dir=tmp_path / "locust"), w)
    assert [r.scenario for r in rows] == ["locust-grpc", "locust-rest"]  # one Locust test per transport
    for r in rows:
        transport = r.scenario.split("-")[1]
        assert r.kind == "locust" and r.n > 0 and r.errors == 0, (r.scenario, r.n, r.errors_by_code)
        assert r.concurrency == 4  # every user on this transport: the users are not split between the APIs
        assert r.extra["distributed"] is True
        assert len(r.extra["worker_stats"]) == 2, "both workers' raw timings must reach the master"
        # master = sum over workers = the server's Prometheus counter
        counts = r.extra["request_counts"]
        assert counts["master"] == counts["workers_sum"] == r.n and counts["server"] >= r.n, counts
        assert r.p50_ms <= r.p99_ms <= r.max_ms and r.histogram
        # raw timings travel in the same worker reports as Locust's own stats: the counts must agree
        method = "grpc" if transport == "grpc" else "POST"
        assert r.n == r.extra["locust_rounded_stats"][f"{MODEL}:predict|{method}"]["num_requests"]
        # Locust's own CPU: master and both workers measured, their sum reported, a saturation verdict given
        assert [p["role"] for p in r.client_processes] == ["master", "worker0", "worker1"]
        assert all(p["cpu_percent"] is not None and p["cpu_percent"] >= 0 for p in r.client_processes)
        assert r.client_processes[1]["main_thread_cpu_percent"] > 0  # a worker sent requests
        assert r.client_cpu_percent == pytest.approx(sum(p["cpu_percent"] for p in r.client_processes), abs=0.2)
        # distributed: saturated exactly when a worker's main thread (where its users run) reached the threshold
        busiest = max(p["main_thread_cpu_percent"] for p in r.client_processes[1:])
        assert r.client_saturated is (busiest >= CPU_SATURATION_PCT)
        assert f"{MODEL}:predict" in (tmp_path / "locust" / transport / "locust_stats.csv").read_text()
        assert (tmp_path / "locust" / transport / "locust.html").stat().st_size > 1000
    stored = json.loads((tmp_path / "run" / RESULTS_JSON).read_text())["results"]
    assert [r["kind"] for r in stored] == ["locust"] * 2
    assert all(len(r["client_processes"]) == 3 for r in stored)
