"""Closed-loop load with measurement windows and perf_analyzer's stability rule.

A closed loop keeps exactly `concurrency` requests in flight: each worker sends, waits, records,
repeats. Time is cut into windows; after each window we look at the last three: the point is
*stable* when their throughput and mean latency all lie within ±stability_pct of the three-window
average (perf_analyzer's rule). We stop at the first stable triple or after max_windows; a point that
never stabilised is reported with stable=False and a warning instead of silently. The reported
numbers are the merged last three windows.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import psutil

from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.clients.transports import Transport, ok

# Of one core, judged on the event-loop thread: that thread holds the GIL for all Python work, so it
# is what saturates. The process as a whole may exceed 100% (grpcio's C-core threads poll and frame
# outside the GIL) without the load generator being the limit.
CPU_SATURATION_PCT = 85.0


class Recorder:
    """Successful latencies into the current window's histogram, failures counted by status."""

    def __init__(self) -> None:
        self.hist = LatencyHistogram()
        self.errors: Counter[str] = Counter()
        self.t_start = time.perf_counter()
        # running sum: the window's mean without walking the histogram (hdrh's pure-Python iterators
        # cost milliseconds, and that time would be stolen from the load loop between windows)
        self.sum_ns = 0
        self.count = 0

    def record(self, status: str, latency_ns: int) -> None:
        if ok(status):
            self.hist.record_ns(latency_ns)
            self.sum_ns += latency_ns
            self.count += 1
        else:
            self.errors[status] += 1

    def rotate(self) -> "Window":
        now = time.perf_counter()
        w = Window(self.hist, dict(self.errors), now - self.t_start, self.count, self.sum_ns)
        self.hist, self.errors, self.t_start = LatencyHistogram(), Counter(), now
        self.sum_ns = self.count = 0
        return w


@dataclass
class Window:
    hist: LatencyHistogram
    errors: dict[str, int]
    duration_s: float
    count: int = 0
    sum_ns: int = 0

    @property
    def throughput(self) -> float:
        return self.count / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def mean_ms(self) -> float:
        return self.sum_ns / self.count / 1e6 if self.count else math.nan


def windows_stable(ws: list[Window], pct: float) -> tuple[bool, float]:
    """(stable?, worst relative deviation in %) over the last three windows."""
    if len(ws) < 3:
        return False, math.inf
    last = ws[-3:]
    worst = 0.0
    for values in ([w.throughput for w in last], [w.mean_ms for w in last]):
        if any(math.isnan(v) for v in values):
            return False, math.inf
        avg = sum(values) / 3
        if avg <= 0:
            return False, math.inf
        worst = max(worst, max(abs(v - avg) / avg * 100 for v in values))
    return worst <= pct, worst


class CpuMeter:
    """This process's CPU use (all threads, 100 = one core) and the whole machine's, over a span; also
    the CPU of the thread that created the meter (`thread_pct`: the event loop's, when made there)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.t0 = time.perf_counter()
        self.c0 = self.proc.cpu_times()
        self.th0 = time.thread_time()
        self.thread_pct = 0.0
        psutil.cpu_percent(None)

    def stop(self) -> tuple[float, float]:
        dt = time.perf_counter() - self.t0
        c1 = self.proc.cpu_times()
        used = (c1.user - self.c0.user) + (c1.system - self.c0.system)
        # thread_time() is per-thread: stop() must run on the creating thread for this to mean anything
        self.thread_pct = 100.0 * (time.thread_time() - self.th0) / dt if dt > 0 else 0.0
        return (100.0 * used / dt if dt > 0 else 0.0), psutil.cpu_percent(None)


@dataclass
class ClosedResult:
    concurrency: int
    hist: LatencyHistogram
    errors: dict[str, int]
    duration_s: float
    windows: int
    stable: bool
    deviation_pct: float
    client_cpu_pct: float
    system_cpu_pct: float
    window_throughputs: list[float] = field(default_factory=list)
    wall_s: float = 0.0  # whole point including warm-up
    loop_cpu_pct: float = 0.0  # the event-loop thread alone (100 = one core); what saturates first

    @property
    def saturated(self) -> bool:
        return self.loop_cpu_pct >= CPU_SATURATION_PCT

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    def warnings(self) -> list[str]:
        out = []
        if not self.stable:
            out.append(f"unstable: last 3 of {self.windows} windows differ by up to {self.deviation_pct:.1f}%")
        if self.saturated:
            out.append(f"load generator near saturation (event loop {self.loop_cpu_pct:.0f}% of a core, process "
                       f"{self.client_cpu_pct:.0f}%): numbers may reflect the client, not the server")
        if self.n_errors:
            out.append(f"{self.n_errors} failed requests: {self.errors}")
        return out


async def run_closed_loop(transport: Transport, payloads: list[bytes], concurrency: int, *,
                          window_s: float = 2.0, max_windows: int = 10, stability_pct: float = 10.0,
                          warmup_s: float = 0.5, error_backoff_s: float = 0.001,
                          fixed_windows: int | None = None) -> ClosedResult:
    """Drive `concurrency` workers; return merged stats of the last 3 windows (or all, see below).

    fixed_windows: run exactly this many windows and report all of them (no stability search) --
    used where a fixed duration matters more than stability (e.g. fault-injection runs).
    """
    rec = Recorder()
    stop = False
    t_begin = time.perf_counter()

    async def worker(i: int) -> None:
        k = i
        while not stop:
            payload = payloads[k % len(payloads)]
            k += 1
            t0 = time.perf_counter_ns()
            status, _ = await transport.send(payload)
            rec.record(status, time.perf_counter_ns() - t0)
            if not ok(status) and error_backoff_s:
                # A dead server fails instantly; without a pause the loop would spin the CPU and
                # starve the window timer. 1 ms is far below any successful latency we care about.
                await asyncio.sleep(error_backoff_s)

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    try:
        if warmup_s > 0:
            await asyncio.sleep(warmup_s)
        rec.rotate()  # discard warm-up
        cpu = CpuMeter()
        windows: list[Window] = []
        stable, dev = False, math.inf
        target = fixed_windows or max_windows
        while len(windows) < target:
            await asyncio.sleep(window_s)
            windows.append(rec.rotate())
            if fixed_windows is None:
                stable, dev = windows_stable(windows, stability_pct)
                if stable:
                    break
        client_cpu, sys_cpu = cpu.stop()
    finally:
        stop = True
        await asyncio.wait(tasks, timeout=max(5.0, getattr(transport, "timeout_s", 30.0)))
        for t in tasks:
            t.cancel()
    use = windows if fixed_windows else windows[-3:]
    if fixed_windows:
        stable, dev = windows_stable(windows, stability_pct)
    merged = LatencyHistogram()
    errors: Counter[str] = Counter()
    for w in use:
        merged.merge(w.hist)
        errors.update(w.errors)
    return ClosedResult(concurrency, merged, dict(errors), sum(w.duration_s for w in use), len(windows), stable,
                        dev, client_cpu, sys_cpu, [round(w.throughput, 1) for w in windows],
                        time.perf_counter() - t_begin, cpu.thread_pct)
