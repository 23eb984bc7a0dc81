"""Locust distributed smoke test: 1 master + 2 worker processes on localhost for a few seconds; the
raw per-request timings from both workers end up in the result schema."""
from __future__ import annotations

import json

import pytest

from benchmarks.locust_runner import LocustConfig, run_locust
from benchmarks.results import RESULTS_JSON, ResultWriter, capture_environment
from benchmarks.servers import ManagedServer


@pytest.mark.timeout(240)
def test_locust_master_and_two_workers(tmp_path):
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="noop"))
    with ManagedServer("noop", log_path=tmp_path / "noop.log") as srv:
        rows = run_locust(LocustConfig(srv.grpc_target, srv.rest_target, model="m", users=4, spawn_rate=4,
                                       run_time="4s", workers=2, server_label="noop", out_dir=tmp_path / "locust"), w)
    by = {r.scenario: r for r in rows}
    assert set(by) == {"locust-grpc", "locust-rest"}
    for r in rows:
        assert r.kind == "locust" and r.n > 0 and r.errors == 0, (r.scenario, r.n, r.errors_by_code)
        assert r.extra["distributed"] is True
        assert r.extra["workers_reported"] == 2, "both workers' raw timings must reach the master"
        assert r.p50_ms <= r.p99_ms <= r.max_ms and r.histogram
        # raw timings travel in the same worker reports as Locust's own stats: the counts must agree
        method = "grpc" if r.scenario == "locust-grpc" else "POST"
        assert r.n == r.extra["locust_rounded_stats"][f"m:predict|{method}"]["num_requests"]
    stats = (tmp_path / "locust" / "locust_stats.csv").read_text()
    assert "m:predict" in stats
    assert (tmp_path / "locust" / "locust.html").stat().st_size > 1000
    doc = json.loads((tmp_path / "run" / RESULTS_JSON).read_text())
    assert [r["kind"] for r in doc["results"]] == ["locust", "locust"]
