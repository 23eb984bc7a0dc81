"""Result schema, percentile ordering, atomic flush and the report/plots built from rows."""
from __future__ import annotations

import json
import os
import stat
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.results.findings import fmt_num
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
    for bs in (1, 32):  # the eager/graph speed-up of each batch size, from the rows' own p50s, in the one format
        speedup = p50[('eager', bs)] / p50[('graph', bs)]
        assert f"| m | {bs} | {fmt_num(p50[('eager', bs)])} | {fmt_num(p50[('graph', bs)])} | " in md
        assert f" | {fmt_num(speedup)}× | " in md
    assert " | 10.1× | " in md and " | 9.74× | " in md  # 10.255 / 1.012 and 14.431 / 1.481 ms
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
    assert "| 0.800 |" in lines[0] and "server (neither client saturated; they agree)" in lines[0]
    assert "| 5,000 |" in lines[0]  # 50 % of a core at 100 req/s: 5,000 µs of client CPU per request
    assert "| 0.250 |" in lines[1] and lines[1].rstrip(" |").endswith("Locust")
    assert "999" not in "\n".join(lines)
    unequal = [_served("locust", "locust-grpc", 50.0, False), _served("grpc", "closed", 100.0, False)]
    assert "machine CPU shared by client and server" in locust_vs_ours(unequal)
    md = render("run-l", {}, rows)
    assert "Locust vs our client at the same concurrency" in md


def _closed_row(kind, server, conc, rps, p99, *, batch=1, stable=True, **kw):
    return ResultRow(kind=kind, model="m", mode=server.split("-")[-1], batch_size=batch, scenario="closed",
                     concurrency=conc, n=1000, throughput_rps=rps, rows_per_s=rps * batch, p99_ms=p99,
                     server=server, stable=stable, **kw)


def test_report_opens_with_findings_computed_from_the_rows():
    rows = [_closed_row("grpc", "embedded-graph", 1, 1500.0, 1.2), _closed_row("grpc", "embedded-graph", 8, 2104.4, 9.0),
            _closed_row("rest", "embedded-graph", 8, 2631.0, 7.5),
            _closed_row("grpc", "embedded-eager", 8, 404.2, 30.0),
            _closed_row("rest", "embedded-eager", 8, 380.0, 150.0,
                    stable=False, warnings=["unstable: last 3 of 5 windows differ by up to 31.0%"]),
            ResultRow(kind="rest", model="m", mode="eager", batch_size=1, scenario="server", target_rate=100.0, n=500,
                      throughput_rps=98.6, server="embedded-eager",
                      extra={"loadgen": {"verdict": "INVALID", "target_latency_ms": 50.0}},
                      warnings=["LoadGen verdict INVALID: Min queries satisfied=False"])]
    md = render("run-x", {"cpu_model": "cpu"}, rows)
    assert md.startswith("# Benchmark run run-x\n\n## Findings\n\n" + "\n".join([
        "- served graph ÷ eager, gRPC, batch 1: 5.21× (2,100 vs 404 req/s at 8 / 8 streams)",
        "- served graph ÷ eager, REST, batch 1: 6.92× (2,630 vs 380 req/s at 8 / 8 streams)",
        "- gRPC ÷ REST on embedded-eager (the embedded server's APIs, not TF Serving's), batch 1: "
        "1.06× (404 vs 380 req/s at 8 / 8 streams)",
        "- gRPC ÷ REST on embedded-graph (the embedded server's APIs, not TF Serving's), batch 1: "
        "0.800× (2,100 vs 2,630 req/s at 8 / 8 streams)",
        "- best point with p99 ≤ 50.0 ms on embedded-eager: gRPC m batch 1 at 8 streams, 404 rows/s (404 req/s), "
        "p99 30.0 ms",
        "- best point with p99 ≤ 50.0 ms on embedded-graph: REST m batch 1 at 8 streams, 2,630 rows/s "
        "(2,630 req/s), p99 7.50 ms",
        "- REST embedded-eager m batch 1, 8 streams: unstable: last 3 of 5 windows differ by up to 31.0%",
        "- REST embedded-eager m batch 1, LoadGen server 100/s: LoadGen verdict INVALID: "
        "Min queries satisfied=False",
    ]) + "\n\n## Run\n")
    # one number format everywhere: the LoadGen row's req/s reads the same in every table
    assert "98.6" in md and "98.595" not in md and "2,104" not in md


@pytest.mark.parametrize("value,text", [(656.282, "656"), (1096.0, "1,100"), (7.331, "7.33"), (0.00518, "0.00518"),
                                        (98.595, "98.6"), (12345.6, "12,300"), (0.0, "0")])
def test_one_number_format(value, text):
    from benchmarks.results.findings import fmt_num

    assert fmt_num(value) == text


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_result_files_follow_the_umask(tmp_path, umask):
    from benchmarks.results.report import write_report

    old = os.umask(umask)
    try:
        w = ResultWriter(tmp_path / "run", capture_environment(command="pytest"))
        write_report(w.run_dir, w.run_id, {}, [])
    finally:
        os.umask(old)
    for name in (RESULTS_JSON, RESULTS_CSV, "report.md"):
        assert stat.S_IMODE((w.run_dir / name).stat().st_mode) == 0o666 & ~umask, name


def test_readme_command_writes_the_runs_findings_between_the_markers(tmp_path):
    from benchmarks.__main__ import main as bench_main
    from benchmarks.commands.readme import BEGIN, END
    from benchmarks.results.findings import findings

    w = ResultWriter(tmp_path / "run-r", capture_environment(command="python -m benchmarks demo"))
    rows = [_closed_row("grpc", "embedded-graph", 8, 2000.0, 5.0), _closed_row("rest", "embedded-graph", 8, 2500.0, 4.0)]
    w.extend(rows)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{BEGIN}\nold figures\n{END}\nafter\n")
    assert bench_main(["readme", "run-r", "--results-dir", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    block = text.split(BEGIN + "\n", 1)[1].split("\n" + END, 1)[0]
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{END}\nafter\n") and "old figures" not in text
    assert block.startswith("Run `run-r`: `python -m benchmarks demo` on ") and block.endswith(findings(rows))
    readme.write_text("no markers\n")
    assert bench_main(["readme", "run-r", "--results-dir", str(tmp_path), "--readme", str(readme)]) == 2
