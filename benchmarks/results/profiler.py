"""The profiler (perf_analyzer's word): a `MeasuredPoint` (benchmarks/load/managers.py) -> one `ResultRow`, the
same way for every command. Latencies and throughput come from the merged windows; CPU per request and
saturation follow the one rule of each in benchmarks/measure/cpu_meter.py. Commands add only their own figures.
"""
from __future__ import annotations

import math

from benchmarks.load.managers import MeasuredPoint
from benchmarks.measure.cpu_meter import cpu_us_per_request
from benchmarks.measure.recorder import merge
from benchmarks.results.schema import ResultRow

SATURATION_WARNING = "load generator near saturation"


def _figures(point: MeasuredPoint, rps: float) -> dict:
    """What the row's extra holds for every measured point: windows, CPU per request and cores, server delta."""
    x: dict = {}
    if point.window_throughputs:
        x.update(windows=len(point.window_throughputs), window_throughputs=point.window_throughputs,
                 max_deviation_pct=round(point.deviation_pct, 2) if math.isfinite(point.deviation_pct) else None)
    cpu = point.cpu
    if cpu is not None:
        x.update(system_cpu_percent=round(cpu.machine_pct, 1), loop_thread_cpu_percent=round(cpu.thread_pct, 1),
                 client_cpu_us_per_request=cpu_us_per_request(cpu.process_pct, rps),
                 client_cores=round(cpu.process_pct / 100, 2))
        if cpu.pids:
            x.update(server_cpu_us_per_request=cpu_us_per_request(cpu.pids_pct, rps),
                     server_cores=round(cpu.pids_pct / 100, 2))
    if point.dropped:
        x["dropped_open_loop"] = point.dropped
    x["calls"] = point.calls
    x["server_metrics"] = point.server_metrics
    return x


def _warnings(point: MeasuredPoint, row: ResultRow) -> list[str]:
    out = []
    if point.stable is False:
        out.append(f"unstable: last 3 of {len(point.window_throughputs)} windows differ by up to "
                   f"{point.deviation_pct:.1f}%")
    if point.cpu is not None and point.cpu.saturated:
        out.append(f"{SATURATION_WARNING} (event loop {point.cpu.thread_pct:.0f}% of a core, process "
                   f"{point.cpu.process_pct:.0f}%): numbers may reflect the client, not the server")
    if row.errors:
        out.append(f"{row.errors} failed requests: {row.errors_by_code}")
    return out


def profile(point: MeasuredPoint, *, extra: dict | None = None, **fields) -> ResultRow:
    """The row of one measured point. fields: ResultRow's identity (kind, model, mode, batch_size, scenario,
    server, client, target, ...; concurrency / target_rate default to the load manager's); extra: the
    command's own figures, added to the common ones."""
    hist, errors = merge(point.windows)
    row = ResultRow.from_histogram(hist, duration_s=sum(w.duration_s for w in point.windows),
                                   errors=sum(errors.values()), errors_by_code=errors, stable=point.stable,
                                   **{**point.load, **fields})
    row.achieved_rate = row.throughput_rps
    if point.cpu is not None:
        row.client_cpu_percent = round(point.cpu.process_pct, 1)
        row.client_saturated = point.cpu.saturated
    row.extra = {**_figures(point, row.throughput_rps), **(extra or {})}
    row.warnings = _warnings(point, row)
    return row
