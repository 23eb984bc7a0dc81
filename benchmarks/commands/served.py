"""Benchmarks of a served model over gRPC or REST against any TF Serving-API endpoint.

Per model and batch size: build the request once (its encode cost measured separately), check one
real response (shape) and measure its decode cost, then
  * a closed-loop concurrency sweep (perf_analyzer's method, load/managers.py), one row per concurrency;
  * optional open-loop MLPerf LoadGen scenarios (load/loadgen.py), one row per scenario/rate.
Server-side Prometheus deltas are attached to each row when a metrics URL answers.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.commands.common import (DEFAULT_MODELS, DEFAULT_REST_TARGET, ListArg, add_calls_argument, add_old_name,
                                        add_run_args, add_target_args, finish_run, open_run, target_of)
from benchmarks.measure import prometheus
from benchmarks.load.managers import CALLS, ClosedLoop, MeasuredPoint, WindowPlan, run_point
from benchmarks.load.loadgen import SCENARIOS as LOADGEN_SCENARIOS, LoadGenConfig, run_loadgen
from benchmarks.requests.builder import RequestSpec, build_requests
from benchmarks.requests.tensors import InputOptions
from benchmarks.requests.payloads import (Payload, check_grpc_response, check_rest_response, grpc_response_decode_ms,
                       rest_response_decode_ms)
from benchmarks.clients.probe import probe
from benchmarks.commands.input_flags import add_input_arguments, input_options, served_models
from benchmarks.results.schema import ResultRow, ResultWriter
from export.contract import PROMETHEUS_PATH
from benchmarks.clients.transports import DEFAULT_GRPC_CLIENT, GRPC_CLIENTS, client_name, make_transport
from benchmarks.results.findings import fmt_num
from benchmarks.results.profiler import profile

log = logging.getLogger(__name__)


@dataclass
class ServedConfig:
    kind: str  # grpc | rest
    target: str  # host:port
    models: list[tuple[str, int]]  # (model name, n_features; 0 = build requests from the served signature)
    batch_sizes: tuple[int, ...] = (1, 8, 64)
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    window_s: float = 2.0
    max_windows: int = 10
    stability_pct: float = 10.0
    warmup_s: float = 0.5
    timeout_s: float = 30.0
    grpc_channels: int = 1
    grpc_client: str = DEFAULT_GRPC_CLIENT  # curl (libcurl HTTP/2) | aio (grpc.aio): see benchmarks/clients/
    calls: str = "auto"  # closed-loop calls: auto | sync (blocking, a thread per stream) | async (the event loop)
    server_label: str = ""  # e.g. embedded-graph, tfserving, noop
    metrics_url: str = ""  # Prometheus endpoint (REST port), optional
    loadgen_scenarios: tuple[str, ...] = ()  # single_stream | server | offline
    loadgen_qps: tuple[float, ...] = (100.0,)
    loadgen_min_duration_ms: int = 5000
    loadgen_target_latency_ms: float = 100.0
    loadgen_dir: Path | None = None
    progress: bool = True
    fixed_windows: int | None = None
    inputs: InputOptions = field(default_factory=InputOptions)  # signature, shapes, input data (requests/tensors.py)
    allow_errors: bool = False  # time the load even when the probe request fails
    extra: dict = field(default_factory=dict)


def _probe_problem(cfg: ServedConfig, p: Payload) -> tuple[str | None, float | None]:
    """One untimed request: -> (problem with it or None, response decode cost in ms). A failed probe
    stops the run with the server's message unless cfg.allow_errors (then the sweep counts the errors)."""
    res = probe(cfg.kind, cfg.target, p, cfg.timeout_s)
    if not res.ok:
        problem = f"probe request failed with {res.status}: {res.message}"
        if not cfg.allow_errors:
            raise RuntimeError(f"{cfg.kind} {p.model} b={p.batch_size} at {cfg.target}: {problem} "
                               "(nothing was timed; --allow-errors measures anyway)")
        return problem, None
    if res.body is None:
        return None, None
    if cfg.kind == "grpc":
        return check_grpc_response(res.body, p.batch_size, p.method), grpc_response_decode_ms(res.body, method=p.method)
    return check_rest_response(res.body, p.batch_size), rest_response_decode_ms(res.body)


