"""`python -m benchmarks perf-analyzer` (make crosscheck): Triton's perf_analyzer and our gRPC clients
against the same TF Serving target, model, batch sizes and concurrencies, side by side.

perf_analyzer (C++ gRPC client, `--service-kind=tfserving -i grpc`) is an independent measurement of
the same server: its figures are written as ordinary result rows (client `perf_analyzer`; it reports
percentiles, not a histogram), ours beside them (one row per client), and the table gives
ours ÷ perf_analyzer per point for p50 and throughput. Points alternate (perf_analyzer, then each of our
clients) so drift on a shared machine hits all of them alike; --repeats runs the whole set again.
Both sides measure windows of --window-seconds until 3 agree within --stability-pct, at most --max-windows
(perf_analyzer judges p50, with --percentile=50; ours judges throughput and mean latency).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from benchmarks.requests.input_data import load_document
from benchmarks.clients.transports import GRPC_CLIENTS, client_name
from benchmarks.commands.common import (DEFAULT_MODELS, ListArg, add_old_name, add_run_args, add_server_args,
                                        finish_run, open_run)
from benchmarks.commands.input_flags import add_input_arguments, input_options, served_models
from benchmarks.measure import perf_analyzer_tool as tool
from benchmarks.results.report import table
from benchmarks.results.schema import ResultRow, ResultWriter
from benchmarks.targets.managed import start_for_run

CLIENT = "perf_analyzer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    # no noop: perf_analyzer starts by asking for the model's metadata, which the no-op servers do not answer
    add_server_args(p, "none: measure --target (default); embedded: start the embedded server on free ports",
                    servers=("none", "embedded"), default="none", rest=False)
    p.add_argument("--models", nargs=1, default=[], metavar="NAME",
                   help="model to measure (default: the first under --models-dir)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS, help="exported models (names, manifests)")
    p.add_argument("--n-features", type=int, default=0, help=argparse.SUPPRESS)  # served_models reads it
    p.add_argument("--batch-sizes", action=ListArg, item=int, default=(1,), help="list (default 1)")
    p.add_argument("--concurrency", action=ListArg, item=int, default=(1, 8), help="list (default 1,8)")
    p.add_argument("--clients", action=ListArg, nargs="*", default=list(GRPC_CLIENTS), allowed=GRPC_CLIENTS,
                   help="our gRPC clients to run beside it (default: all)")
    add_old_name(p, "--window-s", "window_s", float)
    p.add_argument("--window-seconds", dest="window_s", type=float, default=2.0, help="measurement window, both tools (default 2 s)")
    p.add_argument("--max-windows", type=int, default=10, help="cap on windows per point, both tools (default 10)")
    p.add_argument("--stability-pct", type=float, default=10.0, help="windows agree within this %% (default 10)")
    p.add_argument("--repeats", type=int, default=1, help="run every point this many times (default 1)")
    p.add_argument("--server-label", default="external", help="how to name the server in the rows")
    p.add_argument("--install", action="store_true",
                   help=f"install perf_analyzer if missing: pip {tool.TRITONCLIENT} {tool.CUDA_RUNTIME}, "
                        f"apt-get {tool.APT_PACKAGE} (root)")
    add_input_arguments(p)
    add_run_args(p)


def pa_row(point: tool.PaPoint, model: str, target: str, label: str) -> ResultRow:
    """perf_analyzer's figures as a result row: percentiles and rates only (it exports no histogram)."""
    row = ResultRow(kind="grpc", model=model, mode=label, batch_size=point.batch_size, scenario="closed",
                    concurrency=point.concurrency, n=point.request_count, stable=point.stable, server=label,
                    client=CLIENT, target=target)
    row.p50_ms, row.p90_ms = point.p50_us / 1000, point.p90_us / 1000
    row.p95_ms, row.p99_ms = point.p95_us / 1000, point.p99_us / 1000
    row.rows_per_s = point.infer_per_s
    row.throughput_rps = point.infer_per_s / point.batch_size
    if not point.stable:
        row.warnings.append("unstable: perf_analyzer found no 3 agreeing windows; p50 and rate are its last "
                            "3 windows' median p50 and mean rate (p90-p99 unknown)")
    row.extra = {"perf_analyzer": {"command": " ".join(point.command), "avg_grpc_us": point.avg_grpc_us,
                                   "stabilised_on": "p50", "output_tail": point.output_tail}}
    return row


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs and not (math.isnan(ours) or math.isnan(theirs)) else math.nan


def _pairs(rows: list[ResultRow]) -> list[tuple[ResultRow, ResultRow]]:
    """(ours, perf_analyzer's) for every row of ours: rows come in measurement order, a perf_analyzer
    row first, then ours for the same point."""
    out, pa = [], None
    for r in rows:
        if r.client == CLIENT:
            pa = r
        elif pa is not None and (pa.batch_size, pa.concurrency) == (r.batch_size, r.concurrency):
            out.append((r, pa))
    return out


