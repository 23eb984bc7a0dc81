"""How many requests/s can ONE load-generator process drive? Measured against a no-op server.

If a benchmark's throughput gets near this ceiling, it measures the client, not the server. The
no-op server must therefore be far cheaper per request than the client, or the run measures the
server instead. By default (`--noop-server auto`) we use the native one (nghttpd for gRPC, nginx for REST,
see targets/noop_native.py) when its binaries are installed, and fall back to the Python no-op server with a
printed warning: that one saturates its own core near 2,000 gRPC req/s on this class of machine.

Every gRPC client of the load generator is measured (`grpc.aio` and `libcurl`, see benchmarks/clients/), and
the REST one. The load generator and the server share this machine's cores, so each row also reports
the client's CPU (process, and its event-loop thread, the one that saturates first), the server's CPU
and the whole machine's, and the client CPU per request -> the rate one free core could drive.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.commands.common import ListArg, add_old_name, add_run_args, finish_run, open_run
from benchmarks.load.managers import ClosedLoop, WindowPlan, run_point
from benchmarks.requests.payloads import build_payload
from benchmarks.results.profiler import SATURATION_WARNING, profile
from benchmarks.results.schema import ResultRow, ResultWriter
from benchmarks.targets.managed import ManagedServer
from benchmarks.clients.transports import GRPC_CLIENTS, client_name, find_client, make_transport

log = logging.getLogger(__name__)
GOAL_RPS = 5000
STRETCH_RPS = 10000
SERVER_CHOICES = ("auto", "native", "python")


def choose_server(requested: str, install: bool = False) -> str:
    """-> 'native' or 'python'. auto picks native when nghttpd and nginx exist (after --install if asked)."""
    from benchmarks.targets import noop_native as native_noop

    if requested not in SERVER_CHOICES:
        raise ValueError(f"unknown --noop-server {requested!r} ({'|'.join(SERVER_CHOICES)})")
    if requested == "python":
        return "python"
    if install and native_noop.missing_binaries():
        native_noop.install()
    missing = native_noop.missing_binaries()
    if not missing:
        return "native"
    if requested == "native":
        raise FileNotFoundError("--noop-server native needs " + ", ".join(missing) + ": apt-get install "
                                + " ".join(sorted(set(missing.values()))) + " or add --install (root)")
    print(">> WARNING: native no-op server not installed (" + ", ".join(missing) + "); using the Python no-op "
          "server, which saturates its own core first: the numbers below then measure that server, not the "
          "load generator. `python -m benchmarks capacity --install` (root) or `apt-get install "
          + " ".join(sorted(set(missing.values()))) + "` fixes it.", flush=True)
    return "python"


def _start_server(kind: str, run_dir: Path):
    """-> a started no-op server with grpc_target, rest_target, label, pids and stop()."""
    if kind == "native":
        from benchmarks.targets.noop_native import NativeNoopServer

        return NativeNoopServer(batch_size=1, log_path=run_dir / "noop-native-server.log").start()
    if kind == "python":
        return ManagedServer("noop", log_path=run_dir / "noop-server.log").start()
    raise ValueError(f"capacity server must be native or python (resolve auto with choose_server), not {kind!r}")


CONCURRENCIES = (16, 64, 256)
TRANSPORTS = ("grpc", "rest")
WINDOW_S = 2.0
MAX_WINDOWS = 6


def run_capacity(w: ResultWriter, *, server: str, concurrencies=CONCURRENCIES, transports=TRANSPORTS,
                 grpc_clients: tuple[str, ...] = GRPC_CLIENTS, window_s: float = WINDOW_S,
                 max_windows: int = MAX_WINDOWS, grpc_channels: int = 1, progress: bool = True) -> list[ResultRow]:
    """Drive the no-op server `server` ('native' | 'python', see choose_server) with every client."""
    from tqdm import tqdm

    # (transport kind, client choice) pairs: every gRPC client asked for; other kinds have one client each
    plan = [(kind, find_client(kind, c).choice) for kind in transports
            for c in (grpc_clients if kind == "grpc" else (None,))]
    rows: list[ResultRow] = []
    p = build_payload("noop_model", 1, 10)
    srv = _start_server(server, w.run_dir)
    try:
        bar = tqdm(total=len(plan) * len(concurrencies), desc="capacity", disable=not progress)
        for kind, client in plan:
            for conc in concurrencies:
                bar.set_postfix_str(f"{kind}/{client_name(kind, client)} c={conc}")
                rows.append(w.append(_point(srv, p, kind, client, conc, window_s, max_windows, grpc_channels)))
                bar.update(1)
        bar.close()
    finally:
        srv.stop()
    for kind, client in plan:
        best = max((r for r in rows if r.kind == kind and r.client == client_name(kind, client)),
                   key=lambda r: r.throughput_rps, default=None)
        if best:
            print(">> " + verdict_line(best), flush=True)
    return rows


def _point(srv, p, kind: str, client: str, conc: int, window_s: float, max_windows: int,
           grpc_channels: int) -> ResultRow:
    target = srv.grpc_target if kind == "grpc" else srv.rest_target

    point = run_point(lambda: make_transport(kind, target, p.rest_path, concurrency=conc, grpc_channels=grpc_channels,
                                             grpc_client=client),
                      [p.grpc_bytes if kind == "grpc" else p.rest_body], ClosedLoop(conc),
                      WindowPlan(window_s, max_windows), server_pids=tuple(srv.pids))
    # Saturating the client is the point of this run, so its saturation warning is noise here;
    # instability and errors still warn.
    loop_pct = point.cpu.thread_pct
    row = profile(point, kind=kind, model="noop_model", mode="noop", batch_size=1, scenario="capacity",
                  server=srv.label, target=target, client=client_name(kind, client),
                  extra={"goal_rps": GOAL_RPS, "stretch_goal_rps": STRETCH_RPS,
                         # over every measured window, while only the last three make the row's latencies
                         "server_cpu_percent_approx": round(point.cpu.pids_pct, 1),
                         "grpc_channels": grpc_channels if (kind, client) == ("grpc", "aio") else None})
    row.warnings = [m for m in row.warnings if not m.startswith(SATURATION_WARNING)]
    # The ceiling is where the event-loop thread, which holds the GIL, would reach 100% of a core.
    ceiling = row.throughput_rps * 100.0 / loop_pct if loop_pct > 1 else None
    row.extra["projected_client_ceiling_rps"] = round(ceiling) if ceiling else None
    return row


def verdict_line(best: ResultRow) -> str:
    rps = best.throughput_rps
    verdict = (f"meets the {GOAL_RPS:,} req/s goal and the {STRETCH_RPS:,} stretch goal" if rps >= STRETCH_RPS else
               f"meets the {GOAL_RPS:,} req/s goal" if rps >= GOAL_RPS else f"BELOW the {GOAL_RPS:,} req/s goal")
    x = best.extra
    return (f"capacity {best.kind} ({best.client}) vs {best.server}: {rps:,.0f} req/s at concurrency "
            f"{best.concurrency}, {best.errors} errors (client CPU {best.client_cpu_percent:.0f}% of a core, event loop "
            f"{x['loop_thread_cpu_percent']:.0f}%, server ~{x['server_cpu_percent_approx']:.0f}%, machine "
            f"{x['system_cpu_percent']:.0f}% of all cores) -> {verdict}; client cost {x['client_cpu_us_per_request']} µs "
            f"CPU/request; its event loop would saturate at ~{x['projected_client_ceiling_rps']:,} req/s")


# -- `python -m benchmarks capacity` (make capacity) ---------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("How many requests/s one load-generator process drives (goal 5,000, stretch 10,000), per "
                     "client, with its CPU cost per request. The no-op server must be cheaper than the client or "
                     "the run measures the server: --noop-server auto uses nghttpd (gRPC) + nginx (REST) when "
                     "installed, else the Python no-op server with a warning.")
    p.add_argument("--concurrency", action=ListArg, item=int, default=CONCURRENCIES,
                   help="list (default " + ",".join(map(str, CONCURRENCIES)) + ")")
    p.add_argument("--transports", action=ListArg, nargs="*", default=list(TRANSPORTS), allowed=TRANSPORTS)
    p.add_argument("--grpc-clients", action=ListArg, nargs="*", default=list(GRPC_CLIENTS), allowed=GRPC_CLIENTS,
                   help="gRPC clients to measure (default: all)")
    p.add_argument("--noop-server", choices=SERVER_CHOICES, default="auto",
                   help="no-op server: native = nghttpd + nginx (Debian packages), python = benchmarks noop-server; "
                        "auto = native when installed (default)")
    p.add_argument("--install", action="store_true",
                   help="apt-get install nghttp2-server and nginx-light if missing (root)")
    add_old_name(p, "--window-s", "window_s", float)
    p.add_argument("--window-seconds", dest="window_s", type=float, default=WINDOW_S, help=f"measurement window (default {WINDOW_S:g} s)")
    p.add_argument("--max-windows", type=int, default=MAX_WINDOWS,
                   help=f"cap on windows per point (default {MAX_WINDOWS})")
    p.add_argument("--grpc-channels", type=int, default=1, help="grpc.aio client: channels (default 1)")
    add_run_args(p)


def main(args: argparse.Namespace) -> int:
    server = choose_server(args.noop_server, args.install)  # before open_run: the environment block names it
    w = open_run(args, "capacity", server_kind="noop-native" if server == "native" else "noop", server_mode="noop")
    run_capacity(w, concurrencies=args.concurrency, transports=tuple(args.transports),
                 grpc_clients=tuple(args.grpc_clients), server=server, window_s=args.window_s,
                 max_windows=args.max_windows, grpc_channels=args.grpc_channels, progress=not args.no_progress)
    finish_run(w)
    return 0
