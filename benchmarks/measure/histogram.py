"""Latency histograms at microsecond resolution (HdrHistogram via the `hdrh` package).

Why HdrHistogram: it keeps every recorded value to 3 significant digits in bounded memory, merges
exactly across workers/processes, and its encoded form is a compact string we can store in the
result JSON so later comparisons work from the full distribution, not from a few rounded percentiles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120 * 1_000_000  # 2 minutes: anything slower is clamped (and counted) rather than lost
SIGNIFICANT_DIGITS = 3

@dataclass
class LatencySummary:
    """Percentiles in milliseconds, in the order the result schema uses."""

    n: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    min_ms: float
    mean_ms: float


class LatencyHistogram:
    """Thin wrapper around HdrHistogram that speaks seconds/nanoseconds in and milliseconds out."""

    def __init__(self, hist: HdrHistogram | None = None) -> None:
        self._h = hist or HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        self.clamped = 0  # values above HIGHEST_US (recorded as HIGHEST_US so they still count)

    # -- recording -------------------------------------------------------------------------
    def record_us(self, us: float, expected_interval_us: float | None = None) -> None:
        v = int(round(us))
        if v < LOWEST_US:
            v = LOWEST_US
        if v > HIGHEST_US:
            self.clamped += 1
            v = HIGHEST_US
        if expected_interval_us:
            # Coordinated-omission correction (wrk2 style): fill in the samples a stall hid.
            self._h.record_corrected_value(v, int(expected_interval_us))
        else:
            self._h.record_value(v)

    def record_ns(self, ns: int) -> None:
        self.record_us(ns / 1000.0)

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        self._h.add(other._h)
        self.clamped += other.clamped
        return self

    def reset(self) -> None:
        self._h.reset()
        self.clamped = 0

    # -- reading ---------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile_ms(self, p: float) -> float:
        if self.count == 0:
            return float("nan")
        return self._h.get_value_at_percentile(p) / 1000.0

    def summary(self) -> LatencySummary:
        if self.count == 0:
            nan = float("nan")
            return LatencySummary(0, nan, nan, nan, nan, nan, nan, nan, nan)
        return LatencySummary(
            n=self.count,
            p50_ms=self.percentile_ms(50),
            p90_ms=self.percentile_ms(90),
            p95_ms=self.percentile_ms(95),
            p99_ms=self.percentile_ms(99),
            p999_ms=self.percentile_ms(99.9),
            max_ms=self._h.get_max_value() / 1000.0,
            min_ms=self._h.get_min_value() / 1000.0,
            mean_ms=self._h.get_mean_value() / 1000.0,
        )

    def spectrum(self, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """(percentile, latency_ms) pairs on a log-spaced 'nines' axis for spectrum plots."""
        if self.count == 0:
            return np.array([]), np.array([])
        # 1 - 10**-k for k in [0.3 .. 5] gives 50% .. 99.999%, denser near the tail.
        ks = np.linspace(np.log10(2), 5, points)
        pct = 100.0 * (1.0 - 10.0 ** (-ks))
        vals = np.array([self._h.get_value_at_percentile(p) / 1000.0 for p in pct])
        return pct, vals

    def samples_ms(self, max_samples: int | None = None, seed: int = 0) -> np.ndarray:
        """Reconstruct samples from the histogram (value = bucket's median-equivalent value).

        The result has many ties (one distinct value per bucket) -- see compare.py for why the
        statistical test we use tolerates that. With max_samples the reconstruction is thinned by
        a seeded draw without replacement so the shape is kept but work stays bounded.
        """
        values: list[float] = []
        counts: list[int] = []
        for item in self._h.get_recorded_iterator():
            values.append(self._h._hdr_median_equiv_value(item.value_iterated_to) / 1000.0)
            counts.append(item.count_at_value_iterated_to)
        if not values:
            return np.array([], dtype=float)
        arr = np.repeat(np.asarray(values, dtype=float), np.asarray(counts, dtype=np.int64))
        if max_samples is not None and arr.size > max_samples:
            rng = np.random.default_rng(seed)
            arr = np.sort(rng.choice(arr, size=max_samples, replace=False))
        return arr

    # -- serialisation ---------------------------------------------------------------------
    def encode(self) -> str:
        if self.count == 0:
            return ""
        return self._h.encode().decode("ascii")

    @classmethod
    def decode(cls, encoded: str) -> "LatencyHistogram":
        if not encoded:
            return cls()
        h = HdrHistogram.decode(encoded.encode("ascii"))
        # decode() may size the histogram differently; re-add into a standard one so merges work.
        out = cls()
        out._h.add(h)
        return out

    @classmethod
    def from_samples_ms(cls, samples_ms) -> "LatencyHistogram":
        out = cls()
        for v in np.asarray(samples_ms, dtype=float).ravel():
            out.record_us(v * 1000.0)
        return out
