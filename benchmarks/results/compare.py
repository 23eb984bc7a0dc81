"""Compare two runs row by row: % change and a statistical verdict from the raw histograms.

Statistic: the relative change of the median latency, median(new)/median(base) - 1, with a 95%
bootstrap confidence interval (scipy.stats.bootstrap, percentile method, the two samples resampled
independently). Samples are reconstructed from the stored HdrHistograms.

Why bootstrap and not Mann-Whitney U:
  * Reconstructed samples are heavily tied (one value per histogram bucket). MWU copes with ties
    only through a variance correction of its normal approximation, and what it tests (P(X<Y) =
    1/2) is not the quantity we threshold on.
  * With 10^4-10^5 samples MWU calls a 0.3 % shift "significant"; the question we must answer is
    "is the slowdown larger than X % and is it real", which needs an effect size with an interval in
    the same unit as the threshold. A median of tied data is still well defined, and its bootstrap
    distribution is only discretised at bucket resolution (0.1 % at 3 significant digits), far below
    the default 5 % threshold.
  * Latency series are autocorrelated, so i.i.d. resampling overstates confidence; we thin each side
    to at most --max-samples draws (seeded) which makes the interval honest-to-conservative, and the
    threshold guards against flagging tiny real-but-irrelevant shifts.
Verdict: "regression" when the CI lies entirely above 0 AND the point change exceeds the threshold;
"improvement" symmetrically; "slower"/"faster" when significant but within the threshold;
otherwise "no change". Exit status 1 if any row is a regression.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.results.report import table
from benchmarks.results.schema import KEY_FIELDS, ResultRow, atomic_write_text, load_run


@dataclass
class Comparison:
    key: dict
    base_p50_ms: float
    new_p50_ms: float
    base_p99_ms: float
    new_p99_ms: float
    change_pct: float  # median change
    ci_low_pct: float | None
    ci_high_pct: float | None
    p99_change_pct: float
    throughput_change_pct: float | None
    n_base: int
    n_new: int
    verdict: str
    stable: str = ""  # "" when both points were stable (or not sweeps); otherwise which side was not


THRESHOLD_PCT = 5.0  # a regression is a median latency change beyond this many percent
THRESHOLD = THRESHOLD_PCT / 100
MAX_SAMPLES = 4000  # samples drawn from each row's histogram for the bootstrap


def median_change_ci(base: np.ndarray, new: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """(point change, ci low, ci high) of median(new)/median(base) - 1."""
    from scipy.stats import bootstrap

    point = float(np.median(new) / np.median(base) - 1.0)

    def stat(b, n, axis=-1):
        return np.median(n, axis=axis) / np.median(b, axis=axis) - 1.0

    if np.all(base == base[0]) and np.all(new == new[0]):
        return point, point, point  # degenerate: every resample gives the same value
    res = bootstrap((base, new), stat, vectorized=True, paired=False, n_resamples=n_resamples,
                    confidence_level=confidence, method="percentile", random_state=seed, batch=250)
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def verdict_for(point: float, lo: float, hi: float, threshold: float) -> str:
    if lo > 0:
        return "regression" if point > threshold else "slower (within threshold)"
    if hi < 0:
        return "improvement" if point < -threshold else "faster (within threshold)"
    return "no change"


def compare_samples(base: np.ndarray, new: np.ndarray, threshold: float = THRESHOLD,
                    seed: int = 0) -> tuple[str, float, float, float]:
    point, lo, hi = median_change_ci(np.asarray(base, float), np.asarray(new, float), seed=seed)
    return verdict_for(point, lo, hi, threshold), point, lo, hi


def _pct(a: float, b: float) -> float:
    if a is None or b is None or not a or math.isnan(a) or math.isnan(b):
        return math.nan
    return (b / a - 1.0) * 100.0


def compare_rows(base_rows: list[ResultRow], new_rows: list[ResultRow], *, threshold: float = THRESHOLD,
                 max_samples: int = MAX_SAMPLES, min_samples: int = 20, ignore: tuple[str, ...] = (),
                 seed: int = 0) -> tuple[list[Comparison], list[dict], list[dict]]:
    """-> (comparisons, keys only in base, keys only in new)."""
    fields = [f for f in KEY_FIELDS if f not in ignore]

    def key(r: ResultRow) -> tuple:
        return tuple(getattr(r, f) for f in fields)

    bmap = {key(r): r for r in base_rows}
    nmap = {key(r): r for r in new_rows}
    out: list[Comparison] = []
    for k in [k for k in bmap if k in nmap]:
        b, n = bmap[k], nmap[k]
        kd = dict(zip(fields, k))
        bs = b.histogram_obj().samples_ms(max_samples, seed=seed) if b.histogram else np.array([])
        ns = n.histogram_obj().samples_ms(max_samples, seed=seed) if n.histogram else np.array([])
        tp = _pct(b.throughput_rps, n.throughput_rps)
        if bs.size < min_samples or ns.size < min_samples:
            verdict, lo, hi = f"n/a (fewer than {min_samples} samples)", None, None
            point = _pct(b.p50_ms, n.p50_ms)
        else:
            verdict, p, lo_f, hi_f = compare_samples(bs, ns, threshold, seed)
            point, lo, hi = p * 100, lo_f * 100, hi_f * 100
        unstable = [side for side, r in (("base", b), ("new", n)) if r.stable is False]
        out.append(Comparison(kd, b.p50_ms, n.p50_ms, b.p99_ms, n.p99_ms, point, lo, hi, _pct(b.p99_ms, n.p99_ms),
                              None if math.isnan(tp) else tp, b.n, n.n, verdict,
                              ("unstable in " + "+".join(unstable)) if unstable else ""))
    only_b = [dict(zip(fields, k)) for k in bmap if k not in nmap]
    only_n = [dict(zip(fields, k)) for k in nmap if k not in bmap]
    return out, only_b, only_n


ENV_KEYS = ("cpu_model", "cpu_cores_logical", "memory_gib", "gpus", "server_kind", "server_mode")


def environment_differences(base: dict, new: dict) -> list[str]:
    """What differs between two runs' machines/software: a change there explains a change in numbers."""
    out = [f"{k}: {base.get(k)!r} -> {new.get(k)!r}" for k in ENV_KEYS if base.get(k) != new.get(k)]
    bv, nv = base.get("versions") or {}, new.get("versions") or {}
    out += [f"{k}: {bv.get(k)} -> {nv.get(k)}" for k in sorted(set(bv) | set(nv)) if bv.get(k) != nv.get(k)]
    if base.get("git_commit") != new.get("git_commit"):
        out.append(f"git: {str(base.get('git_commit'))[:10]} -> {str(new.get('git_commit'))[:10]}")
    return out


