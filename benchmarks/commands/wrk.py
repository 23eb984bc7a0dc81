"""Cross-check our REST client against wrk (C, epoll) at the same concurrency: both p50s side by side,
with an explanation of the gap. wrk is driven by measure/wrk_tool.py (a Lua script posts the exact JSON body
our client sends). If wrk is missing we say so (apt-get install wrk) and still measure our side; --install
tries apt-get itself. `perf-analyzer` (make crosscheck) runs the same comparison over its whole grid.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.commands.common import (DEFAULT_MODELS, add_old_name, add_run_args, add_server_args, finish_run,
                                        open_run)
from benchmarks.load.managers import ClosedLoop, WindowPlan, run_point
from benchmarks.measure.cpu_meter import cpu_us_per_request
from benchmarks.requests.discovery import discover_models
from benchmarks.requests.payloads import build_payload
from benchmarks.results.profiler import profile
from benchmarks.results.schema import ResultRow
from benchmarks.targets.managed import start_for_run
from benchmarks.clients.transports import RestTransport
from benchmarks.measure import wrk_tool

GAP_PCT = 15.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--model", default="", help="model (default: first exported; any name for --server noop)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8, help="connections for wrk = in-flight requests for ours")
    add_old_name(p, "--duration-s", "duration_s", int)
    p.add_argument("--duration-seconds", dest="duration_s", type=int, default=10, help="wrk run length (default 10)")
    add_server_args(p, "start this server for the check (none: use --rest-target)", grpc=False)
    p.add_argument("--install", action="store_true", help=f"apt-get install {wrk_tool.APT_PACKAGE} if it is missing")
    add_run_args(p)


def explain_gap(ours: ResultRow, wrk_row: ResultRow) -> list[str]:
    wrk_p50 = wrk_row.p50_ms
    gap = (ours.p50_ms / wrk_p50 - 1) * 100 if wrk_p50 > 0 else float("nan")
    lines = [f"our p50 is {gap:+.1f}% vs wrk"]
    if abs(gap) <= GAP_PCT:
        lines.append(f"within {GAP_PCT:g}%: both clients see the same server latency")
        return lines
    per_req_us = cpu_us_per_request(ours.client_cpu_percent, ours.throughput_rps) or float("nan")
    lines += [f"gap above {GAP_PCT:g}%. Why it can differ:",
              f"- client cost: our Python client (asyncio streams) spends ~{per_req_us:.0f} µs of CPU per request "
              f"({ours.client_cpu_percent:.0f}% of a core); wrk's C event loop spends a few µs. On a loaded "
              "2-core machine that CPU is taken from the server, and queueing inside our event loop is "
              "counted in our latency.",
              "- both run a closed loop with the same number of connections, so at equal server speed the "
              "throughputs should match; compare req/s to see which side is the bottleneck.",
              "- wrk's histogram starts its clock when the request is written; ours when the coroutine "
              "sends, so event-loop scheduling delay is included in ours."]
    if ours.client_saturated:
        lines.append("- our client was near CPU saturation: its latency includes its own queueing.")
    if wrk_row.throughput_rps > 1.15 * ours.throughput_rps:
        lines.append(f"- here wrk pushed {wrk_row.throughput_rps:.0f} req/s vs our {ours.throughput_rps:.0f}: with the "
                     "same connections, the slower client is the bottleneck (ours), so its p50 is the less "
                     "trustworthy one at this concurrency.")
    for name, row in (("wrk", wrk_row), ("ours", ours)):
        if row.p50_ms > 0 and row.p90_ms / row.p50_ms > 8 and row.p90_ms > 30:
            lines.append(f"- {name} shows a bimodal distribution (p90 {row.p90_ms:.0f} ms vs p50 {row.p50_ms:.1f} ms): "
                         "a ~40 ms mode is the Nagle + delayed-ACK stall of a request or response written in "
                         "two TCP segments; which requests hit it depends on how each client writes, so it "
                         "shifts percentiles between clients.")
    return lines


def _measure_ours(target: str, label: str, model: str, p, args: argparse.Namespace) -> ResultRow:
    """Our REST client, closed loop at the same concurrency and duration wrk gets."""

    point = run_point(lambda: RestTransport(target, p.rest_path, connections=args.concurrency), [p.rest_body],
                      ClosedLoop(args.concurrency), WindowPlan(args.duration_s / 5, fixed_windows=5, warmup_s=1.0))
    return profile(point, kind="rest", model=model, mode=label, batch_size=args.batch_size,
                   scenario="wrk-crosscheck", server=label, target=target)


def wrk_row(s: wrk_tool.WrkPoint, *, model: str, label: str, target: str, batch_size: int, concurrency: int,
            scenario: str, kind: str = "wrk") -> ResultRow:
    """wrk's figures as a result row: percentiles and rates only, it keeps no histogram we can store."""
    return ResultRow(kind=kind, model=model, mode=label, batch_size=batch_size, scenario=scenario,
                     concurrency=concurrency, n=s.requests, errors=sum(s.errors.values()), errors_by_code=s.errors,
                     p50_ms=s.p50_us / 1000, p90_ms=s.p90_us / 1000, p95_ms=s.p95_us / 1000, p99_ms=s.p99_us / 1000,
                     max_ms=s.max_us / 1000, mean_ms=s.mean_us / 1000, throughput_rps=s.requests_per_s,
                     rows_per_s=s.requests_per_s * batch_size, duration_s=s.duration_s, server=label, target=target,
                     client="wrk", extra={"wrk": " ".join(s.command),
                                          "note": "wrk keeps no raw histogram we can store; percentiles from its done()"})


