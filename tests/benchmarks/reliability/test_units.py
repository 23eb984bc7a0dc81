"""Reliability pieces that need no server: fault writers, sentinels, memory statistics, answer checks, report."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.reliability import faults
from benchmarks.reliability.hostile import (GrpcCase, RestCase, Tally, check_grpc_answer, check_rest_answer,
                                            grpc_case_is_valid, oversized_case)
from benchmarks.reliability.memory import MemoryStats
from benchmarks.reliability.summary import FaultLine, ReliabilityReport, load_report, render_markdown, write_report


def _fake_version(d: Path) -> Path:
    """A stand-in version dir with the files a SavedModel has (content does not matter to the writers)."""
    (d / "variables").mkdir(parents=True)
    (d / "saved_model.pb").write_bytes(b"\x08\x01" * 500)
    (d / "variables" / "variables.data-00000-of-00001").write_bytes(b"w" * 4000)
    (d / "variables" / "variables.index").write_bytes(b"i" * 100)
    return d


@pytest.mark.parametrize("kind", sorted(faults.BROKEN_KINDS))
def test_broken_version_writers_produce_the_named_fault(tmp_path: Path, kind: str) -> None:
    model = tmp_path / "m"
    good = _fake_version(model / "1")
    b = faults.write_broken_version(model, kind)
    assert b.version == 2 and b.path == model / "2" and b.path.is_dir()
    assert not list(model.glob(".broken-*")), "staging dir left behind"
    pb, var = b.path / "saved_model.pb", b.path / "variables"
    full = (good / "saved_model.pb").stat().st_size
    if kind == "truncated_pb":
        assert 0 < pb.stat().st_size < full and var.is_dir()
    elif kind == "missing_variables":
        assert pb.stat().st_size == full and not var.exists()
    elif kind == "garbage_pb":
        assert pb.read_bytes()[:1] == b"\xff"
    elif kind == "empty_dir":
        assert not any(b.path.iterdir())
    elif kind == "half_written":
        assert pb.stat().st_size == full // 3 and not var.exists()
    elif kind == "truncated_variables":
        assert (var / "variables.data-00000-of-00001").stat().st_size == 1000
    assert (good / "saved_model.pb").stat().st_size == full, "the healthy version must not be touched"


def test_broken_writer_refuses_to_overwrite_and_unknown_kind(tmp_path: Path) -> None:
    model = tmp_path / "m"
    _fake_version(model / "1")
    with pytest.raises(FileExistsError):
        faults.write_broken_version(model, "empty_dir", version=1)
    with pytest.raises(ValueError, match="unknown broken-version kind"):
        faults.write_broken_version(model, "melted")


def test_sentinel_sees_creation_and_changes(tmp_path: Path) -> None:
    good = _fake_version(tmp_path / "src" / "1")
    s = faults.make_sentinel(tmp_path / "outside", good)
    assert (s.bait_model / "1" / "saved_model.pb").is_file()
    before = s.snapshot()
    assert s.created() == []
    s.must_not_exist[0].mkdir()
    assert s.created() == [s.must_not_exist[0]]
    assert s.snapshot() != before


def test_memory_growth_uses_medians_after_warmup() -> None:
    m = MemoryStats(samples=[(0.0, 50 * 2**20)] + [(1.0 + i, (100 + (i // 10)) * 2**20) for i in range(40)],
                    warmup_s=1.0)
    assert m.start_mib == 100 and m.end_mib == 103  # warm-up sample (50) ignored
    assert m.growth_pct == pytest.approx(3.0)
    assert math.isnan(MemoryStats().growth_pct)


def test_rest_answer_checks() -> None:
    bad = RestCase("wrong_types", b'{"instances": "x"}')
    assert check_rest_answer(bad, 400, b'{"error": "Expecting \'instances\' to be an list/array"}') is None
    assert "server error" in check_rest_answer(bad, 500, b'{"error": "boom"}')
    assert "accepted" in check_rest_answer(bad, 200, b'{"predictions": [[1]]}')
    assert "not JSON" in check_rest_answer(bad, 400, b"<html>")
    assert "no 'error'" in check_rest_answer(bad, 400, b'{"message": "x"}')
    assert check_rest_answer(RestCase("nan_infinity", b"{}", valid=True), 200, b"{}") is None
    assert check_rest_answer(RestCase("huge_numbers", b"{}", valid=None), 200, b"{}") is None
    assert check_rest_answer(RestCase("huge_numbers", b"{}", valid=None), 400, b'{"error": "range"}') is None
    big = oversized_case(1 << 20)
    assert len(big.body) > 1 << 20
    assert "413" in check_rest_answer(big, 400, b'{"error": "x"}')


def test_grpc_validity_model() -> None:
    from benchmarks.requests import protos

    p = protos.load()
    t = protos.get("types_pb2")
    req = p["predict_pb2"].PredictRequest()
    x = req.inputs["inputs"]
    x.dtype = t.DT_FLOAT
    x.tensor_shape.dim.add().size = 2
    x.tensor_shape.dim.add().size = 10
    x.tensor_content = bytes(80)
    assert grpc_case_is_valid(req) == (True, 2)
    assert grpc_case_is_valid(req, max_elements=10) == (False, 0)
    x.tensor_content = bytes(79)
    assert grpc_case_is_valid(req)[0] is False
    x.tensor_content = b""
    x.float_val.append(1.0)  # a single value fills the shape (TF's rule)
    assert grpc_case_is_valid(req) == (True, 2)
    x.dtype = t.DT_DOUBLE
    assert grpc_case_is_valid(req)[0] is False
    case = GrpcCase("dtype", req)
    assert check_grpc_answer(case, "INVALID_ARGUMENT", None) is None
    assert "expected INVALID_ARGUMENT" in check_grpc_answer(case, "INTERNAL", None)


def test_tally_counts_every_failure_but_keeps_few_examples() -> None:
    t = Tally()
    for i in range(12):
        t.add("rest:x", "bad" if i % 2 else None, i)
    assert t.total == 12 and t.failed == 6 and len(t.problems["rest:x"]) == 5
    t.merge(Tally(tried={"grpc:y": 3}, failures={"grpc:y": 1}, problems={"grpc:y": ["p"]}))
    assert t.total == 15 and t.failed == 7


def test_report_verdict_files_and_table(tmp_path: Path) -> None:
    r = ReliabilityReport("run-1", settings={"soak_seconds": 5})
    r.faults.append(FaultLine("rollout", "export v3", True, 1000, 0, "switch-over 1.2s"))
    r.load_held.append({"phase": "rollout", "rps": 500.0, "seconds": 2.0, "requests": 1000, "failed": 0})
    r.hostile = {"tried": {"rest:mutated": 10}, "failures": {}, "total": 10, "failed": 0, "valid_after": {"rest": None}}
    r.memory["soak"] = {"start_mib": 100.0, "end_mib": 101.0, "peak_mib": 102.0, "growth_pct": 1.0}
    assert r.passed and r.requests_lost == 0
    j, m = write_report(r, tmp_path / "run-1")
    doc = load_report(j.parent)
    assert doc["summary"] == {"requests_lost": 0, "faults_survived": 1, "faults_injected": 1,
                              "hostile_wrong_answers": 0, "hostile_tried": 10, "passed": True}
    text = m.read_text()
    for needle in ("Verdict: PASS", "| rollout | 500 |", "rest:mutated", "growth %"):
        assert needle in text
    r.faults.append(FaultLine("soak", "x", False, 10, 3, "errors"))
    r.phases["soak"] = {"p50": float("nan")}
    assert not r.passed and r.requests_lost == 3
    assert "Verdict: FAIL" in render_markdown(r)
    write_report(r, tmp_path / "run-1")
    assert json.loads((tmp_path / "run-1" / "reliability.json").read_text())["phases"]["soak"]["p50"] is None


def test_cli_help_and_missing_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["reliability", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--soak-seconds" in out and "--quick" in out
    assert main(["reliability", "--models-dir", str(tmp_path), "--results-dir", str(tmp_path / "r")]) == 2
    assert "export the models first" in capsys.readouterr().err


def test_soak_latency_stability_rule_on_planted_windows() -> None:
    from benchmarks.reliability.scenarios import SoakResult

    def soak(first_p50: float, first_p99: float, last_p50: float, last_p99: float) -> SoakResult:
        def end(p50: float, p99: float) -> dict:
            return {"n": 100, "median_window_p50_ms": p50, "median_window_p99_ms": p99}

        return SoakResult(100.0, 200.0, 60.0, {"failed": 0, "unaccounted": 0}, {}, end(first_p50, first_p99),
                          end(last_p50, last_p99), [])

    assert soak(2.0, 8.0, 2.5, 9.0).latency_stable()
    assert not soak(2.0, 8.0, 2.0, 40.0).latency_stable()  # p99 drifted 5x: a growing queue or a leak
    assert not soak(2.0, 8.0, 12.0, 20.0).latency_stable()  # p50 drifted
    assert soak(0.2, 0.5, 3.0, 5.0).latency_stable(slack_ms=5.0)  # sub-ms noise is inside the slack


def test_scratch_tree_fills_the_policy_window_so_a_rollout_must_unload(tmp_path: Path) -> None:
    from export.model_config import read_model_config

    src = tmp_path / "src"
    _fake_version(src / "residual_regressor" / "1")  # a fresh `make export`: one version only
    dst = faults.make_scratch_models(src, tmp_path / "dst", versions=2)
    model = dst / "residual_regressor"
    assert faults.list_versions(model) == [1, 2]
    assert (model / "2" / "saved_model.pb").read_bytes() == (src / "residual_regressor/1/saved_model.pb").read_bytes()
    assert not list(model.glob(".copy-*"))
    (entry,) = read_model_config(dst / "models.config").model_config_list.config
    assert entry.model_version_policy.latest.num_versions == 2 and dict(entry.version_labels) == {"stable": 1, "canary": 2}
    # With three exported versions only the newest two are copied, numbers kept
    _fake_version(src / "residual_regressor" / "2")
    _fake_version(src / "residual_regressor" / "3")
    again = faults.make_scratch_models(src, tmp_path / "dst2", versions=2)
    assert faults.list_versions(again / "residual_regressor") == [2, 3]
