"""Sequential in-process calls timed one by one: the in-process counterpart of the load loop.

Used where a function is called directly (no transport): the perf check's in-process model cost and the
graph-call comparison. Each call's wall time goes into an HdrHistogram; the CPU meter spans the timed calls
only, so CPU per call excludes the warm-up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from benchmarks.measure.cpu_meter import CpuMeter, CpuReading, cpu_us_per_request
from benchmarks.measure.histogram import LatencyHistogram


@dataclass
class CallTiming:
    hist: LatencyHistogram
    calls: int
    wall_s: float
    cpu: CpuReading

    @property
    def cpu_us_per_call(self) -> float:  # the one CPU-per-request rule, a call being the request
        return cpu_us_per_request(self.cpu.process_pct, self.calls / self.cpu.wall_s if self.cpu.wall_s else 0) or 0.0


def time_calls(fn: Callable[[], object], calls: int, warmup: int = 200, *, budget_s: float | None = None,
               min_calls: int = 0, gap_s: float = 0.0) -> CallTiming:
    """`warmup` untimed calls, then `calls` timed ones; with `budget_s`, stop once that much time has passed
    and at least `min_calls` were timed (so a slow mode gets a bounded run and a fast one enough samples).
    `gap_s` sleeps between timed calls (not timed): a served stream's calls come after idle time, and TF's
    threads cost more to wake than to keep busy, so back-to-back calls flatter a runtime."""
    for _ in range(warmup):
        fn()
    hist = LatencyHistogram()
    cpu = CpuMeter()
    start = time.perf_counter()
    deadline = start + budget_s if budget_s is not None else float("inf")
    done = 0
    while done < calls and (done < min_calls or time.perf_counter() < deadline):
        t0 = time.perf_counter_ns()
        fn()
        hist.record_ns(time.perf_counter_ns() - t0)
        done += 1
        if gap_s:
            time.sleep(gap_s)
    wall = time.perf_counter() - start
    return CallTiming(hist, done, wall, cpu.stop())
