"""The cross-check table (`python -m benchmarks perf-analyzer`, make crosscheck): our clients beside an
independent tool at every point, from the run's result rows.

A point is (API, batch, concurrency). Its rows carry extra["repeat"]; per repeat the pair is our row and
the independent tool's row (perf_analyzer for gRPC, wrk for REST). The table has ONE row per point: the
median over the repeats (stable pairs when there are any) of our p50, theirs, ours ÷ theirs, and the same
for throughput, and whether the point meets the fidelity bounds (p50 within ±P50_BOUND, throughput at
least THROUGHPUT_BOUND of theirs). Below it: served ÷ in-process at batch 1, one stream (perf_analyzer's
p50 over the SavedModel signature call measured in the same run), and REST ÷ gRPC per point as the
independent tools measured them on this server.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmarks.results.report import table
from benchmarks.results.schema import ResultRow
from export.contract import REQUEST_STAGES

INDEPENDENT = {"grpc": "perf_analyzer", "rest": "wrk"}  # API -> the independent tool's client name
P50_BOUND = 0.10  # |ours ÷ theirs - 1| at most this
THROUGHPUT_BOUND = 0.9  # ours ÷ theirs at least this


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs and not (math.isnan(ours) or math.isnan(theirs)) else math.nan


@dataclass
class PointSummary:
    api: str
    batch: int
    concurrency: int
    client: str
    pairs: int
    stable_pairs: int
    our_p50: float
    their_p50: float
    p50_ratio: float
    our_rps: float
    their_rps: float
    rps_ratio: float
    calls: str = "async"  # how our client called: "sync" (blocking, on a worker thread) or "async" (event loop)

    @property
    def within(self) -> bool:
        # judged on the ratios as the table prints them (3 decimals): 1.1 is within ±10 %, whatever float says
        return abs(round(self.p50_ratio - 1, 3)) <= P50_BOUND and round(self.rps_ratio, 3) >= THROUGHPUT_BOUND


def _median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if finite else math.nan


def _pairs(rows: list[ResultRow]) -> dict[tuple[str, int, int, str], list[tuple[ResultRow, ResultRow]]]:
    """(api, batch, conc, our client) -> [(ours, theirs)] over the repeats."""
    theirs = {(r.kind, r.batch_size, r.concurrency, r.extra.get("repeat")): r for r in rows
              if r.kind in INDEPENDENT and r.client == INDEPENDENT[r.kind]}
    out: dict[tuple[str, int, int, str], list[tuple[ResultRow, ResultRow]]] = {}
    for r in rows:
        if r.kind not in INDEPENDENT or r.client == INDEPENDENT[r.kind]:
            continue
        their = theirs.get((r.kind, r.batch_size, r.concurrency, r.extra.get("repeat")))
        if their is not None:
            out.setdefault((r.kind, r.batch_size, r.concurrency, r.client), []).append((r, their))
    return out


def summarise(rows: list[ResultRow]) -> list[PointSummary]:
    out = []
    for (api, bs, conc, client), group in _pairs(rows).items():
        stable = [(o, t) for o, t in group if o.stable is not False and t.stable is not False]
        use = stable or group
        out.append(PointSummary(
            api, bs, conc, client, len(group), len(stable),
            _median([o.p50_ms for o, _ in use]), _median([t.p50_ms for _, t in use]),
            _median([ratio(o.p50_ms, t.p50_ms) for o, t in use]),
            _median([o.throughput_rps for o, _ in use]), _median([t.throughput_rps for _, t in use]),
            _median([ratio(o.throughput_rps, t.throughput_rps) for o, t in use]),
            "/".join(sorted({str(o.extra.get("calls", "async")) for o, _ in group}))))
    return out


def _served_over_inprocess(rows: list[ResultRow]) -> str:
    inproc = [r.p50_ms for r in rows if r.kind == "inprocess" and r.scenario == "steady" and r.batch_size == 1]
    served = [r.p50_ms for r in rows if r.kind == "grpc" and r.client == INDEPENDENT["grpc"]
              and r.batch_size == 1 and r.concurrency == 1]
    if not inproc or not served:
        return ""
    s, i = _median(served), _median(inproc)
    return (f"Served ÷ in-process at batch 1, 1 stream: perf_analyzer p50 {s:.3f} ms ÷ SavedModel signature call "
            f"p50 {i:.3f} ms (same run, {len(inproc)} measurement(s)) = **{ratio(s, i):.2f}×**")


def _rest_over_grpc(points: list[PointSummary], server: str) -> str:
    by = {(p.api, p.batch, p.concurrency): p for p in points}
    lines = [[b, c, by[("rest", b, c)].their_p50, by[("grpc", b, c)].their_p50,
              ratio(by[("rest", b, c)].their_p50, by[("grpc", b, c)].their_p50)]
             for (api, b, c) in sorted(by) if api == "rest" and ("grpc", b, c) in by]
    if not lines:
        return ""
    whose = ("the embedded server's own ratio (a Python gRPC and HTTP front end), NOT TF Serving's"
             if server.startswith("embedded") else f"measured on server '{server}'")
    return "\n\n".join([f"REST p50 ÷ gRPC p50 by the independent tools (wrk, perf_analyzer): {whose}.",
                        table(["batch", "conc", "wrk p50 ms", "perf_analyzer p50 ms", "REST ÷ gRPC"], lines)])


def stage_table(rows: list[ResultRow]) -> str:
    """The server's per-stage Predict time (µs, mean) under the independent tools' load, median over repeats,
    beside the tool's mean latency (closed loop: concurrency ÷ throughput, Little's law; both are means, so the
    difference is the mean time spent outside the server's handler)."""
    by: dict[tuple[str, int, int], list[tuple[dict, float]]] = {}
    for r in rows:
        entry = r.extra.get("server_metrics", {}).get("stage_mean_us", {}).get(r.kind.upper())
        if entry and r.kind in INDEPENDENT and r.client == INDEPENDENT[r.kind]:
            by.setdefault((r.kind, r.batch_size, r.concurrency), []).append((entry, 1e6 * r.concurrency / r.throughput_rps))
    lines = []
    for (api, bs, conc), got in sorted(by.items()):
        stages = {k: _median([e.get(k, math.nan) for e, _ in got]) for k in REQUEST_STAGES}
        handled = sum(v for v in stages.values() if not math.isnan(v))
        mean = _median([p for _, p in got])
        lines.append([api, bs, conc, *(round(stages[k]) for k in REQUEST_STAGES), round(handled), round(mean),
                      round(mean - handled)])
    if not lines:
        return ""
    return "\n\n".join(["Server time per Predict by stage (µs, mean per point, median over repeats) under the "
                         "independent tool's load; 'outside' = the tool's mean latency (conc ÷ req/s) minus the "
                         "handled time: transport, the gRPC/HTTP framework before and after our handler, the client:",
                         table(["API", "batch", "conc", *REQUEST_STAGES, "handled", "tool mean", "outside"], lines)])


