"""Locust with its master and workers as separate process groups that meet only through --master-host, as they
would on separate machines, against the Python no-op server (whose REST process exposes TF Serving's request
counter). One run must reconcile: the master's count = the sum over workers = Locust's stats = the server's
counter. In another, one worker is killed (SIGKILL, no goodbye) mid-run: the report must name it and the
server's surplus (what it sent after its last report) must show as a gap."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.measure import prometheus
from benchmarks.load.locust_run import LOCUSTFILE
from benchmarks.results.schema import RESULTS_JSON
from benchmarks.targets.managed import REPO_ROOT, ManagedServer, free_port
from export.contract import REQUEST_COUNT

ROOT = REPO_ROOT  # not a path counted up from this file: the file moved once and parents[2] became tests/
MODEL = "m"


# The no-op server answers each Predict after this long. The tests are about counting and losing workers, not
# speed: without it the 4 closed-loop users kept both workers and the server at full speed through both runs (41 CPU
# s for this file on a 2-core machine, 14 with it), and a master short of CPU is slower to hear heartbeats. With it
# each user still sends ~80 req/s.
DELAY_MS = 10.0


@pytest.fixture(scope="module")
def noop():
    with ManagedServer("noop", delay_ms=DELAY_MS) as srv:
        yield srv


def _group(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)


def _stop_groups(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def _distributed_run(noop, tmp_path: Path, run_id: str, run_time: str, kill_second_worker_after_s: float | None):
    """A master (`python -m benchmarks locust --master`), one worker through our CLI and one through Locust's own
    `locust -f ... --worker`: three process groups, REST, 4 users. -> (master exit code, row, worker pids)."""
    port = free_port()
    master = _group([sys.executable, "-m", "benchmarks", "locust", "--master", "--bind", f"127.0.0.1:{port}",
                     "--expect-workers", "2", "--expect-workers-max-wait", "60", "--server", "none",
                     "--target", noop.grpc_target, "--rest-target", noop.rest_target,
                     "--metrics-url", noop.metrics_url, "--model", MODEL, "--n-features", "4", "--transports", "rest",
                     "--users", "4", "--spawn-rate", "8", "--run-time", run_time, "--results-dir", str(tmp_path),
                     "--run-id", run_id, "--no-progress"], tmp_path / "master.log")
    workers = [_group([sys.executable, "-m", "benchmarks", "locust", "--worker", "--master-host", f"127.0.0.1:{port}"],
                      tmp_path / "worker0.log"),
               _group([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1",
                       "--master-port", str(port)], tmp_path / "worker1.log")]
    try:
        if kill_second_worker_after_s is not None:
            _wait_for_load(noop, master, tmp_path / "master.log", timeout_s=90)
            time.sleep(kill_second_worker_after_s)
            os.killpg(workers[1].pid, signal.SIGKILL)  # no quit message, no last report: a crash
        rc = master.wait(timeout=180)
        assert rc == 0, f"master exit {rc}:\n" + (tmp_path / "master.log").read_text()[-3000:]
        for w in workers:  # the master's quit message stops them (the killed one is gone already)
            w.wait(timeout=30)
    finally:
        _stop_groups([master, *workers])
    rows = json.loads((tmp_path / run_id / RESULTS_JSON).read_text())["results"]
    assert len(rows) == 1, (tmp_path / "master.log").read_text()[-3000:]
    return rows[0], [w.pid for w in workers]


def _wait_for_load(noop, master: subprocess.Popen, master_log: Path, timeout_s: float) -> None:
    """Until the server's counter shows the run's requests (both workers connected, users spawned)."""
    start = prometheus.scrape(noop.metrics_url).total(REQUEST_COUNT, model_name=MODEL)
    deadline = time.time() + timeout_s
    while time.time() < deadline and master.poll() is None:
        if prometheus.scrape(noop.metrics_url).total(REQUEST_COUNT, model_name=MODEL) > start + 50:
            return
        time.sleep(0.2)
    if master.poll() is not None:
        raise AssertionError(f"the master exited ({master.returncode}) before the load started:\n"
                             + master_log.read_text(errors="replace")[-3000:])
    raise AssertionError(f"the load never started in {timeout_s:.0f} s")


@pytest.mark.timeout(240)
def test_master_and_two_workers_in_separate_process_groups_reconcile_their_counts(noop, tmp_path):
    row, pids = _distributed_run(noop, tmp_path, "dist", "4s", None)
    counts = row["extra"]["request_counts"]
    assert row["errors"] == 0 and row["n"] > 0, row["warnings"]
    assert counts == {"master": row["n"], "locust_stats": row["n"], "workers_sum": row["n"], "server": row["n"]}, (
        counts, row["warnings"])
    assert row["extra"]["request_count_gaps"] == {}
    workers = {w["pid"]: w for w in row["extra"]["worker_stats"]}
    assert set(workers) == set(pids)  # each worker named by its own pid, on this host
    for w in workers.values():
        assert w["host"] == socket.gethostname() and w["requests"]["rest"] > 0 and w["lost_at_s"] is None, w
        # CPU measured on the worker over the test, sent to the master with its reports
        assert w["cpu_percent"] > 0 and isinstance(w["saturated"], bool), w
    assert sum(w["requests"]["rest"] for w in workers.values()) == row["n"]
    assert max(i["workers"] for i in row["extra"]["sending_intervals"]) == 2, row["extra"]["sending_intervals"]
    assert not [x for x in row["warnings"] if "lost" in x or "differ" in x], row["warnings"]


@pytest.mark.timeout(240)
def test_a_worker_killed_mid_run_is_named_in_the_report(noop, tmp_path):
    # The kill waits for the load, then 5 s: over one worker report interval (Locust's 3 s), so the master has a
    # report from the doomed worker (its pid, its requests). The master then names it missing once 3 heartbeats
    # (1 s apart) have not come, ~4 s after the kill, and that must happen before the test ends: a 16 s run
    # leaves ~6 s to spare. (A 9 s run with the kill at 3.5 s named it at +8.0 s of 9 on an idle machine, and a
    # slower start or a later kill under load pushes that past the end.)
    row, pids = _distributed_run(noop, tmp_path, "killed", "16s", kill_second_worker_after_s=5.0)
    killed = next(w for w in row["extra"]["worker_stats"] if w["pid"] == pids[1])
    survivor = next(w for w in row["extra"]["worker_stats"] if w["pid"] == pids[0])
    assert killed["lost_how"] == "missing" and killed["lost_at_s"] is not None and survivor["lost_at_s"] is None
    report = (tmp_path / "killed" / "report.md").read_text()
    assert f"worker {socket.gethostname()}:{pids[1]}" in report and "lost mid-run" in report
    # what the master counted is what the workers reported; the server also got what the dead worker sent
    # after its last report, and that gap is printed, not hidden
    counts = row["extra"]["request_counts"]
    assert counts["master"] == counts["workers_sum"] == row["n"]
    assert counts["server"] > counts["master"] and row["extra"]["request_count_gaps"]["server"] > 0
    assert any("request counts differ" in x for x in row["warnings"])
    # the intervals say two workers sent, then one
    assert [i["workers"] for i in row["extra"]["sending_intervals"] if i["to_s"] - i["from_s"] > 1][-1] == 1


def test_sending_intervals_and_lost_workers_from_the_ledger():
    from benchmarks.load.locust_workers import WorkerLedger, sending_intervals

    assert sending_intervals([(100.0, 110.0), (102.0, 105.0), (None, None)], 100.0) == [
        {"from_s": 0.0, "to_s": 2.0, "workers": 1}, {"from_s": 2.0, "to_s": 5.0, "workers": 2},
        {"from_s": 5.0, "to_s": 10.0, "workers": 1}]
    ledger = WorkerLedger()
    ledger.record_report("a", {"host": "h", "pid": 7, "requests": {"grpc": 10}, "first_request": 101.0,
                               "last_request": 104.0, "cpu": [100.0, 1.0, 0.5, 104.0, 3.0, 4.1]})
    ledger.record_report("a", {"host": "h", "pid": 7, "requests": {"grpc": 25}, "first_request": 103.0,
                               "last_request": 106.0})  # cumulative: the latest count wins, the first request stays
    ledger.record_cpu("a", 0.0)  # Locust's placeholder before its first CPU measurement
    ledger.record_cpu("a", 42.0)
    ledger.record_lost("a", "missing", 107.0)
    ledger.record_lost("a", "quit", 108.0)  # the first loss is the one that counts
    (w,) = ledger.summary(100.0)["workers"]
    assert (w["name"], w["requests"], w["sending_from_s"], w["sending_to_s"]) == ("h:7", {"grpc": 25}, 1.0, 6.0)
    assert (w["cpu_percent"], w["main_thread_cpu_percent"], w["saturated"]) == (50.0, 90.0, True)
    assert (w["locust_cpu_percent_mean"], w["lost_how"], w["lost_at_s"]) == (42.0, "missing", 7.0)
