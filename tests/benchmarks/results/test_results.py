"""Result schema, percentile ordering, atomic flush and the report/plots built from rows."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.results.plots import write_plots
from benchmarks.results.report import render
from benchmarks.results.schema import RESULTS_CSV, RESULTS_JSON, ResultRow, ResultWriter, capture_environment, load_run

REQUIRED_ROW_FIELDS = {"kind", "model", "mode", "batch_size", "concurrency", "target_rate", "p50_ms", "p90_ms",
                       "p99_ms", "p999_ms", "max_ms", "throughput_rps", "rows_per_s", "errors", "n", "histogram"}
REQUIRED_ENV_FIELDS = {"cpu_model", "cpu_cores_logical", "memory_gib", "gpus", "versions", "server_kind",
                       "server_mode", "git_commit", "settings"}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.002, max_value=5000.0, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_are_ordered_and_bounded(samples_ms):
    h = LatencyHistogram.from_samples_ms(samples_ms)
    s = h.summary()
    assert s.n == len(samples_ms)
    assert s.min_ms <= s.p50_ms <= s.p90_ms <= s.p95_ms <= s.p99_ms <= s.p999_ms <= s.max_ms
    # HdrHistogram keeps 3 significant digits: the max is the true max within 0.1 % (+1 µs floor)
    assert s.max_ms == pytest.approx(max(samples_ms), rel=2e-3, abs=1e-3)


def test_histogram_roundtrip_and_reconstruction():
    rng = np.random.default_rng(3)
    x = rng.lognormal(0.0, 0.6, 5000)
    h = LatencyHistogram.from_samples_ms(x)
    h2 = LatencyHistogram.decode(h.encode())
    assert h2.summary() == h.summary()
    rec = h2.samples_ms()
    assert rec.size == x.size
    assert np.median(rec) == pytest.approx(np.median(x), rel=5e-3)


def test_writer_flushes_every_row_atomically_with_schema(tmp_path):
    env = capture_environment(server_kind="noop", server_mode="test", settings={"k": 1}, command="pytest")
    w = ResultWriter(tmp_path / "run-a", env)
    doc = json.loads((tmp_path / "run-a" / RESULTS_JSON).read_text())
    assert doc["results"] == [] and REQUIRED_ENV_FIELDS <= set(doc["environment"])
    assert doc["environment"]["cpu_cores_logical"] >= 1 and doc["environment"]["versions"]["grpcio"]

    h = LatencyHistogram.from_samples_ms([1.0, 2.0, 3.0, 4.0])
    w.append(ResultRow.from_histogram(h, duration_s=2.0, kind="grpc", model="m", mode="noop", batch_size=8,
                                      concurrency=4, errors=1, errors_by_code={"UNAVAILABLE": 1}))
    # flushed after the first append, before any second row exists
    doc = json.loads((tmp_path / "run-a" / RESULTS_JSON).read_text())
    assert len(doc["results"]) == 1
    row = doc["results"][0]
    assert REQUIRED_ROW_FIELDS <= set(row)
    assert row["n"] == 4 and row["throughput_rps"] == pytest.approx(2.0) and row["rows_per_s"] == pytest.approx(16.0)
    assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["p999_ms"] <= row["max_ms"]
    assert row["errors_by_code"] == {"UNAVAILABLE": 1}

    w.append(ResultRow(kind="rest", model="m", mode="noop", batch_size=1))  # no samples: NaN -> null, still valid JSON
    doc = json.loads((tmp_path / "run-a" / RESULTS_JSON).read_text())
    assert doc["results"][1]["p50_ms"] is None
    assert not [p for p in (tmp_path / "run-a").iterdir() if p.name.startswith(".")], "temp files left behind"
    assert (tmp_path / "run-a" / RESULTS_CSV).read_text().count("\n") == 3

    loaded = load_run(tmp_path / "run-a")
    assert [r.kind for r in loaded.rows] == ["grpc", "rest"]
    assert math.isnan(loaded.rows[1].p50_ms)
    assert loaded.rows[0].histogram_obj().count == 4


def test_writer_rejects_unknown_kind(tmp_path):
    w = ResultWriter(tmp_path / "r", capture_environment())
    with pytest.raises(ValueError, match="unknown result kind"):
        w.append(ResultRow(kind="carrier-pigeon", model="m", mode="x", batch_size=1))


def test_report_and_plots_from_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for mode, scale in (("eager", 10.0), ("graph", 1.0), ("xla", 0.8)):
        for bs in (1, 32):
            h = LatencyHistogram.from_samples_ms(rng.lognormal(np.log(scale * (1 + bs / 64)), 0.2, 200))
            rows.append(ResultRow.from_histogram(h, duration_s=1.0, kind="inprocess", model="m", mode=mode,
                                                 batch_size=bs, scenario="steady", extra={"first_call_ms": 5.0}))
    for kind, base in (("grpc", 1.0), ("rest", 1.5)):
        for c in (1, 4):
            h = LatencyHistogram.from_samples_ms(rng.lognormal(np.log(base * c), 0.3, 500))
            rows.append(ResultRow.from_histogram(h, duration_s=1.0, kind=kind, model="m", mode="noop", batch_size=1,
                                                 scenario="closed", concurrency=c, server="noop", stable=True))
    md = render("run-x", {"cpu_model": "cpu"}, rows)
    assert "eager vs graph" in md and "gRPC vs REST" in md
    p50 = {(r.mode, r.batch_size): r.p50_ms for r in rows if r.kind == "inprocess"}
    for bs in (1, 32):  # the eager/graph speed-up of each batch size, from the rows' own p50s
        assert f"| m | {bs} | " in md and f" | {p50[('eager', bs)] / p50[('graph', bs)]:.1f}× | " in md
    made = write_plots(rows, tmp_path)
    assert {p.name for p in made} == {"inprocess_modes.png", "latency_vs_throughput.png", "latency_spectrum.png"}
    for p in made:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_runs_written_before_client_processes_existed_still_load(tmp_path):
    """A row stored without the Locust CPU fields loads with their defaults; a new one keeps them."""
    w = ResultWriter(tmp_path / "old", capture_environment())
    w.append(ResultRow(kind="locust", model="m", mode="graph", batch_size=1, scenario="locust-grpc", concurrency=4))
    doc = json.loads((tmp_path / "old" / RESULTS_JSON).read_text())
    del doc["results"][0]["client_processes"]
    (tmp_path / "old" / RESULTS_JSON).write_text(json.dumps(doc))
    assert load_run(tmp_path / "old").rows[0].client_processes == []

    procs = [{"role": "local", "pid": 1, "cpu_percent": 40.0, "main_thread_cpu_percent": 38.0}]
    w2 = ResultWriter(tmp_path / "new", capture_environment())
    w2.append(ResultRow(kind="locust", model="m", mode="graph", batch_size=1, scenario="locust-grpc",
                        client_cpu_percent=40.0, client_saturated=False, client_processes=procs))
    assert load_run(tmp_path / "new").rows[0].client_processes == procs
    assert '"cpu_percent": 40.0' in (tmp_path / "new" / RESULTS_CSV).read_text().replace('""', '"')


def _served(kind: str, scenario: str, rps: float, saturated: bool | None, concurrency: int = 4) -> ResultRow:
    h = LatencyHistogram.from_samples_ms([10.0] * 20)
    row = ResultRow.from_histogram(h, duration_s=20 / rps, kind=kind, model="m", mode="embedded-eager", batch_size=1,
                                   scenario=scenario, concurrency=concurrency, server="embedded-eager")
    row.client_saturated, row.client_cpu_percent = saturated, 50.0
    return row


def test_report_puts_each_locust_row_next_to_our_client_and_names_the_limit():
    from benchmarks.results.report import locust_vs_ours

    rows = [_served("locust", "locust-grpc", 100.0, False), _served("grpc", "closed", 125.0, False),
            _served("locust", "locust-rest", 50.0, True), _served("rest", "closed", 200.0, False),
            _served("rest", "closed", 999.0, False, concurrency=16)]  # other concurrency: never paired
    lines = locust_vs_ours(rows).splitlines()[2:]
    assert len(lines) == 2
    assert "| 0.80 |" in lines[0] and "server (neither client saturated; they agree)" in lines[0]
    assert "| 5,000 |" in lines[0]  # 50 % of a core at 100 req/s: 5,000 µs of client CPU per request
    assert "| 0.25 |" in lines[1] and lines[1].rstrip(" |").endswith("Locust")
    assert "999" not in "\n".join(lines)
    unequal = [_served("locust", "locust-grpc", 50.0, False), _served("grpc", "closed", 100.0, False)]
    assert "machine CPU shared by client and server" in locust_vs_ours(unequal)
    md = render("run-l", {}, rows)
    assert "Locust vs our client at the same concurrency" in md
