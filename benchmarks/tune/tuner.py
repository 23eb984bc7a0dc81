"""The tuning loop: trial after trial, each a server started in one configuration and a rate search against
it; then the winner and its challenger (the default, or the runner-up when the default won) each searched
again on freshly started servers, interleaved, and their rates compared with an exact permutation test.

Every trial becomes one result row (scenario "tune", mode = the configuration's label) appended as soon as it
is done, so Ctrl-C keeps what was finished; a refused trial's row carries the reason and no latencies.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.results.schema import ResultRow, ResultWriter
from benchmarks.tune.launchers import Endpoint, Launcher, TrialRefused
from benchmarks.tune.rate_search import Probe, RatePlan, RateResult, search_rate
from benchmarks.tune.space import DEFAULT, Search, TrialConfig

TUNE, CONFIRM = "tune", "tune-confirm"
Prober = Callable[[Endpoint, TrialConfig, float], ResultRow]  # one measured open-loop point at a rate


@dataclass
class TuneSettings:
    model: str
    api: str
    request_batch: int
    budget_ms: float
    min_rps: float = 0.0
    trials: int = 8
    rate: RatePlan = field(default_factory=RatePlan)
    pairs: int = 3  # confirmation: interleaved winner/challenger pairs
    search_s: float = 0.0  # no trial starts after this long (0: no limit); keeps a run within its time


@dataclass
class Trial:
    index: int
    config: TrialConfig
    result: RateResult | None  # None: refused
    refused: str = ""

    @property
    def score(self) -> float:
        """The rate under the budget; -1 for a refused trial (below any measured one)."""
        return -1.0 if self.result is None else self.result.rate

    @property
    def shown(self) -> Probe | None:
        """The probe the trial's row shows: the best passing one, else the closest."""
        return None if self.result is None else (self.result.best or self.result.closest)


def trial_row(trial: Trial, s: TuneSettings) -> ResultRow:
    probes = trial.result.probes if trial.result else []
    status = "refused" if trial.result is None else ("ok" if trial.result.best else "over budget")
    info = {"trial": trial.index, "config": asdict(trial.config), "status": status, "reason": trial.refused,
            "budget_ms": s.budget_ms, "min_rps": s.min_rps, "rate_under_budget": trial.score if trial.result else None,
            "probes": [{"rate": p.rate, "p50_ms": p.row.p50_ms, "p99_ms": p.row.p99_ms,
                        "achieved": p.row.throughput_rps, "why_not": p.why_not} for p in probes]}
    shown = trial.shown
    if shown is None:
        return ResultRow(kind=s.api, model=s.model, mode=trial.config.label(), batch_size=s.request_batch,
                         scenario=TUNE, warnings=[trial.refused], extra={"tune": info})
    row = shown.row
    row.mode, row.scenario, row.target_rate = trial.config.label(), TUNE, shown.rate
    row.extra["tune"] = info
    if not shown.ok:
        row.warnings.insert(0, f"no rate tried meets the budget; closest: {shown.rate:g}/s ({shown.why_not})")
    return row


def run_trial(index: int, config: TrialConfig, launcher: Launcher, probe: Prober, s: TuneSettings,
              run_dir: Path, start_rps: float) -> Trial:
    try:
        endpoint = launcher.start(config, run_dir / f"trial-{index:02d}")
    except TrialRefused as exc:
        return Trial(index, config, None, str(exc))
    try:
        plan = RatePlan(**{**asdict(s.rate), "start_rps": start_rps})
        return Trial(index, config, search_rate(lambda rate: probe(endpoint, config, rate), s.budget_ms, plan))
    finally:
        launcher.stop()


def progress_line(trial: Trial, total: int | None, best: Trial) -> str:
    of = f"/{total}" if total else ""
    if trial.result is None:
        figure = f"refused: {trial.refused}"
    elif trial.result.best:
        b = trial.result.best
        figure = f"{b.rate:g} req/s within budget (p50 {b.row.p50_ms:.2f} ms, p99 {b.row.p99_ms:.2f} ms)"
    else:
        figure = f"nothing within budget (closest {trial.shown.rate:g}/s: {trial.shown.why_not})"
    return (f"[tune] trial {trial.index}{of} {trial.config.label()}: {figure} | best so far: "
            f"{best.config.label()} {max(best.score, 0):g} req/s")


def run_trials(search: Search, launcher: Launcher, probe: Prober, s: TuneSettings, writer: ResultWriter,
               out: Callable[[str], None] = print) -> tuple[list[Trial], bool]:
    """Trials until the search is done or s.trials ran -> (trials, interrupted?). Ctrl-C stops here and keeps
    the finished ones."""
    trials: list[Trial] = []
    size = getattr(search, "size", None)
    total = min(s.trials, size) if size else s.trials
    started = time.monotonic()
    try:
        while len(trials) < s.trials:
            if trials and s.search_s and time.monotonic() - started > s.search_s:
                out(f"[tune] search time ({s.search_s:g} s) spent: no more trials after {len(trials)}")
                break
            config = search([(t.config, t.score) for t in trials])
            if config is None:
                break
            best = ranked(trials)[0] if trials else None
            start = best.score if best is not None and best.score > 0 else s.rate.start_rps
            trial = run_trial(len(trials) + 1, config, launcher, probe, s, writer.run_dir, start)
            trials.append(trial)
            writer.append(trial_row(trial, s))
            out(progress_line(trial, total, ranked(trials)[0]))
    except KeyboardInterrupt:
        launcher.stop()
        out(f"[tune] interrupted: keeping the {len(trials)} finished trial(s), no confirmation")
        return trials, True
    return trials, False