def crosscheck_table(rows: list[ResultRow]) -> str:
    """Per point and repeat: each of our clients beside perf_analyzer, with ours ÷ theirs; then the
    median ratio per point and client over the repeats (stable pairs only, when there are any)."""
    pairs = _pairs(rows)
    each = [[r.batch_size, r.concurrency, r.client, r.p50_ms, pa.p50_ms, _ratio(r.p50_ms, pa.p50_ms),
             f"{r.throughput_rps:,.0f}", f"{pa.throughput_rps:,.0f}", _ratio(r.throughput_rps, pa.throughput_rps),
             "" if r.stable and pa.stable else "unstable"] for r, pa in pairs]
    groups: dict[tuple, list[tuple[ResultRow, ResultRow]]] = {}
    for r, pa in pairs:
        groups.setdefault((r.batch_size, r.concurrency, r.client), []).append((r, pa))
    summary = []
    for (bs, conc, client), group in groups.items():
        stable = [(r, pa) for r, pa in group if r.stable and pa.stable]
        use = stable or group
        summary.append([bs, conc, client, len(group), len(stable),
                        float(np.nanmedian([_ratio(r.p50_ms, pa.p50_ms) for r, pa in use])),
                        float(np.nanmedian([_ratio(r.throughput_rps, pa.throughput_rps) for r, pa in use]))])
    return "\n\n".join([
        table(["batch", "conc", "our client", "our p50 ms", "PA p50 ms", "p50 ours/PA", "our req/s", "PA req/s",
               "req/s ours/PA", "note"], each),
        "Median over repeats (stable pairs when any):",
        table(["batch", "conc", "our client", "pairs", "stable pairs", "p50 ours/PA", "req/s ours/PA"], summary)])


def _measure_ours(args, model: str, n_features: int, inputs, bs: int, conc: int, client: str, w: ResultWriter):
    from benchmarks.commands.served import ServedConfig, run_served

    run_served(ServedConfig(kind="grpc", target=args.target, models=[(model, n_features)], batch_sizes=(bs,),
                            concurrencies=(conc,), window_s=args.window_s, max_windows=args.max_windows,
                            stability_pct=args.stability_pct, grpc_client=client, server_label=args.server_label,
                            progress=False, inputs=inputs, allow_errors=args.allow_errors), w)


def main(args: argparse.Namespace) -> int:
    try:
        pa = tool.install() if args.install else tool.find()
    except tool.PerfAnalyzerMissing as e:
        print(f"error: {e}")
        return 2
    # an external server's unknown model ends the command here, before a run directory exists
    picked = served_models(args, "grpc")[0] if args.server == "none" else None
    inputs = input_options(args)
    # perf_analyzer reads only its own input-data format; with a TF Serving body it sends random data
    pa_input = inputs.input_data if inputs.input_data and "data" in load_document(inputs.input_data) else None
    w = open_run(args, "crosscheck", server_kind=args.server_label)
    server = start_for_run(args, w.run_dir, tuple(args.models))
    try:
        if server is not None:
            args.target, args.server_label = server.grpc_target, server.label
            picked = served_models(args, "grpc")[0]
        _crosscheck(pa, args, picked, inputs, pa_input, w)
    finally:
        if server is not None:
            server.stop()
    text = crosscheck_table(w.rows)
    (w.run_dir / "crosscheck.md").write_text(f"# perf_analyzer cross-check, run {w.run_id}\n\n{text}\n")
    print(text)
    finish_run(w)
    return 0


def _crosscheck(pa: tool.PerfAnalyzer, args: argparse.Namespace, picked: tuple[str, int], inputs,
                pa_input: Path | None, w: ResultWriter) -> None:
    model, n_features = picked
    for rep in range(args.repeats):
        for bs in args.batch_sizes:
            for conc in args.concurrency:
                print(f">> [{rep + 1}/{args.repeats}] b={bs} c={conc}: perf_analyzer, then "
                      + ", ".join(client_name("grpc", c) for c in args.clients), flush=True)
                point = tool.run_point(pa, target=args.target, model=model, batch_size=bs, concurrency=conc,
                                       window_ms=int(args.window_s * 1000), max_trials=args.max_windows,
                                       stability_pct=args.stability_pct, signature=inputs.signature,
                                       shapes=inputs.shapes, input_data=pa_input, out_dir=w.run_dir / "perf_analyzer",
                                       label=f"-r{rep + 1}" if args.repeats > 1 else "")
                w.append(pa_row(point, model, args.target, args.server_label))
                for client in args.clients:
                    _measure_ours(args, model, n_features, inputs, bs, conc, client, w)
