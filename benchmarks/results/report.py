"""Markdown tables from result rows: the run report and the eager-vs-graph / gRPC-vs-REST views."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from benchmarks.measure.cpu_meter import cpu_us_per_request
from benchmarks.results.findings import findings, fmt_num, point_name
from benchmarks.results.schema import REPORT_MD, ResultRow, atomic_write_text


def fmt(v: Any) -> str:
    """A table cell: floats in the one number format (fmt_num), counts as integers with separators."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return "–" if math.isnan(v) or math.isinf(v) else fmt_num(v)
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(c).replace("|", "/") for c in r) + " |")  # a "|" would split the cell
    return "\n".join(lines)


def eager_vs_graph(rows: list[ResultRow]) -> str:
    """p50 per in-process mode side by side, with speed-up of graph/xla/savedmodel over eager."""
    steady = [r for r in rows if r.kind == "inprocess" and r.scenario == "steady"]
    first = {(r.model, r.mode, r.batch_size): r.p50_ms for r in rows
             if r.kind == "inprocess" and r.scenario == "first_call"}
    if not steady:
        return ""
    modes = [m for m in ("eager", "predict_on_batch", "graph", "xla", "savedmodel") if any(r.mode == m for r in steady)]
    by = {(r.model, r.batch_size, r.mode): r for r in steady}
    out = []
    for model, bs in sorted({(r.model, r.batch_size) for r in steady}):
        line: list[Any] = [model, bs]
        for m in modes:
            r = by.get((model, bs, m))
            line.append(r.p50_ms if r else None)
        e = by.get((model, bs, "eager"))
        g = by.get((model, bs, "graph"))
        line.append(f"{fmt_num(e.p50_ms / g.p50_ms)}×" if e and g and g.p50_ms > 0 else "–")
        line.append(" / ".join(fmt(first.get((model, m, bs))) for m in modes))
        out.append(line)
    hdr = ["model", "batch"] + [f"{m} p50 ms" for m in modes] + ["eager/graph", "first call ms (" + "/".join(modes) + ")"]
    return table(hdr, out)


def grpc_vs_rest(rows: list[ResultRow]) -> str:
    served = [r for r in rows if r.kind in ("grpc", "rest") and r.scenario == "closed"]
    if not served:
        return ""
    by: dict[tuple, dict[str, ResultRow]] = defaultdict(dict)
    for r in served:
        by[(r.server, r.model, r.batch_size, r.concurrency)][r.kind] = r
    out = []
    for (server, model, bs, conc), d in sorted(by.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2],
                                                                            kv[0][3] or 0)):
        g, h = d.get("grpc"), d.get("rest")
        out.append([server, model, bs, conc, g.p50_ms if g else None, h.p50_ms if h else None,
                    g.p99_ms if g else None, h.p99_ms if h else None,
                    g.throughput_rps if g else None, h.throughput_rps if h else None,
                    f"{fmt_num(h.p50_ms / g.p50_ms)}×" if g and h and g.p50_ms > 0 else "–",
                    g.serialize_ms if g else None, h.serialize_ms if h else None])
    text = table(["server", "model", "batch", "conc", "gRPC p50", "REST p50", "gRPC p99", "REST p99", "gRPC req/s",
                  "REST req/s", "REST/gRPC p50", "gRPC encode ms", "REST encode ms"], out)
    if any(str(server).startswith("embedded") for server, *_ in by):
        text += ("\n\nREST/gRPC on embedded-* rows is the embedded server's own ratio (grpc.aio and http.server front "
                 "ends in Python), not TF Serving's, whose guide finds gRPC slightly faster (docs/performance.md, "
                 "\"gRPC vs REST\").")
    return text


def capacity_table(rows: list[ResultRow]) -> str:
    """`capacity` rows: what one load-generator process drove, per client, and what it cost in CPU."""
    sel = [r for r in rows if r.scenario == "capacity"]
    if not sel:
        return ""
    out = []
    for r in sel:
        x = r.extra if isinstance(r.extra, dict) else {}
        goal = x.get("goal_rps") or 0
        out.append([r.kind, r.client, r.server, r.concurrency, r.throughput_rps, r.p50_ms, r.p99_ms, r.errors,
                    r.stable, r.client_cpu_percent, x.get("loop_thread_cpu_percent"),
                    x.get("server_cpu_percent_approx"), x.get("client_cpu_us_per_request"),
                    "yes" if goal and r.throughput_rps >= goal else "no"])
    return table(["kind", "client", "server", "conc", "req/s", "p50 ms", "p99 ms", "errors", "stable",
                  "client CPU %", "event-loop CPU %", "server CPU %", "client µs CPU/req", "≥ goal"], out)


