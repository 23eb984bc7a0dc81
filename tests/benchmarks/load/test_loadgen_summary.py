"""MLPerf LoadGen's summary log (mlperf_log_summary.txt), parsed offline: the verdict, each reason LoadGen
gives for INVALID, its percentiles and achieved rate, and the warning a served row carries for a run that
is not VALID. The texts are written in the format mlcommons-loadgen 6.0.17 writes; real LoadGen runs are
in tests/benchmarks/commands/test_served.py."""
from __future__ import annotations

import pytest

from benchmarks.requests.payloads import build_payload
from benchmarks.commands import served
from benchmarks.load.loadgen import LoadGenResult, _achieved_qps, _loadgen_percentiles, parse_summary
from benchmarks.measure.cpu_meter import CpuReading
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.recorder import Window

RULE = "=" * 48
SATISFIED = ("Performance constraints satisfied", "Min duration satisfied", "Min queries satisfied")


def summary_text(scenario: str, rate_line: str, failing: set[str], recommendations: list[str],
                 early_stopping: list[str]) -> str:
    """A summary log as LoadGen writes it; `failing` names the constraints that say NO."""
    checks = [k for k in SATISFIED if scenario == "Server" or not k.startswith("Performance")]
    verdict = "INVALID" if failing else "VALID"
    lines = [RULE, "MLPerf Results Summary", RULE, "SUT name : PySUT", f"Scenario : {scenario}",
             "Mode     : PerformanceOnly", rate_line, f"Result is : {verdict}"]
    lines += [f"  {k} : {'NO' if k in failing else 'Yes'}" for k in checks]
    lines.append(f"  Early stopping satisfied: {'NO' if 'Early stopping satisfied' in failing else 'Yes'}")
    if recommendations:
        lines += ["Recommendations:"] + [f" * {r}" for r in recommendations]
    lines += ["Early Stopping Result:"] + [f" * {e}" for e in early_stopping]
    lines += ["", RULE, "Additional Stats", RULE, "Scheduled samples per second : 250.40",
              "Min latency (ns)                : 180250", "Max latency (ns)                : 41200500",
              "Mean latency (ns)               : 1250000", "50.00 percentile latency (ns)   : 512000",
              "90.00 percentile latency (ns)   : 2048000", "95.00 percentile latency (ns)   : 4096000",
              "97.00 percentile latency (ns)   : 8192000", "99.00 percentile latency (ns)   : 16384000",
              "99.90 percentile latency (ns)   : 32768000", "", RULE, "Test Parameters Used", RULE,
              "samples_per_query : 1", "target_qps : 250", "target_latency (ns): 100000000",
              "min_duration (ms): 1000", "min_query_count : 10", "performance_sample_count : 16", "",
              "No warnings encountered during test.", "", "No errors encountered during test."]
    return "\n".join(lines) + "\n"


VALID_SERVER = summary_text("Server", "Completed samples per second    : 249.85", set(), [],
                            ["Run successful."])
# INVALID for each reason LoadGen checks, with the recommendation it prints for it
INVALID = {
    "Performance constraints satisfied": summary_text(
        "Server", "Completed samples per second    : 249.10",
        {"Performance constraints satisfied", "Early stopping satisfied"},
        ["Reduce target QPS to improve latency."],
        ["Run unsuccessful.", "Processed 260 queries.", "Would need to run at least 7307 more queries,"]),
    "Min duration satisfied": summary_text(
        "Offline", "Samples per second: 797850", {"Min duration satisfied"},
        ["Increase expected QPS so the loadgen pre-generates a larger (coalesced) query."], []),
    "Min queries satisfied": summary_text(
        "SingleStream", "90.0th percentile latency (ns) : 155962", {"Min duration satisfied", "Min queries satisfied"},
        ["Decrease the expected latency so the loadgen pre-generates more queries.",
         "The test exited early, before enough queries were issued."],
        ["Processed at least 64 queries (1109).", "Would discard 86 highest latency queries."]),
    "Early stopping satisfied": summary_text(
        "Server", "Completed samples per second    : 101.42", {"Early stopping satisfied"}, [],
        ["Run unsuccessful.", "Processed 54 queries.", "Would need to run at least 405 more queries,"]),
}


def test_valid_server_summary():
    s = parse_summary(VALID_SERVER)
    assert s["Result is"] == "VALID" and s["Scenario"] == "Server" and s["SUT name"] == "PySUT"
    assert [s[k] for k in SATISFIED] == ["Yes", "Yes", "Yes"] and s["Early stopping satisfied"] == "Yes"
    assert s["target_latency (ns)"] == "100000000" and s["min_query_count"] == "10"
    assert not any(k.startswith("=") or k.startswith("MLPerf") for k in s)
    assert "Early Stopping Result" not in s and "Recommendations" not in s  # headings without a value
    assert _achieved_qps(s) == 249.85  # completed, not scheduled (250.40)
    assert _loadgen_percentiles(s) == {"min": 0.18025, "max": 41.2005, "mean": 1.25, "p50.00": 0.512,
                                       "p90.00": 2.048, "p95.00": 4.096, "p97.00": 8.192, "p99.00": 16.384,
                                       "p99.90": 32.768}


