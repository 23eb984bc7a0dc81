"""`python -m benchmarks perf-analyzer` (make crosscheck): our clients beside independent load generators
against the same TF Serving target, model, batch sizes and concurrencies, with ONE table of the outcome.

gRPC: Triton's perf_analyzer (C++ gRPC client, `--service-kind=tfserving -i grpc`) beside our gRPC client(s).
REST: wrk (C, epoll; measure/wrk_tool.py), posting the exact JSON body our REST client sends, beside our
REST client. The independent tools' figures are written as ordinary result rows (client `perf_analyzer` /
`wrk`; they report percentiles, not a histogram), ours beside them, every row tagged with its repeat.
Within a repeat every point alternates theirs, then ours, so drift on a shared machine hits both alike;
--repeats runs the whole grid again (≥ 3 pairs make the medians worth reading). perf_analyzer and ours
measure windows of --window-seconds until 3 agree within --stability-pct, at most --max-windows (perf_analyzer
judges p50, with --percentile=50; ours judges throughput and mean latency); wrk runs a fixed
3 × --window-seconds.

--image-request adds one point whose request carries as many float32 values as a 224×224×3 image
(rows = 150,528 ÷ the model's features per row; about 600 KB on the wire): the size where a client's
per-byte costs show. With a models directory holding the model, each repeat also times the SavedModel's
serving signature in this process (batch 1), so the table can give served ÷ in-process from the same run.
The table is benchmarks/results/crosscheck.py's.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from benchmarks.requests.input_data import load_document
from benchmarks.requests.payloads import build_payload
from benchmarks.clients.transports import DEFAULT_GRPC_CLIENT, GRPC_CLIENTS, client_name
from benchmarks.commands.common import (DEFAULT_MODELS, ListArg, add_calls_argument, add_old_name, add_run_args,
                                        add_server_args, finish_run, open_run)
from benchmarks.commands.input_flags import add_input_arguments, input_options, served_models
from benchmarks.commands.wrk import wrk_row
from benchmarks.measure import perf_analyzer_tool as tool
from benchmarks.measure import prometheus, wrk_tool
from benchmarks.results.crosscheck import crosscheck_table
from benchmarks.results.schema import ResultRow, ResultWriter
from benchmarks.targets.managed import start_for_run
from export.contract import PROMETHEUS_PATH

CLIENT = "perf_analyzer"
IMAGE_VALUES = 224 * 224 * 3  # one 224×224×3 float32 image: 602,112 bytes of tensor content
APIS = ("grpc", "rest")


def add_arguments(p: argparse.ArgumentParser) -> None:
    # no noop: perf_analyzer starts by asking for the model's metadata, which the no-op servers do not answer
    add_server_args(p, "none: measure --target (default); embedded: start the embedded server on free ports",
                    servers=("none", "embedded"), default="none", rest=False)
    p.add_argument("--rest-target", default="",
                   help="REST host:port with --server none (default: none, REST is not checked)")
    p.add_argument("--apis", action=ListArg, default=APIS, allowed=APIS,
                   help="which APIs to cross-check, list of grpc,rest (default both; rest needs a REST target)")
    p.add_argument("--models", nargs=1, default=[], metavar="NAME",
                   help="model to measure (default: the first under --models-dir)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS, help="exported models (names, manifests)")
    p.add_argument("--n-features", type=int, default=0, help=argparse.SUPPRESS)  # served_models reads it
    p.add_argument("--batch-sizes", action=ListArg, item=int, default=(1,), help="list (default 1)")
    p.add_argument("--image-request", action="store_true",
                   help="add one point whose request holds 224x224x3 float32 values (about 600 KB)")
    p.add_argument("--concurrency", action=ListArg, item=int, default=(1, 8), help="list (default 1,8)")
    p.add_argument("--clients", action=ListArg, nargs="*", default=[DEFAULT_GRPC_CLIENT], allowed=GRPC_CLIENTS,
                   help=f"our gRPC clients to run beside perf_analyzer (default {DEFAULT_GRPC_CLIENT})")
    add_old_name(p, "--window-s", "window_s", float)
    p.add_argument("--window-seconds", dest="window_s", type=float, default=2.0,
                   help="measurement window, every tool (default 2 s)")
    p.add_argument("--max-windows", type=int, default=10, help="cap on windows per point, both tools (default 10)")
    p.add_argument("--stability-pct", type=float, default=10.0, help="windows agree within this %% (default 10)")
    p.add_argument("--repeats", type=int, default=1, help="run every point this many times (default 1)")
    add_calls_argument(p)
    p.add_argument("--no-inprocess", action="store_true",
                   help="skip timing the SavedModel signature call in this process (the served ÷ in-process line)")
    p.add_argument("--server-label", default="external", help="how to name the server in the rows")
    p.add_argument("--install", action="store_true",
                   help=f"install what is missing: pip {tool.TRITONCLIENT} {tool.CUDA_RUNTIME}, "
                        f"apt-get {tool.APT_PACKAGE} {wrk_tool.APT_PACKAGE} (root)")
    add_input_arguments(p)
    add_run_args(p)


def pa_row(point: tool.PaPoint, model: str, target: str, label: str, repeat: int = 1) -> ResultRow:
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
                                   "stabilised_on": "p50", "output_tail": point.output_tail},
                 "repeat": repeat}
    return row


def _measure_ours(args, kind: str, target: str, picked: tuple[str, int], inputs, bs: int, conc: int, client: str,
                  rep: int, w: ResultWriter) -> None:
    from benchmarks.commands.served import ServedConfig, run_served

    run_served(ServedConfig(kind=kind, target=target, models=[picked], batch_sizes=(bs,),
                            concurrencies=(conc,), window_s=args.window_s, max_windows=args.max_windows,
                            stability_pct=args.stability_pct, grpc_client=client, calls=args.calls,
                            server_label=args.server_label,
                            progress=False, inputs=inputs, allow_errors=args.allow_errors, extra={"repeat": rep},
                            metrics_url=args.metrics_url), w)


def _tools(args: argparse.Namespace) -> tuple[tool.PerfAnalyzer | None, str | None]:
    """perf_analyzer for gRPC and wrk for REST, as --apis asks (installed first with --install)."""
    pa = (tool.install() if args.install else tool.find()) if "grpc" in args.apis else None
    wrk = wrk_tool.find(args.install) if "rest" in args.apis else None
    return pa, wrk


def main(args: argparse.Namespace) -> int:
    if "rest" in args.apis and args.server == "none" and not args.rest_target:
        args.apis = tuple(a for a in args.apis if a != "rest")  # an external server without a REST target
    try:
        pa, wrk = _tools(args)
    except (tool.PerfAnalyzerMissing, wrk_tool.WrkMissing) as e:
        print(f"error: {e}")
        return 2
    # an external server's unknown model ends the command here, before a run directory exists
    picked = served_models(args, "grpc")[0] if args.server == "none" else None
    inputs = input_options(args)
    w = open_run(args, "crosscheck", server_kind=args.server_label)
    server = start_for_run(args, w.run_dir, tuple(args.models))
    try:
        if server is not None:
            args.target, args.rest_target, args.server_label = server.grpc_target, server.rest_target, server.label
            picked = served_models(args, "grpc")[0]
        # the embedded server's per-stage metrics (and any TF Serving's request/runtime latency) per point
        args.metrics_url = f"http://{args.rest_target}{PROMETHEUS_PATH}" if args.rest_target else ""
        _crosscheck(pa, wrk, args, picked, inputs, w)
    finally:
        if server is not None:
            server.stop()
    text = crosscheck_table(w.rows, args.server_label)
    (w.run_dir / "crosscheck.md").write_text(f"# Cross-check against independent tools, run {w.run_id}\n\n"
                                             f"Server {args.server_label}, model {picked[0]}.\n\n{text}\n")
    print(text)
    finish_run(w)
    return 0


def _batch_sizes(args: argparse.Namespace, n_features: int) -> list[int]:
    sizes = list(args.batch_sizes)
    if args.image_request:
        if n_features <= 0:
            raise SystemExit("error: --image-request needs the model's features per row (a manifest under "
                             "--models-dir, or --models NAME:N_FEATURES)")
        sizes.append(math.ceil(IMAGE_VALUES / n_features))
    return sizes


def _crosscheck(pa: tool.PerfAnalyzer | None, wrk: str | None, args: argparse.Namespace, picked: tuple[str, int],
                inputs, w: ResultWriter) -> None:
    model, n_features = picked
    # perf_analyzer reads only its own input-data format; with a TF Serving body it sends random data
    pa_input = inputs.input_data if inputs.input_data and "data" in load_document(inputs.input_data) else None
    for rep in range(1, args.repeats + 1):
        if not args.no_inprocess:
            _measure_inprocess(args, model, rep, w)
        for bs in _batch_sizes(args, n_features):
            for conc in args.concurrency:
                if pa is not None:
                    print(f">> [{rep}/{args.repeats}] gRPC b={bs} c={conc}: perf_analyzer, then "
                          + ", ".join(client_name("grpc", c) for c in args.clients), flush=True)
                    before = prometheus.scrape(args.metrics_url)
                    point = tool.run_point(pa, target=args.target, model=model, batch_size=bs, concurrency=conc,
                                           window_ms=int(args.window_s * 1000), max_trials=args.max_windows,
                                           stability_pct=args.stability_pct, signature=inputs.signature,
                                           shapes=inputs.shapes, input_data=pa_input,
                                           out_dir=w.run_dir / "perf_analyzer", label=f"-r{rep}")
                    w.append(_with_server_metrics(pa_row(point, model, args.target, args.server_label, rep),
                                                  before, args.metrics_url, model))
                    for client in args.clients:
                        _measure_ours(args, "grpc", args.target, picked, inputs, bs, conc, client, rep, w)
                if wrk is not None:
                    print(f">> [{rep}/{args.repeats}] REST b={bs} c={conc}: wrk, then {client_name('rest')}",
                          flush=True)
                    _measure_wrk(wrk, args, picked, bs, conc, rep, w)
                    _measure_ours(args, "rest", args.rest_target, picked, inputs, bs, conc, "", rep, w)


def _measure_wrk(wrk: str, args: argparse.Namespace, picked: tuple[str, int], bs: int, conc: int, rep: int,
                 w: ResultWriter) -> None:
    """wrk posting the body our REST client sends for this point (build_payload is seeded: same bytes)."""
    model, n_features = picked
    p = build_payload(model, bs, n_features, codec_reps=1)
    before = prometheus.scrape(args.metrics_url)
    s = wrk_tool.run_point(wrk, url=f"http://{args.rest_target}{p.rest_path}", body=p.rest_body, connections=conc,
                           duration_s=3 * args.window_s, work=w.run_dir / "wrk", label=f"-b{bs}-c{conc}-r{rep}")
    row = wrk_row(s, model=model, label=args.server_label, target=args.rest_target, batch_size=bs,
                  concurrency=conc, scenario="closed", kind="rest")
    row.extra["repeat"] = rep
    w.append(_with_server_metrics(row, before, args.metrics_url, model))


def _with_server_metrics(row: ResultRow, before, url: str, model: str) -> ResultRow:
    """The server's Prometheus delta over an independent tool's point, as our rows carry theirs."""
    row.extra["server_metrics"] = prometheus.delta(before, prometheus.scrape(url), model)
    return row


def _measure_inprocess(args: argparse.Namespace, model: str, rep: int, w: ResultWriter) -> None:
    """The SavedModel's serving signature called in this process at batch 1 (what served ÷ in-process divides by)."""
    from benchmarks.commands.inprocess import InprocessConfig, run_inprocess

    try:
        rows = run_inprocess(InprocessConfig(models_dir=args.models_dir, models=(model,), modes=("savedmodel",),
                                             batch_sizes=(1,), budget_s=2.0, warmup_iters=200,
                                             progress=False))
    except FileNotFoundError as e:  # a model only the external server has: no in-process figure
        print(f">> no in-process figure: {e}", flush=True)
        args.no_inprocess = True
        return
    for row in rows:
        row.extra["repeat"] = rep
        w.append(row)
