"""`python -m benchmarks report` and the demo's tables on a run of fixed rows: every figure in the report
is known in advance (latencies below 2.048 ms are exact in the HdrHistogram at 3 significant digits) and
printed in the reports' one number format (3 significant figures, thousands separators)."""
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
    # a LoadGen row has one req/s, ours (50 answers over its 0.5 s test); LoadGen's own figure stays in extra
    lg = ResultRow.from_histogram(_hist(1.2), duration_s=0.5, kind="grpc", model="m", mode="embedded-graph",
                                  batch_size=1, scenario="server", target_rate=100.0, server="embedded-graph")
    lg.achieved_rate, lg.extra = lg.throughput_rps, {"loadgen": {"verdict": "INVALID", "achieved_qps": 99.5}}
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
    # findings first, computed from the rows: 50 answers in 2 s is 25.0 req/s at every closed point, so every
    # ratio is 1.00×; gRPC and REST tie on rows/s, and the first of the tie (gRPC) is the best point
    assert lines[:19] == [
        "# Benchmark run fixed", "", "## Findings", "",
        "- served graph ÷ eager, gRPC, batch 1: 1.00× (25.0 vs 25.0 req/s at 4 / 4 streams)",
        "- served graph ÷ eager, REST, batch 1: 1.00× (25.0 vs 25.0 req/s at 4 / 4 streams)",
        "- gRPC ÷ REST on embedded-eager (the embedded server's APIs, not TF Serving's), batch 1: "
        "1.00× (25.0 vs 25.0 req/s at 4 / 4 streams)",
        "- gRPC ÷ REST on embedded-graph (the embedded server's APIs, not TF Serving's), batch 1: "
        "1.00× (25.0 vs 25.0 req/s at 4 / 4 streams)",
        "- best point with p99 ≤ 100 ms on embedded-eager: gRPC m batch 1 at 4 streams, 25.0 rows/s (25.0 req/s), "
        "p99 1.50 ms",
        "- best point with p99 ≤ 100 ms on embedded-graph: gRPC m batch 1 at 4 streams, 25.0 rows/s (25.0 req/s), "
        "p99 0.500 ms",
        "- gRPC embedded-graph m batch 1, LoadGen server 100/s: LoadGen verdict INVALID: Early stopping satisfied=NO",
        "", "## Run", "", "- machine: cpu · 2 logical cores · 4.0 GiB · GPU: none",
        "- server: embedded (graph+eager) · git 0123456789", "- versions: tensorflow 2.21.0",
        "- command: `python -m benchmarks demo`", ""]
    expected = [
        "| m | 1 | 1.60 | 0.400 | 4.00× | 160 / 40.0 |",  # eager vs graph, first calls
        "| embedded-eager | m | 1 | 4 | 1.50 | 1.80 | 1.50 | 1.80 | 25.0 | 25.0 | 1.20× | 0.0100 | 0.0100 |",
        "| embedded-graph | m | 1 | 4 | 0.500 | 0.750 | 0.500 | 0.750 | 25.0 | 25.0 | 1.50× | 0.0100 | 0.0100 |",
        "| grpc | embedded-graph | m | server | 1 | 100/s | 100 | 50 | 1.20 | 1.20 | 1.20 | 0 | INVALID |",
        "| grpc |  | embedded-graph | m | server | 1 | 100/s | 50 | 1.20 | 1.20 | 1.20 | 1.20 | 1.20 | 100 | 0 | – "
        "| INVALID | – | – | – |",
        "- gRPC embedded-graph m batch 1, LoadGen server 100/s: LoadGen verdict INVALID: Early stopping satisfied=NO",
        "![inprocess_modes](inprocess_modes.png)", "![latency_vs_throughput](latency_vs_throughput.png)",
        "![latency_spectrum](latency_spectrum.png)"]
    assert [line for line in expected if line not in lines] == []
    assert "99.5" not in "\n".join(lines)  # LoadGen's own rate: one req/s per point in every table
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## Findings", "## Run", "## In-process: eager vs graph vs XLA (p50, ms)", "## In-process detail",
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
        "| grpc | m | 1 | 4 | 1.50 | 0.500 | 25.0 | 25.0 |",
        "| rest | m | 1 | 4 | 1.80 | 0.750 | 25.0 | 25.0 |"]
    one_mode = [r for r in demo_rows() if r.server != "embedded-eager"]
    assert served_modes_table(one_mode) == ""  # nothing to put side by side
