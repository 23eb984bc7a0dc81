"""`python -m benchmarks report` and the demo's tables on a run of fixed rows: every figure in the report
is known in advance (latencies below 2.048 ms are exact in the HdrHistogram at 3 significant digits)."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.__main__ import main as bench_main
from benchmarks.commands.demo import served_modes_table
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.results.schema import REPORT_MD, Environment, ResultRow, ResultWriter

ENV = Environment(cpu_model="cpu", cpu_cores_logical=2, memory_gib=4.0, server_kind="embedded",
                  server_mode="graph+eager", git_commit="0123456789abcdef", versions={"tensorflow": "2.21.0"},
                  command="python -m benchmarks demo")
SERVED_P50 = {("embedded-graph", "grpc"): 0.5, ("embedded-graph", "rest"): 0.75,
              ("embedded-eager", "grpc"): 1.5, ("embedded-eager", "rest"): 1.8}


def _hist(ms: float, n: int = 50) -> LatencyHistogram:
    return LatencyHistogram.from_samples_ms([ms] * n)


def demo_rows() -> list[ResultRow]:
    """What a demo run writes: in-process modes (steady and first call), gRPC and REST closed-loop points in two
    server modes, and a LoadGen Server-scenario row with its verdict."""
    rows = []
    for mode, ms in (("eager", 1.6), ("graph", 0.4)):
        rows.append(ResultRow.from_histogram(_hist(ms), duration_s=1.0, kind="inprocess", model="m", mode=mode,
                                             batch_size=1, scenario="steady"))
        rows.append(ResultRow(kind="inprocess", model="m", mode=mode, batch_size=1, scenario="first_call",
                              p50_ms=ms * 100))
    for (server, kind), ms in SERVED_P50.items():
        rows.append(ResultRow.from_histogram(_hist(ms), duration_s=2.0, kind=kind, model="m", mode=server,
                                             batch_size=1, scenario="closed", concurrency=4, server=server,
                                             stable=True, serialize_ms=0.01))
    lg = ResultRow.from_histogram(_hist(1.2), duration_s=5.0, kind="grpc", model="m", mode="embedded-graph",
                                  batch_size=1, scenario="server", target_rate=100.0, server="embedded-graph")
    lg.achieved_rate, lg.extra = 99.5, {"loadgen": {"verdict": "INVALID"}}
    lg.warnings = ["LoadGen verdict INVALID: Early stopping satisfied=NO"]
    return rows + [lg]


@pytest.fixture
def fixed_run(tmp_path: Path) -> Path:
    w = ResultWriter(tmp_path / "fixed", ENV)
    for row in demo_rows():
        w.append(row)
    return tmp_path


def test_report_command_renders_every_table_from_the_stored_rows(fixed_run: Path, capsys):
    assert bench_main(["report", "fixed", "--results-dir", str(fixed_run)]) == 0
    run_dir = fixed_run / "fixed"
    assert capsys.readouterr().out.strip() == str(run_dir / REPORT_MD)
    lines = (run_dir / REPORT_MD).read_text().splitlines()
    assert lines[:6] == ["# Benchmark run fixed", "", "- machine: cpu · 2 logical cores · 4.0 GiB · GPU: none",
                         "- server: embedded (graph+eager) · git 0123456789", "- versions: tensorflow 2.21.0",
                         "- command: `python -m benchmarks demo`"]
    expected = [
        "| m | 1 | 1.6 | 0.4 | 4.0× | 160 / 40 |",  # eager vs graph, first calls
        "| embedded-eager | m | 1 | 4 | 1.5 | 1.8 | 1.5 | 1.8 | 25 | 25 | 1.20× | 0.01 | 0.01 |",
        "| embedded-graph | m | 1 | 4 | 0.5 | 0.75 | 0.5 | 0.75 | 25 | 25 | 1.50× | 0.01 | 0.01 |",
        "| grpc | embedded-graph | m | server | 1 | 100/s | 99.5 | 50 | 1.2 | 1.2 | 1.2 | 0 | INVALID |",
        "- grpc m embedded-graph b=1 server 100/s: LoadGen verdict INVALID: Early stopping satisfied=NO",
        "![inprocess_modes](inprocess_modes.png)", "![latency_vs_throughput](latency_vs_throughput.png)",
        "![latency_spectrum](latency_spectrum.png)"]
    assert [line for line in expected if line not in lines] == []
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## In-process: eager vs graph vs XLA (p50, ms)", "## In-process detail",
                        "## gRPC vs REST (closed loop)", "## Open loop (LoadGen) and Locust",
                        "## All served / load-test rows", "## Warnings", "## Plots"]
    for name in ("inprocess_modes.png", "latency_vs_throughput.png", "latency_spectrum.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_finds_the_latest_run_and_refuses_an_unknown_one(fixed_run: Path, capsys):
    assert bench_main(["report", "latest", "--results-dir", str(fixed_run)]) == 0
    assert capsys.readouterr().out.strip() == str(fixed_run / "fixed" / REPORT_MD)
    assert bench_main(["report", "no-such-run", "--results-dir", str(fixed_run)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: run 'no-such-run' not found (looked for a path and under "
                                               f"{fixed_run})")


def test_demo_puts_each_server_mode_side_by_side():
    lines = served_modes_table(demo_rows()).splitlines()
    assert lines == [
        "| kind | model | batch | conc | embedded-eager p50 ms | embedded-graph p50 ms | embedded-eager req/s "
        "| embedded-graph req/s |",
        "|---|---|---|---|---|---|---|---|",
        "| grpc | m | 1 | 4 | 1.5 | 0.5 | 25 | 25 |",
        "| rest | m | 1 | 4 | 1.8 | 0.75 | 25 | 25 |"]
    one_mode = [r for r in demo_rows() if r.server != "embedded-eager"]
    assert served_modes_table(one_mode) == ""  # nothing to put side by side
