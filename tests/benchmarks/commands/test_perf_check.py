"""The perf check and the graph-call comparison run briefly and write ordinary, well-formed result rows.

No figure is judged (a timing verdict on a shared machine is not a test); what is checked is that every
measurement is there once, carries the figures the ratios are made of, and that the ratios are written.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.commands import graph_call, perf_check
from benchmarks.results.schema import RESULTS_JSON, load_run
from tests.conftest import REPO_ROOT

EXPECTED = {"in-process signature call", "in-process fastest call (server's graph path)",
            "gRPC echo round trip (sync server)", "gRPC echo round trip (aio server)",
            "served graph single stream", "served graph 4 streams", "served graph + batching 4 streams"}


@pytest.mark.timeout(300)
def test_brief_perf_check_writes_one_row_per_measurement_and_the_ratios(exported_models_dir: Path,
                                                                        tmp_path: Path) -> None:
    # its own process: the in-process phase sets TensorFlow's thread counts, which only a fresh runtime allows
    out = tmp_path / "summary.json"
    cmd = [sys.executable, "-m", "benchmarks.commands.perf_check", "--models-dir", str(exported_models_dir),
           "--repeats", "1", "--requests", "50", "--streams", "4", "--seconds", "0.5", "--modes", "graph",
           "--tuned-timeout-micros", "0", "--results-dir", str(tmp_path), "--run-id", "pc", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run = load_run(tmp_path / "pc")
    by = {r.extra["measurement"]: r for r in run.rows}
    assert set(by) == EXPECTED and len(run.rows) == len(EXPECTED)
    assert len({r.key() for r in run.rows}) == len(run.rows), "rows must be distinguishable for compare"
    for r in run.rows:
        assert r.n > 0 and r.errors == 0 and r.p50_ms <= r.p99_ms <= r.max_ms and r.histogram
        assert r.extra["repeats"] == 1 and "p50_us" in r.extra["spread_min_max"]
    for name in EXPECTED - {"in-process signature call", "in-process fastest call (server's graph path)"}:
        r = by[name]
        assert r.kind == "grpc" and r.client == "grpc.aio" and r.throughput_rps > 0
        assert r.extra["client_cpu_us_per_request"] > 0 and r.extra["server_cpu_us_per_request"] >= 0
    assert by["served graph 4 streams"].concurrency == 4 and by["served graph 4 streams"].scenario == "closed"
    single = by["served graph single stream"]
    assert single.n == 50 and single.server == "embedded-graph" and single.concurrency == 1
    assert by["served graph + batching 4 streams"].server == "embedded-graph+batching"
    assert by["served graph + batching 4 streams"].extra["avg_processed_batch"] >= 1
    assert by["in-process fastest call (server's graph path)"].extra["cpu_us_per_call"] > 0

    summary = json.loads((tmp_path / "pc" / perf_check.SUMMARY_JSON).read_text())
    assert json.loads(out.read_text()) == summary
    for k in ("overhead_ratio", "overhead_ratio_vs_aio_echo", "overhead_ratio_vs_fastest_inprocess",
              "batching_throughput_ratio", "batching_ratio_ceiling_from_server_cpu"):
        assert summary["ratios"][k] > 0, k
    assert summary["goals"] == perf_check.GOALS and summary["in_process_model_cost"]["model_cpu_us_batch1"] > 0
    assert (tmp_path / "pc" / "report.md").is_file() and (tmp_path / "pc" / "embedded-graph.log").is_file()


def test_perf_check_refuses_missing_models_and_a_mode_list_without_graph(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    perf_check.add_arguments(parser)
    assert perf_check.main(parser.parse_args(["--models-dir", str(tmp_path), "--results-dir", str(tmp_path)])) == 2
    assert "export first" in capsys.readouterr().err
    assert not (tmp_path / RESULTS_JSON).exists() and not list(tmp_path.glob("*/" + RESULTS_JSON))


@pytest.mark.timeout(180)
def test_brief_graph_call_writes_a_row_per_way_of_calling(exported_models_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    graph_call.add_arguments(parser)
    args = parser.parse_args(["--models-dir", str(exported_models_dir), "--iterations", "30", "--rounds", "2",
                              "--results-dir", str(tmp_path), "--run-id", "gc", "--no-progress"])
    assert graph_call.main(args) == 0
    run = load_run(tmp_path / "gc")
    assert [r.mode for r in run.rows] == list(graph_call.CALLS)  # every way of calling runs on the pinned TensorFlow
    for r in run.rows:
        assert r.kind == "inprocess" and r.batch_size == 1 and r.extra["call"] == graph_call.CALLS[r.mode]
        assert r.errors == 0 and r.n == 30 and r.extra["same_output"] is True and r.p50_ms > 0, (r.mode, r.warnings)


@pytest.mark.parametrize("module, needle", [("benchmarks.commands.perf_check", "--tuned-timeout-micros"),
                                            ("benchmarks.commands.graph_call", "--rounds"),
                                            ("benchmarks.targets.echo", "--kind")])
def test_module_help(module: str, needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and needle in proc.stdout, proc.stderr[-2000:]
