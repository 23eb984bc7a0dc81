"""The one recorder every load policy writes into: latencies, statuses and model versions, window by window.

A response is recorded once, as (status, latency, model version if known). Successful latencies go into the
current window's HdrHistogram, failures are counted by status (and their latencies kept apart: how fast a
refusal comes back is a figure of its own). `rotate()` closes the window and opens the next; totals since the
start are kept beside the windows so progress can be read from another thread while the load runs.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from benchmarks.clients.transports import ok  # a status is the clients' word: gRPC name or HTTP code
from benchmarks.measure.histogram import LatencyHistogram


@dataclass
class Window:
    """What happened in one time slice [t0, t1) (seconds since the recorder started)."""

    index: int
    t0: float
    t1: float
    hist: LatencyHistogram  # successful requests
    errors: dict[str, int]
    ok: int = 0
    sum_ns: int = 0  # of successful latencies: the mean without walking the histogram
    versions: dict[int, int] = field(default_factory=dict)  # model version -> successful responses
    error_hist: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def duration_s(self) -> float:
        return self.t1 - self.t0

    @property
    def sent(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def mean_ms(self) -> float:
        return self.sum_ns / self.ok / 1e6 if self.ok else math.nan


@dataclass
class Totals:
    """Everything recorded since the start (windows merged), as of the last record."""

    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    version_counts: Counter = field(default_factory=Counter)
    version_first_seen: dict[int, float] = field(default_factory=dict)  # time.monotonic()
    version_last_seen: dict[int, float] = field(default_factory=dict)


class Recorder:
    """Thread-safe: the load's event loop records, another thread may read `totals()` or rotate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self._totals = Totals()
        self._index = 0
        self._open(0.0)

    def _open(self, t0: float) -> None:
        self._t0 = t0
        self._hist, self._error_hist = LatencyHistogram(), LatencyHistogram()
        self._errors: Counter[str] = Counter()
        self._versions: Counter[int] = Counter()
        self._ok = self._sum_ns = 0

    def record(self, status: str, latency_ns: int, version: int | None = None) -> None:
        with self._lock:
            if not ok(status):
                self._errors[status] += 1
                self._error_hist.record_ns(latency_ns)
                self._totals.errors[status] += 1
                return
            self._hist.record_ns(latency_ns)
            self._ok += 1
            self._sum_ns += latency_ns
            self._totals.ok += 1
            if version is not None:
                now = time.monotonic()
                self._versions[version] += 1
                self._totals.version_counts[version] += 1
                self._totals.version_first_seen.setdefault(version, now)
                self._totals.version_last_seen[version] = now

    def rotate(self) -> Window:
        """Close the current window (returned) and open the next one."""
        now = time.monotonic() - self.started
        with self._lock:
            w = Window(self._index, self._t0, now, self._hist, dict(self._errors), self._ok, self._sum_ns,
                       dict(self._versions), self._error_hist)
            self._index += 1
            self._open(now)
        return w

    def totals(self) -> Totals:
        """A copy, safe to read while recording goes on."""
        with self._lock:
            t = self._totals
            return Totals(t.ok, Counter(t.errors), Counter(t.version_counts), dict(t.version_first_seen),
                          dict(t.version_last_seen))


def merge(windows: list[Window]) -> tuple[LatencyHistogram, dict[str, int]]:
    """One histogram of the windows' successes and their errors by status."""
    hist = LatencyHistogram()
    errors: Counter[str] = Counter()
    for w in windows:
        hist.merge(w.hist)
        errors.update(w.errors)
    return hist, dict(errors)