def ranked(trials: list[Trial]) -> list[Trial]:
    """Best first: highest rate under the budget, then lowest p99 at it, then the earlier trial."""
    def key(t: Trial):
        p99 = t.shown.row.p99_ms if t.shown and not math.isnan(t.shown.row.p99_ms) else math.inf
        return (-t.score, p99, t.index)

    return sorted(trials, key=key)


def challenger(trials: list[Trial]) -> Trial | None:
    """Who the winner is confirmed against: the default, or the runner-up when the default won."""
    order = [t for t in ranked(trials) if t.result is not None]
    if len(order) < 2:
        return None
    default = next((t for t in order if t.config == DEFAULT), None)
    return order[1] if default is None or default is order[0] else default


ALPHA = 0.05  # with 3 searches a side the exact test reaches 1/20: every winner's rate above every other's


@dataclass
class Confirmation:
    """Each side's rate under the budget, searched again on `pairs` freshly started servers, interleaved."""

    winner_rates: list[float]
    other_rates: list[float]
    rows: list[ResultRow]  # one per search: its best probe (or the closest), scenario tune-confirm
    p_winner_higher: float  # exact one-sided permutation test of the mean rate, winner above the other
    p_other_higher: float

    @property
    def verdict(self) -> str:
        """'winner' / 'other': that side's rates are significantly higher (p <= ALPHA); else 'tie'."""
        if self.p_winner_higher <= ALPHA + 1e-9:
            return "winner"
        if self.p_other_higher <= ALPHA + 1e-9:
            return "other"
        return "tie"


def rate_test(winner: list[float], other: list[float]) -> tuple[float, float]:
    """(p winner higher, p other higher): exact permutation tests of the difference in mean rate (every split of
    the pooled rates; ties handled), which is what the tune claims: one configuration holds more req/s."""
    from scipy.stats import permutation_test

    if len(winner) < 2 or len(other) < 2:
        return 1.0, 1.0

    def diff(a, b, axis=-1):
        return np.mean(a, axis=axis) - np.mean(b, axis=axis)

    ps = [permutation_test((np.asarray(winner, float), np.asarray(other, float)), diff, vectorized=True,
                           permutation_type="independent", alternative=alt, n_resamples=np.inf).pvalue
          for alt in ("greater", "less")]
    return float(ps[0]), float(ps[1])


def confirm(winner: Trial, other: Trial, launcher: Launcher, probe: Prober, s: TuneSettings, writer: ResultWriter,
            out: Callable[[str], None] = print) -> Confirmation | None:
    """The figure itself re-measured: s.pairs interleaved pairs (order alternating, so a drifting machine does not
    favour one side), each side's rate under the budget searched again on a freshly started server; the rates
    compared with an exact permutation test. None when a server did not start.

    Why not one rate for both sides: at the winner's edge a fresh server misses the budget about as often as it
    meets it (run 20261202-111514-tune-5b6535: neither side held it), and halfway between the two edges assumes
    the other's edge was right (run 20261202-135752-tune-90a6f6: the default, found at 600, held 900 req/s in
    3/3). Each search starts below the lower of the two figures, so it brackets both.
    """
    found = [t.score for t in (winner, other) if t.score > 0]
    start = max(s.rate.floor_rps, 0.75 * min(found)) if found else s.rate.start_rps
    plan = dataclasses.replace(s.rate, start_rps=start)
    rates: dict[str, list[float]] = {"winner": [], "other": []}
    rows: list[ResultRow] = []
    for pair in range(s.pairs):
        order = (("winner", winner), ("other", other)) if pair % 2 == 0 else (("other", other), ("winner", winner))
        for role, trial in order:
            try:
                endpoint = launcher.start(trial.config, writer.run_dir / f"confirm-{pair + 1}-{role}")
            except TrialRefused as exc:
                out(f"[tune] confirmation stopped: {trial.config.label()} refused: {exc}")
                return None
            try:
                result = search_rate(lambda rate: probe(endpoint, trial.config, rate), s.budget_ms, plan)
            finally:
                launcher.stop()
            rates[role].append(result.rate)
            shown = result.best or result.closest
            row = (shown.row if shown is not None
                   else ResultRow(kind=s.api, model=s.model, mode="", batch_size=s.request_batch))
            row.mode, row.scenario, row.target_rate = trial.config.label(), CONFIRM, result.rate
            row.extra["tune_confirm"] = {"pair": pair + 1, "role": role, "rate_under_budget": result.rate,
                                         "probes": [{"rate": p.rate, "p99_ms": p.row.p99_ms, "why_not": p.why_not}
                                                    for p in result.probes]}
            rows.append(writer.append(row))
            out(f"[tune] confirm pair {pair + 1} {role} {trial.config.label()}: {result.rate:g} req/s within "
                f"{s.budget_ms:g} ms ({len(result.probes)} probes)")
    p_w, p_o = rate_test(rates["winner"], rates["other"])
    return Confirmation(rates["winner"], rates["other"], rows, p_w, p_o)
