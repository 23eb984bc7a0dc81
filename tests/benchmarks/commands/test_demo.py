"""The demo's LoadGen Server rate comes from the closed-loop capacity it has just measured."""
from __future__ import annotations

import math

from benchmarks.commands.demo import half_peak
from benchmarks.results.schema import ResultRow


def row(batch: int, rps: float) -> ResultRow:
    return ResultRow(kind="grpc", model="m", mode="embedded-eager", batch_size=batch, concurrency=4,
                     throughput_rps=rps)


def test_loadgen_rate_is_half_the_peak_at_that_batch_size():
    rows = [row(1, 300.0), row(1, 410.0), row(1, 390.0), row(32, 120.0), row(32, math.nan)]
    assert half_peak(rows, 1) == 205.0
    assert half_peak(rows, 32) == 60.0
    assert half_peak([], 1) == 1.0  # nothing measured: the lowest rate, not a guess
