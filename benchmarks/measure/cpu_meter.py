"""The CPU meter: over a span, this process's CPU, its event-loop thread's, other processes' (a server's,
children included) and the whole machine's; 100 = one core throughout.

Why several figures: on a machine where client and server share the cores, wall-clock latency moves with
everything else that runs, while CPU seconds per request do not; and the load generator saturates on its
event-loop thread (it holds the GIL for all Python work) long before the process as a whole shows 100%
(grpcio's C-core threads poll and frame outside the GIL).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import psutil

# The one saturation rule: the load generator is near saturation when the thread that runs its sending loop
# (our event loop; a Locust process's main thread) uses this much of one core. Judged on that thread, not on
# the process: the thread holds the GIL for all Python work and saturates first, while the process total can
# pass 100 % through grpcio's C-core threads with the generator still keeping up.
CPU_SATURATION_PCT = 85.0


def cpu_us_per_request(cpu_percent: float | None, requests_per_s: float | None) -> float | None:
    """The one CPU-per-request rule: CPU µs (to 0.1) per successful request = share of one core (100 = one core)
    over a span ÷ successful requests per second over it. Failures are charged to the successes (they bought
    nothing)."""
    if cpu_percent is None or not requests_per_s or math.isnan(requests_per_s):
        return None
    return round(cpu_percent * 1e4 / requests_per_s, 1)


def process_cpu_seconds(pids: list[int] | tuple[int, ...]) -> float:
    """User + system CPU seconds used so far by these processes and their descendants (a server may fork one):
    the live ones' own times, plus what their exited and reaped children used (children_user/_system)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for pr in procs:
            try:
                t = pr.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
    return total


def _machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _pct(seconds: float, wall_s: float) -> float:
    return 100.0 * seconds / wall_s if wall_s > 0 else 0.0


@dataclass
class CpuReading:
    wall_s: float
    process_s: float  # this process, all threads
    thread_s: float  # the thread that made and stopped the meter (the event loop's, when made there)
    pids_s: float  # the watched processes (e.g. the server), children included
    machine_busy_s: float  # all cores, all processes
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    pids: tuple[int, ...] = ()  # the watched processes: none means pids_s is not a server's figure

    @property
    def process_pct(self) -> float:
        return _pct(self.process_s, self.wall_s)

    @property
    def thread_pct(self) -> float:
        return _pct(self.thread_s, self.wall_s)

    @property
    def pids_pct(self) -> float:
        return _pct(self.pids_s, self.wall_s)

    # The machine's and other processes' CPU come in clock ticks (10 ms): over a short span they can
    # overshoot by a tick, hence the clamps.
    @property
    def machine_pct(self) -> float:
        """Share of the whole machine (100 = every core busy)."""
        return min(100.0, _pct(self.machine_busy_s, self.wall_s * self.cores))

    @property
    def others_pct(self) -> float:
        """Share of the machine used by neither this process nor the watched ones (a noisy-neighbour check)."""
        others = self.machine_busy_s - self.process_s - self.pids_s
        return min(100.0, max(0.0, _pct(others, self.wall_s * self.cores)))

    @property
    def saturated(self) -> bool:
        return self.thread_pct >= CPU_SATURATION_PCT


class CpuMeter:
    """Start at construction, read with stop(). stop() must run on the creating thread (thread_time is
    per-thread); `pids` are other processes to charge, e.g. the server under test."""

    def __init__(self, pids: list[int] | tuple[int, ...] = ()) -> None:
        self.pids = [p for p in pids if p != os.getpid()]
        self._t0 = time.perf_counter()
        # this process and thread through clock_gettime (ns resolution); other processes only through psutil,
        # which counts in clock ticks (10 ms): their figures need spans of many requests
        self._proc0 = time.process_time()
        self._thread0 = time.thread_time()
        self._pids0 = process_cpu_seconds(self.pids)
        self._machine0 = _machine_busy_seconds()

    def stop(self) -> CpuReading:
        return CpuReading(wall_s=time.perf_counter() - self._t0, process_s=time.process_time() - self._proc0,
                          thread_s=time.thread_time() - self._thread0,
                          pids_s=process_cpu_seconds(self.pids) - self._pids0,
                          machine_busy_s=_machine_busy_seconds() - self._machine0, pids=tuple(self.pids))