def openloop_table(rows: list[ResultRow]) -> str:
    """LoadGen and Locust rows: what was asked (rate / users), what came back, and LoadGen's verdict."""
    own_tables = ("closed", "capacity", "tune", "tune-confirm")  # rows with a table of their own
    sel = [r for r in rows if r.kind == "locust" or (r.kind in ("grpc", "rest") and r.scenario not in own_tables)]
    if not sel:
        return ""
    out = []
    for r in sel:
        lg = r.extra.get("loadgen", {}) if isinstance(r.extra, dict) else {}
        asked = f"{r.target_rate:g}/s" if r.target_rate else (f"{r.concurrency} users" if r.kind == "locust" else "–")
        out.append([r.kind, r.server, r.model, r.scenario, r.batch_size, asked, r.throughput_rps, r.n, r.p50_ms,
                    r.p99_ms, r.max_ms, r.errors, lg.get("verdict", "")])
    return table(["kind", "server", "model", "scenario", "batch", "asked", "req/s", "n", "p50 ms", "p99 ms",
                  "max ms", "errors", "LoadGen verdict"], out)


def locust_workers(rows: list[ResultRow]) -> str:
    """Distributed Locust rows: the request counts side by side (master, sum over workers, Locust's stats, the
    server's Prometheus counter), then each worker's requests, CPU, saturation, sending span and loss."""
    dist = [r for r in rows if r.kind == "locust" and isinstance(r.extra, dict) and r.extra.get("worker_stats")]
    if not dist:
        return ""
    counts = [[r.scenario, *(r.extra["request_counts"].get(k) for k in ("master", "workers_sum", "locust_stats",
                                                                        "server")),
               ", ".join(f"{k} {v:+d}" for k, v in r.extra["request_count_gaps"].items()) or "none",
               r.extra.get("sending_summary", "")] for r in dist]
    workers = [[r.scenario, w["name"], sum(w["requests"].values()), w["cpu_percent"], w["main_thread_cpu_percent"],
                w["saturated"], w["sending_from_s"], w["sending_to_s"],
                f"{w['lost_how']} at +{w['lost_at_s']}s" if w["lost_at_s"] is not None else ""]
               for r in dist for w in r.extra["worker_stats"]]
    return (table(["scenario", "master", "sum over workers", "Locust stats", "server (Prometheus)", "gap",
                   "workers sending"], counts) + "\n\n" +
            table(["scenario", "worker (host:pid)", "requests", "CPU %", "main thread %", "saturated", "from s",
                   "to s", "lost"], workers))


AGREEMENT = 0.25  # Locust and our client "agree" when their throughputs are within 25 % of each other


def _limit(locust: ResultRow, ours: ResultRow | None, ratio: float | None) -> str:
    """Which side bounded the Locust figure, from the two clients' saturation flags and their agreement."""
    if locust.client_saturated is None:
        return "unknown (Locust CPU not measured)"
    if ours is None or ratio is None:
        return "Locust" if locust.client_saturated else "not Locust (no own-client row to compare)"
    if locust.client_saturated and not ours.client_saturated:
        return "Locust"
    if ours.client_saturated and not locust.client_saturated:
        return "our client"
    if locust.client_saturated:
        return "both clients"
    if abs(ratio - 1) <= AGREEMENT:
        return "server (neither client saturated; they agree)"
    # Neither generator is at its own limit, yet they disagree: on a machine they share with the server,
    # what one client spends per request is CPU the server does not get.
    return "machine CPU shared by client and server (neither client saturated; compare CPU per request)"


