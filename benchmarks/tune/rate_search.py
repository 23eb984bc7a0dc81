"""The highest open-loop request rate whose p99 stays within a latency budget (a trial's figure).

perf_analyzer's `--binary-search --latency-threshold` is the model: bracket by doubling the rate from a
start while probes pass (halving while they fail), then bisect between the highest passing and the lowest
failing rate until they are within `resolution_pct` of each other. Every probe is one measured point (the
caller's `measure(rate) -> ResultRow`). Stop rules: the resolution is reached, `max_probes` are spent, the
rate falls below `floor_rps` with nothing passing, or passes at `ceiling_rps`.

A probe that fails on its p99 alone, by less than `remeasure_below` x the budget, is measured once more and
judged on both measurements together (their latencies merged: twice the samples for the p99). Why: a p99
over ~1,000 requests is the 10th-slowest, so one scheduling stall of a few tens of ms on a shared machine
fails a rate the server holds (run 20261202-135451-tune-ac0ae9: the default passed 300, 350 and 375 req/s
around a failed 400). A real overload fails again; the extra measurement counts against `max_probes`.

A probe passes when its p99 is within the budget AND the server kept up: no failed requests, no sends
skipped at the in-flight cap, and no shortfall of answers below `keep_up` of the asked rate beyond what
Poisson arrivals explain (3 sigma). An open-loop point counts latency from the intended send time, so a
backlog already shows in p99; this catches the rest.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from benchmarks.results.schema import KEY_FIELDS, ResultRow


@dataclass(frozen=True)
class RatePlan:
    start_rps: float = 100.0
    resolution_pct: float = 10.0
    max_probes: int = 7
    floor_rps: float = 1.0
    ceiling_rps: float = 100_000.0
    keep_up: float = 0.9
    remeasure_below: float = 3.0  # re-measure a p99-only failure under this many times the budget (0: never)


@dataclass
class Probe:
    rate: float
    row: ResultRow
    why_not: str  # "" when it passed, else what failed (p99 over budget, errors, ...)

    @property
    def ok(self) -> bool:
        return not self.why_not


@dataclass
class RateResult:
    budget_ms: float
    probes: list[Probe] = field(default_factory=list)

    @property
    def best(self) -> Probe | None:
        """The highest passing probe: the figure."""
        passed = [p for p in self.probes if p.ok]
        return max(passed, key=lambda p: p.rate) if passed else None

    @property
    def closest(self) -> Probe | None:
        """With nothing passing: the probe with the lowest p99 (what came nearest the budget)."""
        return min(self.probes, key=lambda p: (p.row.p99_ms != p.row.p99_ms, p.row.p99_ms), default=None)

    @property
    def rate(self) -> float:
        return self.best.rate if self.best else 0.0


def why_not(row: ResultRow, rate: float, budget_ms: float, keep_up: float = RatePlan.keep_up) -> str:
    reasons = []
    if not row.p99_ms <= budget_ms:  # NaN (nothing answered) fails too
        reasons.append(f"p99 {row.p99_ms:.1f} ms > {budget_ms:g} ms")
    if row.errors:
        reasons.append(f"{row.errors} errors {row.errors_by_code}")
    dropped = row.extra.get("dropped_open_loop", 0)
    if dropped:
        reasons.append(f"{dropped} sends skipped at the in-flight cap")
    expected = rate * row.duration_s if row.duration_s == row.duration_s else 0.0
    # Poisson arrivals: the count in a span varies by sqrt(expected); only a shortfall beyond 3 sigma is real
    if expected and row.n < min(keep_up * expected, expected - 3 * math.sqrt(expected)):
        reasons.append(f"answered {row.throughput_rps:.0f}/s of {rate:g}/s")
    return "; ".join(reasons)


def wait_until_drained(lone_call: Callable[[], float | None], budget_ms: float, timeout_s: float = 30.0,
                       pause_s: float = 0.2, clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep) -> float:
    """Before a probe: send lone requests until one is answered within half the budget (or timeout_s passes);
    returns the seconds waited. `lone_call` -> the request's latency in ms, None when it failed.

    Why: the server cannot know that the client gave up on the requests a failed probe left in flight, so it
    keeps computing them; the next probe then starts against that backlog and fails however low its rate (run
    20261202-141415-tune-e28e48: after 131 req/s, MobileNetV2 failed 98 and 82 req/s with nothing answered, and
    the same configuration held 123 req/s on two other servers). A lone request waits behind the backlog (one
    queue), so its latency says when it is gone.
    """
    started = clock()
    while True:
        latency_ms = lone_call()
        if latency_ms is not None and latency_ms <= budget_ms / 2:
            return clock() - started
        if clock() - started >= timeout_s:
            return clock() - started
        sleep(pause_s)


# what from_histogram fills: the rest of a merged row (CPU, server metrics, labels) is the second measurement's
MEASURED_FIELDS = ("histogram", "n", "errors", "errors_by_code", "duration_s", "throughput_rps", "rows_per_s",
                   "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")


def merge_rows(first: ResultRow, second: ResultRow) -> ResultRow:
    """Two measurements of one rate as one row: latencies, counts, errors and skipped sends of both."""
    codes = dict(first.errors_by_code)
    for code, n in second.errors_by_code.items():
        codes[code] = codes.get(code, 0) + n
    both = ResultRow.from_histogram(first.histogram_obj().merge(second.histogram_obj()),
                                    duration_s=first.duration_s + second.duration_s,
                                    errors=first.errors + second.errors, errors_by_code=codes,
                                    **{f: getattr(second, f) for f in KEY_FIELDS})
    dropped = first.extra.get("dropped_open_loop", 0) + second.extra.get("dropped_open_loop", 0)
    return dataclasses.replace(second, **{f: getattr(both, f) for f in MEASURED_FIELDS},
                               extra=dict(second.extra, remeasured=True, dropped_open_loop=dropped))


def _worth_remeasuring(row: ResultRow, rate: float, budget_ms: float, plan: RatePlan) -> bool:
    """Failed on p99 alone, and by less than plan.remeasure_below x the budget."""
    return (plan.remeasure_below > 0 and not row.p99_ms <= budget_ms and row.p99_ms < plan.remeasure_below * budget_ms
            and why_not(row, rate, math.inf, plan.keep_up) == "")


def _next_rate(lo: float | None, hi: float | None, plan: RatePlan) -> float | None:
    """lo: highest passing rate, hi: lowest failing one; None when a stop rule holds."""
    if hi is None:
        return None if lo >= plan.ceiling_rps else min(2 * lo, plan.ceiling_rps)
    if lo is None:
        return None if hi / 2 < plan.floor_rps else hi / 2
    if (hi - lo) / lo * 100 <= plan.resolution_pct:
        return None
    return round((lo + hi) / 2, 1)


def search_rate(measure: Callable[[float], ResultRow], budget_ms: float, plan: RatePlan = RatePlan(),
                on_probe: Callable[[Probe], None] | None = None) -> RateResult:
    result = RateResult(budget_ms)
    lo: float | None = None
    hi: float | None = None
    rate: float | None = plan.start_rps
    measured = 0
    while rate is not None and measured < plan.max_probes:
        row = measure(rate)
        measured += 1
        if _worth_remeasuring(row, rate, budget_ms, plan) and measured < plan.max_probes:
            row = merge_rows(row, measure(rate))
            measured += 1
        probe = Probe(rate, row, why_not(row, rate, budget_ms, plan.keep_up))
        result.probes.append(probe)
        if on_probe:
            on_probe(probe)
        if probe.ok:
            lo = rate if lo is None else max(lo, rate)
        else:
            hi = rate if hi is None else min(hi, rate)
        rate = _next_rate(lo, hi, plan)
    return result