def run_served(cfg: ServedConfig, writer: ResultWriter | None = None) -> list[ResultRow]:
    from tqdm import tqdm

    if cfg.kind not in ("grpc", "rest"):
        raise ValueError(f"kind must be grpc or rest, not {cfg.kind!r}")
    rows: list[ResultRow] = []
    n_lg = sum(len(cfg.loadgen_qps) if s == "server" else 1 for s in cfg.loadgen_scenarios)
    points = len(cfg.models) * len(cfg.batch_sizes) * (len(cfg.concurrencies) + n_lg)
    bar = tqdm(total=points, desc=f"{cfg.kind} {cfg.target}", unit="pt", disable=not cfg.progress)
    for model, n_features in cfg.models:
        built = build_requests(RequestSpec(model, cfg.kind, cfg.target, n_features, cfg.inputs))
        for bs in cfg.batch_sizes:
            p = built.payload(bs)
            problem, decode_ms = _probe_problem(cfg, p)
            if problem:
                # Keep going: the sweep will count the errors by status; the warning says why.
                log.warning("%s %s b=%d: %s", cfg.kind, model, bs, problem)
            enc_ms = p.grpc_serialize_ms if cfg.kind == "grpc" else p.rest_serialize_ms
            common = dict(kind=cfg.kind, model=model, mode=cfg.server_label or "served", batch_size=bs,
                          server=cfg.server_label, target=cfg.target, serialize_ms=enc_ms, deserialize_ms=decode_ms,
                          client=client_name(cfg.kind, cfg.grpc_client))
            payload = [p.grpc_bytes if cfg.kind == "grpc" else p.rest_body]
            for conc in cfg.concurrencies:
                bar.set_postfix_str(f"{model} b={bs} c={conc}")
                row = _closed_point(cfg, p, payload, conc, common)
                row.warnings += [problem] if problem else []
                rows.append(row)
                if writer:
                    writer.append(row)
                bar.update(1)
            for scenario in cfg.loadgen_scenarios:
                # SingleStream has no rate; Offline issues everything at once (the rate only sizes the
                # query set), so both run once. Server runs once per arrival rate.
                rates = cfg.loadgen_qps if scenario == "server" else (max(cfg.loadgen_qps),)
                for qps in rates:
                    bar.set_postfix_str(f"{model} b={bs} loadgen {scenario} {qps:g}/s")
                    rows.append(_loadgen_point(cfg, p, payload, scenario, qps, common, writer))
                    bar.update(1)
    bar.close()
    return rows


def _transport(cfg: ServedConfig, p: Payload, concurrency: int):
    return make_transport(cfg.kind, cfg.target, p.rest_path, concurrency=concurrency, timeout_s=cfg.timeout_s,
                          grpc_channels=cfg.grpc_channels, grpc_client=cfg.grpc_client, grpc_method=p.grpc_method)


def _closed_point(cfg: ServedConfig, p: Payload, payload: list[bytes], conc: int, common: dict) -> ResultRow:
    """One closed-loop point at concurrency `conc`, with the server's Prometheus delta over it."""
    plan = WindowPlan(cfg.window_s, cfg.max_windows, cfg.stability_pct, cfg.warmup_s, cfg.fixed_windows)
    manager = ClosedLoop(conc, sync_calls=CALLS[cfg.calls])
    point = run_point(lambda: _transport(cfg, p, conc), payload, manager, plan, metrics_url=cfg.metrics_url,
                      model=p.model)
    return profile(point, scenario="closed", extra=cfg.extra, **common)


def _loadgen_point(cfg: ServedConfig, p: Payload, payload: list[bytes], scenario: str, qps: float,
                   common: dict, writer: ResultWriter | None) -> ResultRow:
    label = f"{cfg.kind}-{p.model}-b{p.batch_size}-{scenario}" + (f"-{qps:g}qps" if scenario != "single_stream" else "")
    out_dir = (cfg.loadgen_dir or Path("loadgen")) / label
    lcfg = LoadGenConfig(scenario=scenario, target_qps=qps, min_duration_ms=cfg.loadgen_min_duration_ms,
                         target_latency_ms=cfg.loadgen_target_latency_ms)
    before = prometheus.scrape(cfg.metrics_url)
    res = run_loadgen(lambda: _transport(cfg, p, 64), payload, lcfg, out_dir)
    point = MeasuredPoint({}, [res.window], res.cpu, prometheus.delta(before, prometheus.scrape(cfg.metrics_url),
                                                                      p.model))
    # The row's req/s is ours (completed requests over the measured span), as on every other row; LoadGen's own
    # figure (issued queries over its duration) stays in extra so no table shows two rates for one point.
    lg = {"verdict": res.verdict, "summary_log": str(res.summary_path), "percentiles_ms": res.loadgen_percentiles_ms,
          "issued": res.issued, "achieved_qps": res.achieved_qps, "target_latency_ms": lcfg.target_latency_ms,
          "constraints": {k: v for k, v in res.summary.items() if "satisfied" in k.lower()}}
    row = profile(point, scenario=scenario, target_rate=qps if scenario != "single_stream" else None,
                  extra={"loadgen": lg, **cfg.extra}, **common)
    if res.verdict != "VALID":
        row.warnings.insert(0, f"LoadGen verdict {res.verdict}: " + ", ".join(
            f"{k}={v}" for k, v in lg["constraints"].items()))
    # measured like the row's req/s (what the server answered over LoadGen's test), in the reports' one number
    # format; the target is the point's name ("LoadGen server 100/s"), written as given
    if scenario == "server" and row.achieved_rate < 0.9 * qps:
        row.warnings.append(f"achieved {fmt_num(row.achieved_rate)}/s of target {qps:g}/s")
    if writer:
        writer.append(row)
    return row


