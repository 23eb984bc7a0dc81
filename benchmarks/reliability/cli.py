"""`python -m benchmarks reliability` (`make reliability`): every reliability phase against real servers.

Phases, in order, on a private copy of residual_regressor (the user's models directory is never modified):
  1. capacity   closed-loop throughput at 8 streams (what "half of capacity" means for the soak)
  2. rollout    export a new version with export.pipeline.export_models while load runs; switch-over time;
                the version policy unloads the oldest; zero failed requests
  3. broken     six kinds of broken version dropped in under load; each refused with a status; zero failures
  4. hostile    Hypothesis-generated REST bodies, gRPC tensors, model names/labels, config reload
  5. soak       open loop at half capacity for --soak-seconds; RSS growth after warm-up; first vs last window
  6. kill       SIGKILL the server under load, restart it on the same ports; the result file keeps every window
  7. overload   a second server with a deliberately small batch queue: fast RESOURCE_EXHAUSTED, bounded
                memory and latency, recovery, per-request deadline honoured
Writes reliability.json + reliability.md (and the kill phase's results.json) under <results-dir>/<run-id>/ and
prints the table. Exit status 0 when nothing was lost and every fault was survived, 1 otherwise.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

DESCRIPTION = __doc__

EPILOG = """\
examples:
  python -m benchmarks reliability --models-dir artifacts/models                 # full run, 10-minute soak
  python -m benchmarks reliability --models-dir artifacts/models --quick         # ~2 minutes, short soak
  python -m benchmarks reliability --models-dir artifacts/models --soak-seconds 60 --hostile-examples 400