def crosscheck_table(rows: list[ResultRow], server: str = "") -> str:
    """The whole cross-check section: one row per point, then served ÷ in-process and REST ÷ gRPC."""
    points = summarise(rows)
    body = [[p.api, p.batch, p.concurrency, p.client, p.calls, INDEPENDENT[p.api],
             f"{p.pairs} ({p.stable_pairs} stable)", p.our_p50, p.their_p50, p.p50_ratio, f"{p.our_rps:,.0f}", f"{p.their_rps:,.0f}", p.rps_ratio,
             "yes" if p.within else "NO"] for p in points]
    bounds = (f"Medians over the repeats (stable pairs when any). Bounds: p50 ours ÷ theirs within ±{P50_BOUND:.0%}, "
              f"req/s ours ÷ theirs ≥ {THROUGHPUT_BOUND:g}. calls: sync = blocking calls on a worker thread (one "
              "stream, as perf_analyzer's synchronous calls), async = on the event loop.")
    parts = [bounds, table(["API", "batch", "conc", "ours", "calls", "theirs", "pairs", "our p50 ms", "their p50 ms",
                            "p50 ratio", "our req/s", "their req/s", "req/s ratio", "within"], body)]
    met = sum(p.within for p in points)
    parts.append(f"{met} of {len(points)} points within both bounds.")
    parts += [s for s in (_served_over_inprocess(rows), _rest_over_grpc(points, server), stage_table(rows)) if s]
    return "\n\n".join(parts)