def _measure_wrk(wrk: str, target: str, label: str, model: str, p, args: argparse.Namespace, work: Path) -> ResultRow:
    s = wrk_tool.run_point(wrk, url=f"http://{target}{p.rest_path}", body=p.rest_body, connections=args.concurrency,
                           duration_s=args.duration_s, work=work)
    return wrk_row(s, model=model, label=label, target=target, batch_size=args.batch_size,
                   concurrency=args.concurrency, scenario="wrk-crosscheck")


def _print_side_by_side(ours_row: ResultRow, wrow: ResultRow) -> None:
    print(f"\n{'client':<8}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'req/s':>10}{'errors':>8}")
    for name, row in (("ours", ours_row), ("wrk", wrow)):
        print(f"{name:<8}{row.p50_ms:>10.3f}{row.p90_ms:>10.3f}{row.p99_ms:>10.3f}{row.throughput_rps:>10.0f}"
              f"{row.errors:>8}")
    print("\n".join(ours_row.extra["explanation"]))


def main(args: argparse.Namespace) -> int:
    infos = discover_models(args.models_dir)
    model = args.model or (infos[0].name if infos else "noop_model")
    n_features = next((i.n_features for i in infos if i.name == model), 10)
    try:
        wrk = wrk_tool.find(args.install)
    except wrk_tool.WrkMissing as e:
        wrk = None
        print(f"!! {e}. Only our client is measured.", flush=True)
    w = open_run(args, "wrk", server_kind=args.server, server_mode=args.mode)
    server = None
    try:
        server = start_for_run(args, w.run_dir, (model,))
        target, label = (server.rest_target, server.label) if server is not None else (args.rest_target, "external")
        p = build_payload(model, args.batch_size, n_features)
        ours_row = _measure_ours(target, label, model, p, args)
        w.append(ours_row)
        if wrk:
            time.sleep(0.5)
            wrow = _measure_wrk(wrk, target, label, model, p, args, w.run_dir / "wrk")
            ours_row.extra["explanation"] = explain_gap(ours_row, wrow)
            w.append(wrow)
            w.flush()
            _print_side_by_side(ours_row, wrow)
        else:
            print(f"ours: p50 {ours_row.p50_ms:.3f} ms, {ours_row.throughput_rps:.0f} req/s (wrk missing)")
    finally:
        if server:
            server.stop()
    finish_run(w, plots=False)
    return 0 if wrk else 3
