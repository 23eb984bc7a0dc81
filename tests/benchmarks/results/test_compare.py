"""compare: a planted 20 % slowdown is a significant regression; two draws from one distribution and a
run compared with itself are not; planted shifts land in each of the verdicts (improvement, slower and
faster within the threshold, regression, too few samples)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.__main__ import main as cli
from benchmarks.results.compare import compare_samples, run_compare
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.results.schema import RESULTS_JSON, ResultRow, ResultWriter, capture_environment


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


def test_verdict_rule_on_fixed_intervals():
    from benchmarks.results.compare import verdict_for

    assert verdict_for(0.20, 0.15, 0.25, 0.05) == "regression"
    assert verdict_for(0.03, 0.01, 0.05, 0.05) == "slower (within threshold)"
    assert verdict_for(0.05, 0.01, 0.09, 0.05) == "slower (within threshold)"  # at the threshold is not beyond it
    assert verdict_for(-0.20, -0.25, -0.15, 0.05) == "improvement"
    assert verdict_for(-0.03, -0.05, -0.01, 0.05) == "faster (within threshold)"
    assert verdict_for(0.20, -0.01, 0.40, 0.05) == "no change"  # a large point change the interval does not carry
    assert verdict_for(0.0, 0.0, 0.0, 0.05) == "no change"


def test_each_verdict_from_planted_shifts(tmp_path):
    """Tight distributions (σ 5 %, 3000 samples: the median's interval is a few tenths of a percent wide), so a
    planted shift of ±20 % or ±2 % lands in exactly one verdict."""
    rng = np.random.default_rng(15)
    draw = lambda median, n=3000: rng.lognormal(np.log(median), 0.05, n)  # noqa: E731
    shifts = {1: 0.8, 2: 1.02, 4: 0.98, 8: 1.2, 16: 1.2}  # improvement, slower, faster, regression, too few
    base = {c: draw(2.0, 10 if c == 16 else 3000) for c in shifts}
    new = {c: draw(2.0 * s, 10 if c == 16 else 3000) for c, s in shifts.items()}
    code, text, cmps = run_compare(_run(tmp_path / "base", base), _run(tmp_path / "new", new), write=False)
    by_conc = {c.key["concurrency"]: c for c in cmps}
    assert {c: by_conc[c].verdict for c in shifts} == {
        1: "improvement", 2: "slower (within threshold)", 4: "faster (within threshold)", 8: "regression",
        16: "n/a (fewer than 20 samples)"}
    assert code == 1  # one regression is enough to fail
    assert by_conc[16].ci_low_pct is None and by_conc[16].n_base == 10
    for conc, shift in list(shifts.items())[:4]:  # 10 samples' p50 is too coarse to pin the change
        assert by_conc[conc].change_pct == pytest.approx((shift - 1) * 100, abs=1.0)
    lines = {line.split(" | ")[6]: line for line in text.splitlines() if line.startswith("| grpc |")}
    assert "| **REGRESSION** |" in lines["8"] and "| improvement |" in lines["1"]
    assert "| n/a (fewer than 20 samples) |" in lines["16"] and "| – | " in lines["16"]  # no interval


def test_unstable_rows_and_environment_changes_are_named(tmp_path):
    from benchmarks.results.compare import environment_differences

    rng = np.random.default_rng(16)
    s = {1: rng.lognormal(0.0, 0.05, 500)}
    b, n = _run(tmp_path / "b", s), _run(tmp_path / "n", s)
    doc = json.loads((n / RESULTS_JSON).read_text())
    doc["results"][0]["stable"] = False
    (n / RESULTS_JSON).write_text(json.dumps(doc))
    code, text, cmps = run_compare(b, n, write=False)
    assert code == 0 and cmps[0].verdict == "no change" and cmps[0].stable == "unstable in new"
    assert "Rows marked unstable never had 3 agreeing measurement windows" in text
    assert environment_differences({"cpu_model": "A", "versions": {"tensorflow": "2.21.0"}, "git_commit": "abc"},
                                   {"cpu_model": "B", "versions": {"tensorflow": "2.22.0"}, "git_commit": "abc"}) == [
        "cpu_model: 'A' -> 'B'", "tensorflow: 2.21.0 -> 2.22.0"]
