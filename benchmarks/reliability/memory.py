"""Resident memory of the server process, sampled in a background thread (psutil).

Why RSS of the server and not of the client: the promises under test are the server's (no allocation from a
claimed shape, bounded queue under overload, no leak over a soak). Growth is measured after a warm-up, from the
median of the first samples to the median of the last ones, so one garbage-collection spike does not decide it.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import psutil


def rss_bytes(pid: int) -> int:
    """RSS of pid plus its children (a server might fork helpers); 0 when the process is gone."""
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0


@dataclass
class MemoryStats:
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    warmup_s: float = 0.0

    def _after_warmup(self) -> list[int]:
        return [b for t, b in self.samples if t >= self.warmup_s and b > 0]

    @property
    def peak_mib(self) -> float:
        return max((b for _, b in self.samples), default=0) / 2**20

    @property
    def start_mib(self) -> float:
        vals = self._after_warmup()
        k = max(1, len(vals) // 10)
        return statistics.median(vals[:k]) / 2**20 if vals else float("nan")

    @property
    def end_mib(self) -> float:
        vals = self._after_warmup()
        k = max(1, len(vals) // 10)
        return statistics.median(vals[-k:]) / 2**20 if vals else float("nan")

    @property
    def growth_pct(self) -> float:
        s, e = self.start_mib, self.end_mib
        return (e - s) / s * 100.0 if s and s == s and e == e else float("nan")

    def as_dict(self) -> dict:
        return {"start_mib": round(self.start_mib, 1), "end_mib": round(self.end_mib, 1),
                "peak_mib": round(self.peak_mib, 1), "growth_pct": round(self.growth_pct, 2),
                "warmup_s": self.warmup_s, "n_samples": len(self.samples)}


class RssSampler:
    """`with RssSampler(pid) as m: ...` then m.stats. Samples every `interval_s` seconds."""

    def __init__(self, pid: int, interval_s: float = 0.5, warmup_s: float = 0.0) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.stats = MemoryStats(warmup_s=warmup_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = 0.0

    def _run(self) -> None:
        while True:
            self.stats.samples.append((time.monotonic() - self._t0, rss_bytes(self.pid)))
            if self._stop.wait(self.interval_s):
                break

    def start(self) -> "RssSampler":
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> MemoryStats:
        self._stop.set()
        self._thread.join(timeout=5)
        self.stats.samples.append((time.monotonic() - self._t0, rss_bytes(self.pid)))
        return self.stats

    def __enter__(self) -> "RssSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