def locust_vs_ours(rows: list[ResultRow]) -> str:
    """Each Locust row next to our closed-loop client at the same concurrency against the same server."""
    locust = [r for r in rows if r.kind == "locust"]
    if not locust:
        return ""
    ours = {(r.kind, r.server, r.model, r.batch_size, r.concurrency): r for r in rows
            if r.kind in ("grpc", "rest") and r.scenario == "closed"}
    out = []
    for r in locust:
        transport = r.scenario.split("-")[1] if r.scenario.count("-") else ""
        o = ours.get((transport, r.server, r.model, r.batch_size, r.concurrency))
        ratio = (r.throughput_rps / o.throughput_rps if o and o.throughput_rps > 0
                 and not math.isnan(r.throughput_rps) else None)
        out.append([r.scenario, r.server, r.model, r.batch_size, r.concurrency, r.throughput_rps, r.p50_ms,
                    r.client_cpu_percent, cpu_us_per_request(r.client_cpu_percent, r.throughput_rps),
                    r.client_saturated,
                    o.throughput_rps if o else None, o.p50_ms if o else None, o.client_cpu_percent if o else None,
                    o and cpu_us_per_request(o.client_cpu_percent, o.throughput_rps),
                    o.client_saturated if o else None,
                    ratio, _limit(r, o, ratio)])
    return table(["Locust", "server", "model", "batch", "users = streams", "Locust req/s", "Locust p50 ms",
                  "Locust CPU % (all processes)", "Locust µs CPU/req", "Locust saturated", "ours req/s",
                  "ours p50 ms", "ours CPU %", "ours µs CPU/req", "ours saturated", "Locust ÷ ours", "limit"], out)


def served_table(rows: list[ResultRow]) -> str:
    served = [r for r in rows if r.kind in ("grpc", "rest", "locust", "wrk")]
    if not served:
        return ""
    out = []
    for r in served:
        load = r.concurrency if r.concurrency is not None else (f"{r.target_rate:g}/s" if r.target_rate else "–")
        verdict = r.extra.get("loadgen", {}).get("verdict") if isinstance(r.extra, dict) else None
        sm = r.extra.get("server_metrics", {}) if isinstance(r.extra, dict) else {}
        errs = f"{r.errors} (" + ", ".join(f"{k}:{v}" for k, v in sorted(r.errors_by_code.items())) + ")" \
            if r.errors else "0"
        out.append([r.kind, r.client, r.server, r.model, r.scenario, r.batch_size, load, r.n, r.p50_ms, r.p90_ms, r.p99_ms,
                    r.p999_ms, r.max_ms, r.throughput_rps, errs, r.stable, verdict or "", r.client_cpu_percent,
                    sm.get("request_latency_mean_ms"), sm.get("processed_batch_size_mean")])
    return table(["kind", "client", "server", "model", "scenario", "batch", "conc/rate", "n", "p50 ms", "p90", "p99", "p99.9",
                  "max", "req/s", "errors (by code)", "stable", "LoadGen", "client CPU %", "server mean ms",
                  "server batch mean"], out)


def _tune_rank(r: ResultRow) -> tuple:
    t = r.extra["tune"]
    rate = t["rate_under_budget"]
    return (-(rate if rate is not None else -1), r.p99_ms if r.p99_ms == r.p99_ms else math.inf, t["trial"])


def _why_lost(t: dict, r: ResultRow, best: float) -> str:
    rate = t["rate_under_budget"]
    if t["status"] == "refused":
        return f"refused: {t['reason']}"
    if not rate:
        return f"nothing within p99 {t['budget_ms']:g} ms (closest {r.target_rate:g}/s, p99 {fmt(r.p99_ms)} ms)"
    if rate < best:
        return f"{(1 - rate / best) * 100:.0f} % lower rate" + (" (below --min-rps)" if rate < t["min_rps"] else "")
    return "same rate, higher p99"


def tune_table(rows: list[ResultRow]) -> str:
    """`tune`'s trials, best first: the rate under the budget, latency and server CPU at it, why each lost."""
    trials = sorted((r for r in rows if r.scenario == "tune" and "tune" in r.extra), key=_tune_rank)
    if not trials:
        return ""
    best = trials[0].extra["tune"]["rate_under_budget"] or 0
    out = []
    for rank, r in enumerate(trials, 1):
        t = r.extra["tune"]
        why = "winner" if rank == 1 and best else _why_lost(t, r, best)
        out.append([rank, t["trial"], r.mode, t["rate_under_budget"], r.p50_ms, r.p99_ms,
                    r.extra.get("server_cpu_us_per_request"), len(t["probes"]), why])
    return table(["rank", "trial", "configuration", "req/s within budget", "p50 ms", "p99 ms", "server µs CPU/req",
                  "probes", "why it lost"], out)