def render(cmps: list[Comparison], base_id: str, new_id: str, threshold: float, only_b: list, only_n: list,
           env_diff: list[str] | None = None) -> str:
    rows = []
    for c in cmps:
        k = c.key
        load = k.get("concurrency") if k.get("concurrency") is not None else k.get("target_rate")
        ci = f"[{c.ci_low_pct:+.1f}, {c.ci_high_pct:+.1f}]" if c.ci_low_pct is not None else "–"
        flag = "**REGRESSION**" if c.verdict == "regression" else c.verdict
        rows.append([k.get("kind"), k.get("server") or "", k.get("model"), k.get("mode"), k.get("scenario"),
                     k.get("batch_size"), load, c.base_p50_ms, c.new_p50_ms, f"{c.change_pct:+.1f}%", ci,
                     f"{c.p99_change_pct:+.1f}%" if not math.isnan(c.p99_change_pct) else "–",
                     f"{c.throughput_change_pct:+.1f}%" if c.throughput_change_pct is not None else "–", flag,
                     c.stable])
    parts = [f"# Compare {base_id} → {new_id}", "",
             f"Median latency change with 95% bootstrap CI; regression = CI above 0 and change > {threshold * 100:g}%.",
             "", table(["kind", "server", "model", "mode", "scenario", "batch", "conc/rate", "base p50 ms",
                        "new p50 ms", "Δ p50", "95% CI", "Δ p99", "Δ req/s", "verdict", "note"], rows), ""]
    if only_b or only_n:
        parts += [f"Rows only in base: {len(only_b)}; only in new: {len(only_n)} (not compared).", ""]
    if env_diff:
        parts += ["Environment differences (may explain changes):", ""] + [f"- {d}" for d in env_diff] + [""]
    if any(c.stable for c in cmps):
        parts += ["Rows marked unstable never had 3 agreeing measurement windows: treat their verdicts with care.", ""]
    return "\n".join(parts)


NO_COMPARABLE_ROWS = 2  # exit status when two runs share no row to compare
IGNORABLE = ("server", "mode", "target_rate", "concurrency", "client")  # key fields `--ignore` may drop


def no_match_hint(base_rows: list[ResultRow], new_rows: list[ResultRow], ignore: tuple[str, ...]) -> str:
    """Why nothing matched: the key fields whose --ignore would make rows match, if any."""
    helps = [f for f in KEY_FIELDS if f not in ignore and f in IGNORABLE
             and compare_rows(base_rows, new_rows, max_samples=1, min_samples=10**9, ignore=(*ignore, f))[0]]
    hint = (f"; they differ in {', '.join(helps)}: pass --ignore {' '.join(helps)} to compare across it"
            if helps else "; different models, batch sizes or scenarios?")
    return f"No comparable rows: the two runs share no row (kind, model, mode, scenario, batch, load, server, client){hint}."


def run_compare(base: Path, new: Path, *, threshold: float = THRESHOLD, max_samples: int = MAX_SAMPLES,
                ignore: tuple[str, ...] = (), write: bool = True) -> tuple[int, str, list[Comparison]]:
    b, n = load_run(base), load_run(new)
    cmps, only_b, only_n = compare_rows(b.rows, n.rows, threshold=threshold, max_samples=max_samples, ignore=ignore)
    text = render(cmps, b.run_id, n.run_id, threshold, only_b, only_n,
                  environment_differences(b.environment, n.environment))
    if not cmps:
        text += "\n" + no_match_hint(b.rows, n.rows, ignore) + "\n"
    if write:
        atomic_write_text(n.run_dir / f"compare-vs-{b.run_id}.md", text)
        atomic_write_text(n.run_dir / f"compare-vs-{b.run_id}.json",
                          json.dumps({"base": b.run_id, "new": n.run_id, "threshold": threshold,
                                      "comparisons": [asdict(c) for c in cmps]}, indent=1, default=str))
    if not cmps:
        return NO_COMPARABLE_ROWS, text, cmps  # not a pass: a CI gate must not read "nothing compared" as OK
    regress = any(c.verdict == "regression" for c in cmps)
    return (1 if regress else 0), text, cmps
