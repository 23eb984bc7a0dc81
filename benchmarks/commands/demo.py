"""`python -m benchmarks demo` (make demo): the main job end to end, in under ~10 minutes.

1. Export the models if <models-dir> is empty (export.pipeline).
2. In-process: eager / predict_on_batch / graph / XLA / SavedModel at a few batch sizes.
3. Embedded server in graph mode, then in eager mode (subprocess `python -m serving serve`), each:
   gRPC and REST closed-loop sweeps, a LoadGen Server-scenario point, and a short Locust run.
4. Tables: eager vs graph (in-process and served), gRPC vs REST; plots; servers stopped.
5. The findings report.md opens with, and the command that writes them into README.md.
"""
from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from benchmarks.commands.common import (DEFAULT_MODELS, DEFAULT_RESULTS, SERVER_MODES, ListArg, add_run_args,
                                        add_serve_args_option, finish_run, open_run)
from benchmarks.requests.discovery import discover_models
from benchmarks.results.findings import findings
from benchmarks.results.report import eager_vs_graph, grpc_vs_rest, openloop_table, table
from benchmarks.targets.managed import ManagedServer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--server-modes", action=ListArg, default=("graph", "eager"), allowed=SERVER_MODES)
    p.add_argument("--skip-locust", action="store_true")
    p.add_argument("--locust-workers", type=int, default=0)
    add_serve_args_option(p)
    add_run_args(p)


def served_modes_table(rows) -> str:
    """Same model/batch/concurrency served in each server mode: p50 side by side."""
    served = [r for r in rows if r.kind in ("grpc", "rest") and r.scenario == "closed"]
    servers = sorted({r.server for r in served})
    if len(servers) < 2:
        return ""
    by = {(r.kind, r.model, r.batch_size, r.concurrency, r.server): r for r in served}
    keys = sorted({(r.kind, r.model, r.batch_size, r.concurrency) for r in served})
    out = []
    for k in keys:
        vals = [by.get((*k, s)) for s in servers]
        out.append([*k] + [v.p50_ms if v else None for v in vals] + [v.throughput_rps if v else None for v in vals])
    return table(["kind", "model", "batch", "conc"] + [f"{s} p50 ms" for s in servers] + [f"{s} req/s" for s in servers],
                 out)


def readme_command(run_id: str, results_dir: Path) -> str:
    extra = "" if Path(results_dir) == DEFAULT_RESULTS else f" --results-dir {shlex.quote(str(results_dir))}"
    return f"python -m benchmarks readme {run_id}{extra}"


def main(args: argparse.Namespace) -> int:
    from benchmarks.commands.inprocess import InprocessConfig, run_inprocess
    from benchmarks.load.locust_run import LocustConfig, run_locust
    from benchmarks.commands.served import ServedConfig, run_served

    t0 = time.perf_counter()
    models_dir = Path(args.models_dir)
    if not discover_models(models_dir):
        print(f">> {models_dir} has no exported models: exporting (export.pipeline)", flush=True)
        from export.pipeline import ExportConfig, export_models

        export_models(ExportConfig(out_dir=models_dir))
    infos = discover_models(models_dir)
    w = open_run(args, "demo", server_kind="embedded", server_mode="+".join(args.server_modes))
    print(">> in-process modes", flush=True)
    run_inprocess(InprocessConfig(models_dir, tuple(i.name for i in infos), batch_sizes=(1, 32, 1024), budget_s=0.3,
                                  min_iters=10, progress=not args.no_progress), w)
    first = infos[0]
    for mode in args.server_modes:
        print(f">> embedded server, {mode} mode", flush=True)
        with ManagedServer("embedded", mode=mode, models_dir=models_dir, models=tuple(i.name for i in infos),
                           log_path=w.run_dir / f"embedded-{mode}.log", extra_args=list(args.server_arg)) as srv:
            for kind, target in (("grpc", srv.grpc_target), ("rest", srv.rest_target)):
                run_served(ServedConfig(kind=kind, target=target, models=[(first.name, first.n_features)],
                                        batch_sizes=(1, 32), concurrencies=(1, 4, 16), window_s=1.0, max_windows=5,
                                        server_label=srv.label, metrics_url=srv.metrics_url,
                                        loadgen_scenarios=("server",), loadgen_qps=(100.0,),
                                        loadgen_min_duration_ms=5000, loadgen_dir=w.run_dir / "loadgen",
                                        progress=not args.no_progress), w)
            if not args.skip_locust:
                run_locust(LocustConfig(srv.grpc_target, srv.rest_target, model=first.name,
                                        n_features=first.n_features, users=4, spawn_rate=4, run_time="8s",
                                        workers=args.locust_workers, server_label=srv.label,
                                        out_dir=w.run_dir / f"locust-{mode}"), w)
    finish_run(w)
    print("\n## In-process: eager vs graph vs XLA (p50 ms)\n" + eager_vs_graph(w.rows))
    smt = served_modes_table(w.rows)
    if smt:
        print("\n## Served: server modes side by side\n" + smt)
    print("\n## gRPC vs REST\n" + grpc_vs_rest(w.rows))
    print("\n## Open loop (LoadGen Server scenario) and Locust\n" + openloop_table(w.rows))
    print("\n## Findings (report.md opens with these)\n" + findings(w.rows))
    print(f"\n>> demo done in {time.perf_counter() - t0:.0f}s; everything is in {w.run_dir}\n"
          f">> README's results block from this run: {readme_command(w.run_id, args.results_dir)}", flush=True)
    return 0