def tune_confirm_table(rows: list[ResultRow]) -> str:
    conf = [r for r in rows if r.scenario == "tune-confirm"]
    body = table(["pair", "side", "configuration", "req/s within budget", "answered/s", "p50 ms", "p99 ms"],
                 [[r.extra["tune_confirm"]["pair"], r.extra["tune_confirm"]["role"], r.mode, r.target_rate,
                   r.throughput_rps, r.p50_ms, r.p99_ms] for r in conf]) if conf else ""
    verdict = conf[-1].extra["tune_confirm"].get("verdict", "") if conf else ""
    plan = next((r.extra["tune"].get("capacity_plan") for r in rows if r.extra.get("tune", {}).get("winner")), "")
    return "\n\n".join(x for x in (body, verdict, f"Capacity plan: {plan}" if plan else "") if x)


def inprocess_table(rows: list[ResultRow]) -> str:
    ip = [r for r in rows if r.kind == "inprocess" and r.scenario == "steady"]
    if not ip:
        return ""
    return table(["model", "mode", "batch", "first call ms", "n", "p50 ms", "p90", "p99", "max", "rows/s"],
                 [[r.model, r.mode, r.batch_size, r.extra.get("first_call_ms"), r.n, r.p50_ms, r.p90_ms, r.p99_ms,
                   r.max_ms, r.rows_per_s] for r in ip])


def environment_lines(env: dict) -> list[str]:
    server = env.get("server_kind") or "–"
    if env.get("server_mode"):
        server += f" ({env['server_mode']})"
    return [f"- machine: {env.get('cpu_model')} · {env.get('cpu_cores_logical')} logical cores · "
            f"{env.get('memory_gib')} GiB · GPU: {', '.join(env.get('gpus') or []) or 'none'}",
            f"- server: {server} · git {env.get('git_commit', '')[:10]}{' (dirty)' if env.get('git_dirty') else ''}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v),
            f"- command: `{env.get('command', '')}`"]


def render(run_id: str, environment: dict, rows: list[ResultRow], plots: list[Path] | None = None) -> str:
    found = findings(rows)
    parts = [f"# Benchmark run {run_id}", ""] + (["## Findings", "", found, ""] if found else [])
    parts += ["## Run", ""] + environment_lines(environment) + [""]
    for title, body in (("Tuning: trials, best first", tune_table(rows)),
                        ("Tuning: confirmation and capacity plan", tune_confirm_table(rows)),
                        ("In-process: eager vs graph vs XLA (p50, ms)", eager_vs_graph(rows)),
                        ("In-process detail", inprocess_table(rows)),
                        ("gRPC vs REST (closed loop)", grpc_vs_rest(rows)),
                        ("Load-generator capacity (against a no-op server)", capacity_table(rows)),
                        ("Open loop (LoadGen) and Locust", openloop_table(rows)),
                        ("Locust vs our client at the same concurrency", locust_vs_ours(rows)),
                        ("Locust workers and request counts", locust_workers(rows)),
                        ("All served / load-test rows", served_table(rows))):
        if body:
            parts += [f"## {title}", "", body, ""]
    warns = [(r, w) for r in rows for w in r.warnings]
    if warns:
        parts += ["## Warnings", ""] + [f"- {point_name(r)}: {w}" for r, w in warns] + [""]
    if plots:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    parts += ["Latencies are client-side, from HdrHistogram (µs resolution); closed-loop points report the "
              "last three measurement windows; LoadGen rows are open-loop with its own verdict.", ""]
    return "\n".join(parts)


def write_report(run_dir: Path, run_id: str, environment: dict, rows: list[ResultRow],
                 plots: list[Path] | None = None) -> Path:
    path = Path(run_dir) / REPORT_MD
    atomic_write_text(path, render(run_id, environment, rows, plots))
    return path