# -- `python -m benchmarks grpc | rest | sweep | loadgen` ------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the four served commands; sweep and loadgen also take --kind (grpc and rest are the kind)."""
    d = ServedConfig
    if p.get_default("command") in ("sweep", "loadgen"):
        p.add_argument("--kind", choices=["grpc", "rest"], default="grpc")
    add_target_args(p, grpc=p.get_default("command") != "rest", rest=p.get_default("command") != "grpc")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS,
                   help="exported models (read for names and n_features; nothing is loaded)")
    p.add_argument("--models", action=ListArg, nargs="*", default=[], metavar="NAME[:N_FEATURES]",
                   help="model names to call (default: every model under --models-dir); a model without a "
                        "manifest there is described by the server's signature (see inputs below)")
    p.add_argument("--n-features", type=int, default=0,
                   help="float32 [batch, N] requests without asking the server (default: ask it)")
    p.add_argument("--batch-sizes", action=ListArg, item=int, default=d.batch_sizes,
                   help=f"list (default {_csv(d.batch_sizes)})")
    p.add_argument("--concurrency", action=ListArg, item=int, default=d.concurrencies,
                   help=f"closed-loop concurrency sweep, list (default {_csv(d.concurrencies)})")
    add_old_name(p, "--window-s", "window_s", float)
    p.add_argument("--window-seconds", dest="window_s", type=float, default=d.window_s,
                   help=f"measurement window length (default {d.window_s:g} s)")
    p.add_argument("--max-windows", type=int, default=d.max_windows,
                   help="cap on windows per point; a point without 3 agreeing windows is marked unstable "
                        f"(default {d.max_windows})")
    p.add_argument("--stability-pct", type=float, default=d.stability_pct,
                   help="3 consecutive windows must agree within this %% on throughput and mean latency "
                        f"(default {d.stability_pct:g})")
    p.add_argument("--loadgen", action=ListArg, nargs="*", default=[], allowed=LOADGEN_SCENARIOS,
                   help="also run these MLPerf LoadGen scenarios (open loop)")
    p.add_argument("--loadgen-qps", action=ListArg, item=float, default=d.loadgen_qps,
                   help="Server: Poisson arrival rates; Offline: expected qps "
                        f"(list, default {_csv(d.loadgen_qps)})")
    p.add_argument("--loadgen-duration-ms", type=int, default=d.loadgen_min_duration_ms,
                   help=f"LoadGen min duration (default {d.loadgen_min_duration_ms})")
    p.add_argument("--loadgen-latency-ms", type=float, default=d.loadgen_target_latency_ms,
                   help="Server scenario p99 latency bound for LoadGen's VALID verdict "
                        f"(default {d.loadgen_target_latency_ms:g})")
    p.add_argument("--server-label", default="", help="how to name the server in the results (e.g. embedded-graph)")
    p.add_argument("--metrics-url", default="",
                   help=f"Prometheus endpoint to diff per point, e.g. http://{DEFAULT_REST_TARGET}{PROMETHEUS_PATH}")
    p.add_argument("--grpc-channels", type=int, default=d.grpc_channels,
                   help="grpc.aio client: channels (TCP connections) to spread calls over")
    p.add_argument("--grpc-client", choices=GRPC_CLIENTS, default=d.grpc_client,
                   help=f"gRPC client (default {d.grpc_client}): curl = libcurl's HTTP/2 via pycurl, whose latencies "
                        "agree with Triton's perf_analyzer and which costs 2-3x less client CPU per call; aio = grpc.aio "
                        "(the reference implementation; its p50 ran 16 %% above perf_analyzer's at 1 stream, libcurl's 9 %%, "
                        "here, see `perf-analyzer`)")
    add_calls_argument(p)
    add_old_name(p, "--timeout-s", "timeout_s", float)
    p.add_argument("--timeout-seconds", dest="timeout_s", type=float, default=d.timeout_s,
                   help=f"per-request deadline (default {d.timeout_s:g})")
    add_input_arguments(p)
    add_run_args(p)


def main(args: argparse.Namespace) -> int:
    kind = args.command if args.command in ("grpc", "rest") else args.kind
    label = args.server_label or "external"
    models, inputs = served_models(args, kind), input_options(args)  # bad input exits here, before a run exists
    w = open_run(args, kind, server_kind=label)
    cfg = ServedConfig(kind=kind, target=target_of(args, kind), models=models, batch_sizes=args.batch_sizes,
                       concurrencies=() if args.command == "loadgen" else args.concurrency,
                       window_s=args.window_s, max_windows=args.max_windows, stability_pct=args.stability_pct,
                       timeout_s=args.timeout_s, grpc_channels=args.grpc_channels, grpc_client=args.grpc_client,
                       calls=args.calls, server_label=label, metrics_url=args.metrics_url,
                       loadgen_scenarios=tuple(args.loadgen) if args.command != "sweep" else (),
                       loadgen_qps=args.loadgen_qps, loadgen_min_duration_ms=args.loadgen_duration_ms,
                       loadgen_target_latency_ms=args.loadgen_latency_ms, loadgen_dir=w.run_dir / "loadgen",
                       progress=not args.no_progress, inputs=inputs, allow_errors=args.allow_errors)
    run_served(cfg, w)
    finish_run(w)
    return 0


def _csv(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
