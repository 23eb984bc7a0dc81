"""The cross-check: its missing-tool message (wrk's output is read in test_wrk.py) and the one-row-per-point
table built from planted rows. No load is generated and no time is asserted."""
from __future__ import annotations

import math

import pytest

from benchmarks.__main__ import main as bench_main
from benchmarks.measure import wrk_tool
from benchmarks.results.crosscheck import crosscheck_table, summarise
from benchmarks.results.schema import ResultRow


def test_missing_wrk_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(wrk_tool.shutil, "which", lambda name: None)
    with pytest.raises(wrk_tool.WrkMissing) as err:
        wrk_tool.find()
    assert "wrk not found" in str(err.value) and "apt-get install -y wrk" in str(err.value)


def test_crosscheck_without_wrk_exits_2_before_any_run_directory(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(wrk_tool.shutil, "which", lambda name: None)
    code = bench_main(["perf-analyzer", "--apis", "rest", "--rest-target", "127.0.0.1:1", "--models", "m",
                       "--results-dir", str(tmp_path)])
    assert code == 2
    assert "apt-get install -y wrk" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def _row(kind: str, client: str, p50: float, rps: float, repeat: int, batch: int = 1, conc: int = 1,
         stable: bool = True) -> ResultRow:
    row = ResultRow(kind=kind, model="m", mode="embedded-graph", batch_size=batch, concurrency=conc, client=client,
                    p50_ms=p50, throughput_rps=rps, stable=stable)
    row.extra["repeat"] = repeat
    return row


def test_one_table_row_per_point_with_median_ratios_and_the_bounds() -> None:
    rows = []
    for rep, (ours, theirs) in enumerate([(1.10, 1.00), (1.00, 1.00), (1.30, 1.00)], start=1):
        rows += [_row("grpc", "perf_analyzer", theirs, 1000, rep), _row("grpc", "libcurl", ours, 950, rep)]
        rows += [_row("rest", "wrk", 0.5, 2000, rep), _row("rest", "asyncio-http1", 0.52, 1700, rep)]
        rows[-1].extra["calls"] = "sync"  # our REST client's blocking calls at one stream; the gRPC rows say none
    rows.append(_row("inprocess", "", 0.4, math.nan, 1))
    rows[-1].scenario = "steady"
    points = {(p.api, p.batch, p.concurrency): p for p in summarise(rows)}
    assert set(points) == {("grpc", 1, 1), ("rest", 1, 1)}
    grpc, rest = points[("grpc", 1, 1)], points[("rest", 1, 1)]
    assert (grpc.pairs, grpc.stable_pairs) == (3, 3)
    assert grpc.p50_ratio == pytest.approx(1.10) and grpc.rps_ratio == pytest.approx(0.95) and grpc.within
    assert rest.p50_ratio == pytest.approx(1.04) and rest.rps_ratio == pytest.approx(0.85) and not rest.within
    assert (grpc.calls, rest.calls) == ("async", "sync")
    text = crosscheck_table(rows, "embedded-graph")
    assert "| rest | 1 | 1 | asyncio-http1 | sync | wrk |" in text and "| libcurl | async | perf_analyzer |" in text
    assert "1 of 2 points within both bounds" in text
    assert "= **2.50×**" in text  # perf_analyzer's p50 1.0 ÷ the in-process 0.4
    assert "the embedded server's own ratio" in text and "NOT TF Serving's" in text


def test_unstable_pairs_are_left_out_of_the_median_when_stable_ones_exist() -> None:
    rows = [_row("grpc", "perf_analyzer", 1.0, 1000, 1), _row("grpc", "libcurl", 1.0, 1000, 1),
            _row("grpc", "perf_analyzer", 1.0, 1000, 2, stable=False), _row("grpc", "libcurl", 3.0, 300, 2)]
    (point,) = summarise(rows)
    assert (point.pairs, point.stable_pairs, point.p50_ratio) == (2, 1, 1.0)
