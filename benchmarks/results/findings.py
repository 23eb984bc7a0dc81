"""The conclusions a report opens with, computed from its rows: served graph ÷ eager per API and batch, gRPC vs
REST, the best point under the run's p99 bound, and every point that is unstable, INVALID or failed, with why.
The README's results block is this same text (`python -m benchmarks readme RUN_ID`), so the two cannot disagree.
"""
from __future__ import annotations

import math
from collections import defaultdict

from benchmarks.load.loadgen import LoadGenConfig
from benchmarks.results.schema import ResultRow

API = {"grpc": "gRPC", "rest": "REST"}


def fmt_num(v: float) -> str:
    """The one number format of reports: 3 significant figures, thousands separators (1,100 · 7.33 · 0.00518)."""
    if v == 0:
        return "0"
    rounded = float(f"{v:.3g}")
    return f"{rounded:,.{max(0, 2 - math.floor(math.log10(abs(rounded))))}f}"


def _closed(rows: list[ResultRow]) -> list[ResultRow]:
    return [r for r in rows if r.kind in API and r.scenario == "closed" and r.n > 0]


def _best(rows: list[ResultRow]) -> dict[tuple, ResultRow]:
    """Highest req/s per (server, api, model, batch) over its concurrencies."""
    best: dict[tuple, ResultRow] = {}
    for r in _closed(rows):
        k = (r.server, r.kind, r.model, r.batch_size)
        if k not in best or r.throughput_rps > best[k].throughput_rps:
            best[k] = r
    return best


def _where(r: ResultRow, many_models: bool) -> str:
    return f"batch {r.batch_size}" + (f", {r.model}" if many_models else "")


def _ratio(a: ResultRow, b: ResultRow) -> str:
    return (f"{fmt_num(a.throughput_rps / b.throughput_rps)}× ({fmt_num(a.throughput_rps)} vs "
            f"{fmt_num(b.throughput_rps)} req/s at {a.concurrency} / {b.concurrency} streams)")


def graph_over_eager(rows: list[ResultRow], many: bool) -> list[str]:
    """Served graph ÷ eager: the same API, model and batch on servers whose labels differ only in the mode."""
    best, out = _best(rows), []
    for (server, kind, model, bs), g in sorted(best.items()):
        if not server.endswith("-graph"):
            continue
        e = best.get((server[: -len("graph")] + "eager", kind, model, bs))
        if e is not None and e.throughput_rps > 0:
            out.append(f"- served graph ÷ eager, {API[kind]}, {_where(g, many)}: {_ratio(g, e)}")
    return out


def grpc_vs_rest(rows: list[ResultRow], many: bool) -> list[str]:
    best, out = _best(rows), []
    for (server, kind, model, bs), g in sorted(best.items()):
        h = best.get((server, "rest", model, bs))
        if kind != "grpc" or h is None or h.throughput_rps <= 0:
            continue
        whose = " (the embedded server's APIs, not TF Serving's)" if server.startswith("embedded") else ""
        out.append(f"- gRPC ÷ REST on {server}{whose}, {_where(g, many)}: {_ratio(g, h)}")
    return out


def p99_bound_ms(rows: list[ResultRow]) -> float:
    """The run's p99 bound: the one its LoadGen Server points were judged by (LoadGen's default otherwise)."""
    for r in rows:
        bound = (r.extra.get("loadgen") or {}).get("target_latency_ms") if isinstance(r.extra, dict) else None
        if bound:
            return float(bound)
    return LoadGenConfig.target_latency_ms


def best_under_bound(rows: list[ResultRow]) -> list[str]:
    bound, per_server = p99_bound_ms(rows), defaultdict(list)
    for r in _closed(rows):
        if r.p99_ms <= bound and not r.errors:
            per_server[r.server].append(r)
    return [f"- best point with p99 ≤ {fmt_num(bound)} ms on {server}: {API[r.kind]} {r.model} batch {r.batch_size} "
            f"at {r.concurrency} stream{'s' if r.concurrency != 1 else ''}, {fmt_num(r.rows_per_s)} rows/s ({fmt_num(r.throughput_rps)} req/s), "
            f"p99 {fmt_num(r.p99_ms)} ms"
            for server, cands in sorted(per_server.items())
            for r in [max(cands, key=lambda x: x.rows_per_s)]]


def point_name(r: ResultRow) -> str:
    kind = API.get(r.kind, r.kind)
    load = f"{r.concurrency} stream{'s' if r.concurrency != 1 else ''}" if r.concurrency is not None else (
        f"LoadGen {r.scenario} {r.target_rate:g}/s" if r.target_rate else f"LoadGen {r.scenario}")
    return f"{kind} {r.server or r.mode} {r.model} batch {r.batch_size}, {load}"


def troubled_points(rows: list[ResultRow]) -> list[str]:
    """Every unstable, INVALID or failing point, with the row's own reasons."""
    out = []
    for r in rows:
        verdict = (r.extra.get("loadgen") or {}).get("verdict") if isinstance(r.extra, dict) else None
        if r.stable is False or (verdict and verdict != "VALID") or r.errors:  # the row's warnings say which
            out.append(f"- {point_name(r)}: " + ("; ".join(r.warnings) or "no reason recorded"))
    return out


def findings(rows: list[ResultRow]) -> str:
    """Markdown bullet lines (no heading); "" when the rows hold nothing to conclude from."""
    many = len({r.model for r in _closed(rows)}) > 1
    lines = graph_over_eager(rows, many) + grpc_vs_rest(rows, many) + best_under_bound(rows)
    trouble = troubled_points(rows)
    if lines or trouble:
        lines += trouble or ["- every measured point stable; every LoadGen point VALID; no failed request"]
    return "\n".join(lines)
