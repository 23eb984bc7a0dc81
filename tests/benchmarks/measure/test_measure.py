"""The recorder and the CPU meter on their own: planted records and planted CPU work, no server."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from benchmarks.measure.calls import time_calls
from benchmarks.measure.cpu_meter import CPU_SATURATION_PCT, CpuMeter, CpuReading, process_cpu_seconds
from benchmarks.measure.recorder import Recorder, merge


def test_recorder_splits_successes_failures_and_versions_by_window() -> None:
    rec = Recorder()
    rec.record("OK", 1_000_000, version=1)  # 1 ms
    rec.record("OK", 3_000_000, version=2)
    rec.record("UNAVAILABLE", 50_000)
    rec.record("200", 2_000_000)  # REST success
    first = rec.rotate()
    rec.record("503", 10_000)
    rec.record("OK", 5_000_000, version=2)
    second = rec.rotate()

    assert (first.index, second.index) == (0, 1) and first.t1 == second.t0 and first.t0 == 0.0
    assert first.ok == 3 and first.sent == 4 and first.errors == {"UNAVAILABLE": 1}
    assert first.hist.count == 3 and first.error_hist.count == 1
    assert first.mean_ms == pytest.approx(2.0) and first.versions == {1: 1, 2: 1}
    assert first.throughput == pytest.approx(3 / first.duration_s)
    assert second.errors == {"503": 1} and second.versions == {2: 1} and second.hist.count == 1

    totals = rec.totals()
    assert totals.ok == 4 and totals.errors == {"UNAVAILABLE": 1, "503": 1}
    assert totals.version_counts == {1: 1, 2: 2}
    assert totals.version_first_seen[1] <= totals.version_first_seen[2] <= totals.version_last_seen[2]
    hist, errors = merge([first, second])
    assert hist.count == 4 and errors == {"UNAVAILABLE": 1, "503": 1}


def test_an_empty_window_has_no_mean_and_no_rate() -> None:
    w = Recorder().rotate()
    assert w.ok == 0 and w.sent == 0 and w.throughput == 0.0 and w.mean_ms != w.mean_ms  # NaN


def test_recorder_counts_exactly_under_concurrent_writers_and_readers() -> None:
    rec = Recorder()
    windows = []

    def write() -> None:
        for i in range(2000):
            rec.record("OK" if i % 4 else "DEADLINE_EXCEEDED", 1000 + i)

    writers = [threading.Thread(target=write) for _ in range(4)]
    for t in writers:
        t.start()
    while any(t.is_alive() for t in writers):
        windows.append(rec.rotate())
        rec.totals()
    for t in writers:
        t.join()
    windows.append(rec.rotate())
    assert sum(w.ok for w in windows) == rec.totals().ok == 6000
    assert sum(w.errors.get("DEADLINE_EXCEEDED", 0) for w in windows) == 2000


def _burn(cpu_seconds: float) -> None:
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def test_cpu_meter_charges_this_thread_and_process() -> None:
    meter = CpuMeter()
    _burn(0.1)
    r = meter.stop()
    assert r.thread_s >= 0.1 and r.process_s >= r.thread_s * 0.99
    assert r.wall_s >= r.thread_s * 0.99 and r.pids_s == 0.0
    assert 0.0 <= r.machine_pct <= 100.0 + 1e-6 and r.others_pct >= 0.0


def test_cpu_meter_charges_watched_processes_and_their_children() -> None:
    # the watched process only waits; its child does the work: the meter must see the child's CPU
    child = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    parent = (f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {child!r}]).wait()\n"
              "print('done', flush=True)\nsys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        meter = CpuMeter([proc.pid])
        assert proc.stdout.readline().strip() == "done"
        r = meter.stop()
    finally:
        proc.communicate("", timeout=30)
    # the child has exited and been reaped by now: its CPU is in the parent's children_* times
    assert r.pids_s >= 0.25, f"the child's 0.3 s of CPU was not charged ({r.pids_s:.3f} s)"
    assert process_cpu_seconds([proc.pid]) == 0.0  # gone: nothing to charge, no error


def test_cpu_reading_percentages_and_saturation_rule() -> None:
    r = CpuReading(wall_s=2.0, process_s=1.0, thread_s=0.5, pids_s=1.0, machine_busy_s=3.0, cores=2)
    assert (r.process_pct, r.thread_pct, r.pids_pct) == (50.0, 25.0, 50.0)
    assert r.machine_pct == 75.0 and r.others_pct == 25.0 and not r.saturated
    # saturation is judged on the event-loop thread, not on the process (grpcio's threads run outside the GIL)
    busy_loop = CpuReading(wall_s=1.0, process_s=1.4, thread_s=CPU_SATURATION_PCT / 100, pids_s=0.0,
                           machine_busy_s=1.4, cores=2)
    assert busy_loop.saturated
    assert not CpuReading(wall_s=1.0, process_s=1.4, thread_s=0.5, pids_s=0.0, machine_busy_s=1.4).saturated


def test_time_calls_counts_every_call_and_its_cpu() -> None:
    calls = []
    t = time_calls(lambda: calls.append(_burn(0.001)), calls=20, warmup=5)
    assert len(calls) == 25 and t.hist.count == 20 and t.calls == 20
    assert t.cpu_us_per_call >= 900 and t.wall_s > 0
