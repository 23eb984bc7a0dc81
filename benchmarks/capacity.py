"""How many requests/s can ONE load-generator process drive? Measured against the no-op server.

If a benchmark's throughput gets near this ceiling, it measures the client, not the server. The
no-op server runs in its own process; both share this machine's cores, so we also report the
server's CPU and the machine's: on a 2-core box the ceiling is often set by the two fighting for CPU.
"""
from __future__ import annotations

import asyncio
import logging

import psutil

from .engine import CPU_SATURATION_PCT, run_closed_loop
from .payloads import build_payload
from .results import ResultRow, ResultWriter
from .servers import ManagedServer
from .transports import make_transport

log = logging.getLogger(__name__)
GOAL_RPS = 5000
STRETCH_RPS = 10000


def run_capacity(w: ResultWriter, *, concurrencies=(16, 64, 256), transports=("grpc", "rest"), window_s: float = 2.0,
                 max_windows: int = 6, grpc_channels: int = 1, progress: bool = True) -> list[ResultRow]:
    from tqdm import tqdm

    rows = []
    p = build_payload("noop_model", 1, 10)
    with ManagedServer("noop", log_path=w.run_dir / "noop-server.log") as srv:
        sproc = psutil.Process(srv.proc.pid)

        def server_cpu_s() -> float:
            # the no-op REST endpoint runs in a forked child: count the whole process tree
            total = 0.0
            for pr in [sproc, *sproc.children(recursive=True)]:
                try:
                    t = pr.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            return total
        bar = tqdm(total=len(transports) * len(concurrencies), desc="capacity", disable=not progress)
        for kind in transports:
            for conc in concurrencies:
                target = srv.grpc_target if kind == "grpc" else srv.rest_target
                c0 = server_cpu_s()

                async def point():
                    t = make_transport(kind, target, p.rest_path, concurrency=conc, grpc_channels=grpc_channels)
                    try:
                        return await run_closed_loop(t, [p.grpc_bytes if kind == "grpc" else p.rest_body], conc,
                                                     window_s=window_s, max_windows=max_windows)
                    finally:
                        await t.close()

                r = asyncio.run(point())
                # approximate: server CPU over the whole point (warm-up + all windows) / that wall time
                server_cpu = 100.0 * (server_cpu_s() - c0) / max(r.wall_s, 1e-9)
                row = ResultRow.from_histogram(r.hist, duration_s=r.duration_s, errors=r.n_errors,
                                               errors_by_code=r.errors, kind=kind, model="noop_model", mode="noop",
                                               batch_size=1, scenario="capacity", concurrency=conc, stable=r.stable,
                                               client_cpu_percent=round(r.client_cpu_pct, 1),
                                               client_saturated=r.client_cpu_pct >= CPU_SATURATION_PCT,
                                               server="noop", target=target)
                row.achieved_rate = row.throughput_rps
                row.warnings = r.warnings()
                # CPU the client spends per request -> what it could drive with one full core to itself
                # (on this shared 2-core box the server takes the other core, so this is a ceiling).
                us_per_req = (r.client_cpu_pct / 100.0) * 1e6 / row.throughput_rps if row.throughput_rps else None
                row.extra = {"server_cpu_percent_approx": round(server_cpu, 1),
                             "client_cpu_us_per_request": round(us_per_req, 1) if us_per_req else None,
                             "projected_client_ceiling_rps": round(1e6 / us_per_req) if us_per_req else None,
                             "system_cpu_percent": round(r.system_cpu_pct, 1), "goal_rps": GOAL_RPS,
                             "window_throughputs": r.window_throughputs, "grpc_channels": grpc_channels}
                rows.append(w.append(row))
                bar.update(1)
        bar.close()
    for kind in transports:
        best = max((r for r in rows if r.kind == kind), key=lambda r: r.throughput_rps, default=None)
        if best:
            verdict = ("meets the 5,000 req/s goal" if best.throughput_rps >= GOAL_RPS else
                       f"BELOW the {GOAL_RPS:,} req/s goal")
            print(f">> capacity {kind}: {best.throughput_rps:,.0f} req/s at concurrency {best.concurrency} "
                  f"(client CPU {best.client_cpu_percent:.0f}% of a core, server ~{best.extra['server_cpu_percent_approx']:.0f}%, "
                  f"machine {best.extra['system_cpu_percent']:.0f}%) -> {verdict}; client cost "
                  f"{best.extra['client_cpu_us_per_request']} µs CPU/request = ceiling ~"
                  f"{best.extra['projected_client_ceiling_rps']:,} req/s on one free core", flush=True)
    return rows
