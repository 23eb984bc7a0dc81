"""compare: a planted 20 % slowdown is a significant regression; two draws from one distribution and a
run compared with itself are not."""
from __future__ import annotations

import numpy as np

from benchmarks.__main__ import main as cli
from benchmarks.results.compare import compare_samples, run_compare
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.results.schema import ResultRow, ResultWriter, capture_environment


def _run(path, samples_by_conc: dict[int, np.ndarray], client: str = ""):
    w = ResultWriter(path, capture_environment(server_kind="synthetic"))
    for conc, s in samples_by_conc.items():
        w.append(ResultRow.from_histogram(LatencyHistogram.from_samples_ms(s), duration_s=10.0, kind="grpc",
                                          model="m", mode="graph", batch_size=1, scenario="closed",
                                          concurrency=conc, server="synthetic", client=client))
    return path


def test_planted_slowdown_is_a_significant_regression():
    rng = np.random.default_rng(11)
    base = rng.lognormal(np.log(2.0), 0.4, 6000)
    slow = rng.lognormal(np.log(2.0 * 1.2), 0.4, 6000)
    verdict, change, lo, hi = compare_samples(base, slow, threshold=0.05)
    assert verdict == "regression"
    assert 0.15 < change < 0.25 and lo > 0.05


def test_same_distribution_is_no_change():
    rng = np.random.default_rng(12)
    a = rng.lognormal(np.log(2.0), 0.4, 6000)
    b = rng.lognormal(np.log(2.0), 0.4, 6000)
    verdict, change, lo, hi = compare_samples(a, b, threshold=0.05)
    assert verdict == "no change"
    assert lo <= 0 <= hi and abs(change) < 0.05


def test_compare_cli_flags_regression_and_self_compare_is_clean(tmp_path, capsys):
    rng = np.random.default_rng(13)
    base = {1: rng.lognormal(np.log(1.0), 0.3, 3000), 8: rng.lognormal(np.log(4.0), 0.3, 3000)}
    new = {1: rng.lognormal(np.log(1.0), 0.3, 3000),  # unchanged
           8: rng.lognormal(np.log(4.0 * 1.2), 0.3, 3000)}  # planted 20 % slowdown
    b = _run(tmp_path / "base", base)
    n = _run(tmp_path / "new", new)

    code, text, cmps = run_compare(b, n)
    assert code == 1
    by_conc = {c.key["concurrency"]: c for c in cmps}
    assert by_conc[8].verdict == "regression" and by_conc[8].change_pct > 10
    assert by_conc[1].verdict != "regression"
    assert "REGRESSION" in text
    assert (n / "compare-vs-base.md").exists()

    # a run compared with itself: exactly zero change everywhere, exit status 0
    code, text, cmps = run_compare(b, b, write=False)
    assert code == 0 and len(cmps) == 2
    assert all(c.verdict == "no change" and c.change_pct == 0.0 for c in cmps)

    # the CLI: exit status follows the verdict; run ids resolve under --results-dir
    assert cli(["compare", "base", "new", "--results-dir", str(tmp_path)]) == 1
    assert cli(["compare", "base", "base", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no significant regression" in out


def test_runs_sharing_no_row_exit_2_and_say_which_field_differs(tmp_path, capsys):
    rng = np.random.default_rng(14)
    samples = {1: rng.lognormal(0.0, 0.3, 2000)}
    _run(tmp_path / "aio", samples, client="grpc.aio")
    _run(tmp_path / "curl", samples, client="libcurl")
    code, text, cmps = run_compare(tmp_path / "aio", tmp_path / "curl", write=False)
    assert code == 2 and cmps == []
    assert "No comparable rows" in text and "--ignore client" in text
    assert cli(["compare", "aio", "curl", "--results-dir", str(tmp_path)]) == 2
    assert "nothing compared" in capsys.readouterr().out
    # ignoring the differing field makes them comparable again (the same samples: no change)
    assert cli(["compare", "aio", "curl", "--results-dir", str(tmp_path), "--ignore", "client"]) == 0