"""

OVERLOAD_BATCHING = """\
# Deliberately small queue so that overload is reached on any machine: one batch thread, one queued batch.
max_batch_size { value: 8 }
batch_timeout_micros { value: 200000 }
max_enqueued_batches { value: 1 }
num_batch_threads { value: 1 }
"""


def add_reliability_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--models-dir", type=Path, default=Path("artifacts/models"),
                        help="export directory holding residual_regressor (copied; never modified)")
    parser.add_argument("--results-dir", type=Path, default=Path("artifacts/results"),
                        help="where <run-id>/reliability.{json,md} are written (default artifacts/results)")
    parser.add_argument("--soak-seconds", type=float, default=600.0,
                        help="soak duration at half of measured capacity (default 600 = 10 minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="short version of every phase (soak 20 s unless --soak-seconds is given, "
                             "fewer hostile examples, 1-epoch export)")
    parser.add_argument("--hostile-examples", type=int, default=None,
                        help="Hypothesis examples per hostile family (default 300, 80 with --quick)")
    parser.add_argument("--rollout-epochs", type=int, default=None,
                        help="training epochs of the version exported during the rollout (default 3, 1 with --quick)")
    parser.add_argument("--poll-seconds", type=float, default=1.0,
                        help="server's --file-system-poll-wait-seconds (default 1, TF Serving's default)")
    parser.add_argument("--concurrency", type=int, default=4, help="load streams during rollout/broken/kill (default 4)")
    parser.add_argument("--overload-concurrency", type=int, default=128,
                        help="concurrent streams in the overload phase (default 128)")
    parser.add_argument("--mode", choices=("graph", "xla", "eager"), default="graph", help="server mode (default graph)")
    parser.add_argument("--run-id", default=None, help="run id (default: timestamp + random suffix)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["rollout", "broken", "hostile", "soak", "kill", "overload"],
                        help="phases to leave out (they are reported as skipped)")
    return parser


def _log(msg: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_reliability(args: argparse.Namespace) -> int:
    from benchmarks.results.schema import capture_environment, new_run_id
    from benchmarks.reliability import client, faults, scenarios
    from benchmarks.reliability.summary import FaultLine, ReliabilityReport, render_text, write_report
    from benchmarks.targets.managed import ManagedServer
    from export.contract import latest_version_dir

    soak_s = args.soak_seconds if not (args.quick and args.soak_seconds == 600.0) else 20.0
    examples = args.hostile_examples or (80 if args.quick else 300)
    epochs = args.rollout_epochs or (1 if args.quick else 3)
    src = Path(args.models_dir)
    if not (src / client.MODEL).is_dir():
        print(f"error: {src / client.MODEL} not found: export the models first (make export)", file=sys.stderr)
        return 2
    run_id = args.run_id or new_run_id("reliability")
    run_dir = Path(args.results_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {"soak_seconds": soak_s, "hostile_examples": examples, "rollout_epochs": epochs,
                "poll_seconds": args.poll_seconds, "concurrency": args.concurrency,
                "overload_concurrency": args.overload_concurrency, "mode": args.mode, "quick": args.quick}
    env = capture_environment(server_kind="embedded", server_mode=args.mode, settings=settings,
                              command=" ".join(sys.argv))
    report = ReliabilityReport(run_id, environment=_asdict(env), settings=settings)
    scratch = Path(tempfile.mkdtemp(prefix="tfserve-reliability-"))
    payload = client.predict_payload()
    _log(f"run {run_id}: results in {run_dir}; scratch models in {scratch}")

    def save() -> None:  # after every phase: an interrupted run keeps what it measured
        write_report(report, run_dir)

    try:
        models = faults.make_scratch_models(src, scratch / "models")
        model_dir = models / client.MODEL
        sentinel = faults.make_sentinel(scratch / "outside", latest_version_dir(model_dir).path)
        limit = 4 * 2**20
        max_elements = 2**20
        server = ManagedServer("embedded", mode=args.mode, models_dir=models, models=(client.MODEL,),
                               log_path=run_dir / "server.log",
                               extra_args=["--file-system-poll-wait-seconds", str(args.poll_seconds),
                                           "--max-request-bytes", str(limit), "--max-tensor-elements", str(max_elements)])
        _log("starting the embedded server (graph mode) ...")
        server.start()
        try:
            client.wait_settled(server.grpc_target)
            cap = scenarios.measure_capacity(server.grpc_target, payload)
            report.capacity = _asdict(cap)
            _log(f"capacity: {cap.throughput_rps:.0f} req/s at {cap.concurrency} streams (p50 {cap.p50_ms} ms)")
            save()

            if "rollout" not in args.skip:
                from export.pipeline import ExportConfig, export_models

                def publish() -> None:
                    export_models(ExportConfig(models=(client.MODEL,), out_dir=models, epochs=epochs, verify=False))

                r = scenarios.rollout_under_load(server.grpc_target, model_dir, publish, payload=payload,
                                                 poll_interval_s=args.poll_seconds, concurrency=args.concurrency,
                                                 progress=_log)
                report.phases["rollout"] = _asdict(r)
                ok = r.failed == 0 and not r.problem and r.old_unloaded and not math.isnan(r.switch_over_s)
                report.faults.append(FaultLine(
                    "rollout", f"export v{r.new_version} under load (serving {r.versions_before})", ok,
                    r.load["sent"], r.failed,
                    f"switch-over {r.switch_over_s:.2f}s (poll {r.poll_interval_s:g}s); v{min(r.versions_before or [0])} "
                    f"unloaded: {r.old_unloaded}; export took {r.publish_s:.0f}s" + (f"; {r.problem}" if r.problem else "")))
                report.load_held.append(_held("rollout", r.load))
                _log(f"rollout: {r.load['sent']} sent, {r.failed} failed, switch-over {r.switch_over_s}s")
                save()

            if "broken" not in args.skip:
                b = scenarios.broken_versions_under_load(server.grpc_target, server.rest_target, model_dir,
                                                         payload=payload, concurrency=args.concurrency, progress=_log)
                report.phases["broken"] = _asdict(b)
                for o in b.outcomes:
                    report.faults.append(FaultLine(f"broken: {o.kind}", o.description, o.refused, 0, 0,
                                                   f"v{o.version} {o.state} code {o.error_code}: {o.error_message[:120]}"))
                report.faults.append(FaultLine(
                    "broken: previous keeps serving", f"load during {len(b.outcomes)} broken versions",
                    b.failed == 0 and b.valid_after is None and bool(b.serving_after), b.load["sent"], b.failed,
                    f"answered by versions {b.served_by}; serving afterwards {b.serving_after}"))
                report.load_held.append(_held("broken versions", b.load))
                save()

            if "hostile" not in args.skip:
                from benchmarks.reliability.hostile_run import run_hostile

                h = run_hostile(server.grpc_target, server.rest_target, server.proc.pid, sentinel, examples=examples,
                                body_limit=limit, max_elements=max_elements, progress=_log)
                report.hostile = h.as_dict()
                report.memory["hostile"] = {"start_mib": round(h.rss_before_mib, 1), "end_mib": round(h.rss_after_mib, 1),
                                            "peak_mib": None, "growth_pct": round(
                                                (h.rss_after_mib - h.rss_before_mib) / h.rss_before_mib * 100, 2)
                                            if h.rss_before_mib else None}
                _log(f"hostile: {h.tally.total} cases, {h.tally.failed} wrong answers")
                save()

            if "soak" not in args.skip:
                so = scenarios.soak(server.grpc_target, server.proc.pid, payload=payload,
                                    capacity_rps=cap.throughput_rps, seconds=soak_s, progress=_log)
                report.phases["soak"] = _asdict(so)
                report.memory["soak"] = so.memory
                stable = so.latency_stable()
                growth = so.memory.get("growth_pct")
                ok = so.failed == 0 and growth is not None and growth < 5.0 and stable
                report.faults.append(FaultLine(
                    "soak", f"{so.rate_rps:.0f} req/s open loop for {so.seconds:.0f}s (half of capacity)", ok,
                    so.load["sent"], so.failed,
                    f"RSS growth {growth}% after warm-up; typical window p50 "
                    f"{so.first_window['median_window_p50_ms']}→{so.last_window['median_window_p50_ms']} ms, p99 "
                    f"{so.first_window['median_window_p99_ms']}→{so.last_window['median_window_p99_ms']} ms "
                    f"(first→last fifth; merged p99 {so.first_window['p99_ms']}→{so.last_window['p99_ms']} ms); "
                    f"stable: {stable}; other processes used {so.other_cpu_pct}% of the machine"))
                if so.other_cpu_pct > 20:
                    report.notes.append(f"during the soak other processes used {so.other_cpu_pct}% of this machine's "
                                        "CPU: latency stability was measured next to a noisy neighbour; rerun on a "
                                        "quiet machine before reading a drift into it")
                report.load_held.append(_held("soak", so.load))
                save()

            if "kill" not in args.skip:
                k = scenarios.kill_and_restart_under_load(server.grpc_target, server.kill, server.start,
                                                          run_dir / "kill_restart", payload=payload,
                                                          concurrency=args.concurrency, progress=_log)
                report.phases["kill"] = _asdict(k)
                retryable = set(k.errors_by_status) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
                ok = k.measurements_lost == 0 and k.ok_after_restart > 0 and k.ok_before_kill > 0
                report.faults.append(FaultLine(
                    "server killed (SIGKILL) and restarted", "kill -9 mid-benchmark, restart on the same ports", ok,
                    k.load["sent"], k.measurements_lost,
                    f"errors by status {k.errors_by_status}; back after {k.restart_s}s, first success "
                    f"{k.recovered_s}s after the kill; {k.rows_in_file} windows in {k.result_file}"
                    + ("" if retryable else "; NOTE: non-retryable statuses during the restart")))
                report.load_held.append(_held("kill/restart", k.load))
                save()
        finally:
            server.stop()

        if "overload" not in args.skip:
            bfile = scratch / "overload_batching.config"
            bfile.write_text(OVERLOAD_BATCHING)
            over = ManagedServer("embedded", mode=args.mode, models_dir=models, models=(client.MODEL,),
                                 log_path=run_dir / "server-overload.log",
                                 extra_args=["--enable-batching", "--batching-parameters-file", str(bfile),
                                             "--file-system-poll-wait-seconds", "0"])
            _log("starting a second server with a small batch queue for the overload phase ...")
            over.start()
            try:
                client.wait_settled(over.grpc_target)
                o = scenarios.overload(over.grpc_target, over.proc.pid, payload=payload,
                                       concurrency=args.overload_concurrency, seconds=5.0 if args.quick else 15.0,
                                       progress=_log)
                d = scenarios.deadline_honoured(over.grpc_target, over.rest_target, deadline_ms=50)
                report.phases["overload"] = _asdict(o)
                report.phases["deadline"] = _asdict(d)
                report.memory["overload"] = o.memory
                bad = {c: n for c, n in o.load["errors"].items() if c not in ("RESOURCE_EXHAUSTED", "UNAVAILABLE")}
                ok = (o.rejected > 0 and o.reject_p99_ms < 1000 and o.recovery_failed == 0 and not bad
                      and o.rss_growth_pct < 25)
                report.faults.append(FaultLine(
                    "overload", f"{o.concurrency} streams against a 1-batch queue", ok, o.load["sent"],
                    sum(bad.values()) + o.recovery_failed,
                    f"{o.rejected} rejected (p99 {o.reject_p99_ms} ms to refuse); admitted p99 {o.admitted_p99_ms} ms, "
                    f"max {o.admitted_max_ms} ms; RSS peak +{o.rss_growth_pct:.1f}%; recovery "
                    f"{o.recovery_sent - o.recovery_failed}/{o.recovery_sent} ok"))
                report.faults.append(FaultLine(
                    "per-request deadline", f"{d.deadline_ms:g} ms deadline on a request waiting for its batch",
                    d.client_code == "DEADLINE_EXCEEDED" and d.server_deadline_exceeded >= 1, 1, 0,
                    f"client got {d.client_code} after {d.elapsed_ms} ms; server counted "
                    f"{d.server_deadline_exceeded:g} DEADLINE_EXCEEDED"))
                report.load_held.append(_held("overload", o.load))
                save()
            finally:
                over.stop()
    except KeyboardInterrupt:
        report.notes.append("interrupted: phases after the last completed one are missing")
        _log("interrupted; writing what was measured")
    finally:
        for phase in args.skip:
            report.notes.append(f"phase '{phase}' skipped on request (--skip)")
        save()
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(render_text(report))
    print(f"\nwritten: {run_dir / 'reliability.json'}, {run_dir / 'reliability.md'}")
    return 0 if report.passed else 1


def _held(phase: str, load: dict) -> dict:
    return {"phase": phase, "rps": load.get("throughput_rps"), "seconds": load.get("duration_s"),
            "requests": load.get("sent"), "failed": load.get("failed")}


def _asdict(obj) -> dict:
    import dataclasses

    return dataclasses.asdict(obj)


def main(argv: list[str] | None = None) -> int:
    parser = add_reliability_arguments(argparse.ArgumentParser(prog="python -m benchmarks reliability"))
    return run_reliability(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