@pytest.mark.parametrize("reason", sorted(INVALID))
def test_invalid_summary_names_its_reason(reason):
    s = parse_summary(INVALID[reason])
    assert s["Result is"] == "INVALID"
    assert s[reason] == "NO"
    said_no = {k for k, v in s.items() if k.endswith("satisfied") and v == "NO"}
    assert said_no == {"Performance constraints satisfied": {reason, "Early stopping satisfied"},
                       "Min queries satisfied": {reason, "Min duration satisfied"}}.get(reason, {reason})


def test_achieved_rate_per_scenario():
    assert _achieved_qps(parse_summary(INVALID["Min duration satisfied"])) == 797850.0  # Offline
    assert _achieved_qps(parse_summary(INVALID["Early stopping satisfied"])) == 101.42  # Server
    # SingleStream prints no samples-per-second line: it has no rate; Scheduled... is in Additional Stats
    single = parse_summary(INVALID["Min queries satisfied"].replace("Scheduled samples per second : 250.40\n", ""))
    assert _achieved_qps(single) is None
    assert _achieved_qps({}) is None and _achieved_qps({"Samples per second": "n/a"}) is None


def _loadgen_row(monkeypatch, tmp_path, text: str, qps: float = 250.0, completed: int = 499, seconds: float = 2.0):
    """served's LoadGen row for a run whose summary log is `text` (LoadGen itself not run) and whose measured
    window holds `completed` answers over `seconds` (the span of LoadGen's test)."""
    summary = parse_summary(text)
    hist = LatencyHistogram()
    for i in range(completed):
        hist.record_us((400, 500, 600)[i % 3])
    window = Window(0, 0.0, seconds, hist, {}, ok=completed, sum_ns=500_000 * completed)
    cpu = CpuReading(wall_s=seconds, process_s=0.1, thread_s=0.05, pids_s=0.0, machine_busy_s=0.3)  # far from saturated

    def fake_run(transport_factory, payloads, cfg, out_dir):
        return LoadGenResult(cfg.scenario, summary.get("Result is", "UNKNOWN"), summary, out_dir / "s.txt", window,
                             cpu, completed, _loadgen_percentiles(summary), _achieved_qps(summary))

    monkeypatch.setattr(served, "run_loadgen", fake_run)
    cfg = served.ServedConfig(kind="grpc", target="127.0.0.1:1", models=[("m", 4)], loadgen_dir=tmp_path)
    p = build_payload("m", 1, 4)
    common = dict(kind="grpc", model="m", mode="noop", batch_size=1, server="noop", target=cfg.target)
    return served._loadgen_point(cfg, p, [p.grpc_bytes], "server", qps, common, None)


def test_served_row_of_a_valid_run_has_no_verdict_warning(monkeypatch, tmp_path):
    row = _loadgen_row(monkeypatch, tmp_path, VALID_SERVER)
    assert row.extra["loadgen"]["verdict"] == "VALID" and row.warnings == []
    # one req/s per row: ours (499 answers over the 2 s test); LoadGen's own figure stays in extra
    assert row.achieved_rate == row.throughput_rps == 249.5 and row.target_rate == 250.0 and row.n == 499
    assert row.extra["loadgen"]["achieved_qps"] == 249.85 and row.extra["loadgen"]["issued"] == 499
    assert row.extra["loadgen"]["percentiles_ms"]["p99.00"] == 16.384


def test_served_row_of_an_invalid_run_warns_with_every_constraint(monkeypatch, tmp_path):
    row = _loadgen_row(monkeypatch, tmp_path, INVALID["Performance constraints satisfied"])
    assert row.extra["loadgen"]["verdict"] == "INVALID"
    assert row.extra["loadgen"]["constraints"] == {
        "Performance constraints satisfied": "NO", "Min duration satisfied": "Yes",
        "Min queries satisfied": "Yes", "Early stopping satisfied": "NO"}
    assert row.warnings == ["LoadGen verdict INVALID: Performance constraints satisfied=NO, Min duration "
                            "satisfied=Yes, Min queries satisfied=Yes, Early stopping satisfied=NO"]


def test_served_row_warns_when_the_achieved_rate_falls_short(monkeypatch, tmp_path):
    # LoadGen says 101.42/s; the warning gives the row's own rate (196 answers over 2 s), as its req/s column does
    row = _loadgen_row(monkeypatch, tmp_path, INVALID["Early stopping satisfied"], qps=200.0, completed=196)
    assert row.warnings[-1] == "achieved 98.0/s of target 200/s"
    assert row.warnings[0].startswith("LoadGen verdict INVALID: ") and "Early stopping satisfied=NO" in row.warnings[0]
    assert len(row.warnings) == 2


def test_served_row_at_thousands_per_second_warns_in_the_reports_number_format(monkeypatch, tmp_path):
    row = _loadgen_row(monkeypatch, tmp_path, VALID_SERVER, qps=2000.0, completed=3000, seconds=2.0)
    assert row.warnings == ["achieved 1,500/s of target 2000/s"]  # not 1.5e+03
    row = _loadgen_row(monkeypatch, tmp_path, VALID_SERVER, qps=2000.0, completed=3600, seconds=2.0)
    assert row.warnings == []  # 1,800/s: within 90 % of the target
