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
  8. reload     a third server on a polled --model_config_file: one model removed and one added under load;
                zero failures for the model that stays, NOT_FOUND for the removed one and its scheduler
                gone, the added one AVAILABLE
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.commands.common import (DEFAULT_MODELS, DEFAULT_RESULTS, DEFAULT_SERVER_MODE, SERVER_MODES,
                                        ListArg, recorded_command)

if TYPE_CHECKING:
    from benchmarks.reliability.faults import Sentinel
    from benchmarks.reliability.summary import ReliabilityReport

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


PHASES = ("rollout", "broken", "hostile", "soak", "kill", "overload", "reload")  # in the order they run
SOAK_S = 600.0
QUICK_SOAK_S = 20.0
MAX_REQUEST_BYTES = 4 * 2**20  # the server's --max-request-bytes, also the hostile phase's body limit
MAX_TENSOR_ELEMENTS = 2**20  # the server's --max-tensor-elements


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS,
                        help="export directory holding residual_regressor (copied; never modified)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS,
                        help="where <run-id>/reliability.{json,md} are written (default artifacts/results)")
    parser.add_argument("--soak-seconds", type=float, default=SOAK_S,
                        help=f"soak duration at half of measured capacity (default {SOAK_S:g} = 10 minutes)")
    parser.add_argument("--quick", action="store_true",
                        help=f"short version of every phase (soak {QUICK_SOAK_S:g} s unless --soak-seconds is given, "
                             "fewer hostile examples, 1-epoch export)")
    parser.add_argument("--hostile-examples", type=int, default=None,
                        help="Hypothesis examples per hostile family (default 300, 80 with --quick)")
    parser.add_argument("--rollout-epochs", type=int, default=None,
                        help="training epochs of the version exported during the rollout (default 3, 1 with --quick)")
    parser.add_argument("--poll-seconds", type=float, default=1.0,
                        help="server's --file-system-poll-wait-seconds (default 1, TF Serving's default)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="load streams during rollout/broken/kill (default 4)")
    parser.add_argument("--overload-concurrency", type=int, default=128,
                        help="concurrent streams in the overload phase (default 128)")
    parser.add_argument("--mode", choices=SERVER_MODES, default=DEFAULT_SERVER_MODE,
                        help=f"server mode (default {DEFAULT_SERVER_MODE})")
    parser.add_argument("--run-id", default=None, help="run id (default: timestamp + random suffix)")
    parser.add_argument("--skip", action=ListArg, nargs="*", default=[], allowed=PHASES,
                        help="phases to leave out (they are reported as skipped)")


def _log(msg: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class _Run:
    """What every phase reads: the settings, the scratch models it may change, and the report it adds to."""

    args: argparse.Namespace
    settings: dict
    run_dir: Path
    scratch: Path
    report: ReliabilityReport
    payload: bytes
    models: Path = Path()  # scratch copy of --models-dir (set by _prepare_models)
    sentinel: Sentinel | None = None  # a file outside the model base path that must stay unread

    @property
    def model_dir(self) -> Path:
        from benchmarks.reliability.client import MODEL

        return self.models / MODEL

    def save(self) -> None:  # after every phase: an interrupted run keeps what it measured
        from benchmarks.reliability.summary import write_report

        write_report(self.report, self.run_dir)


def main(args: argparse.Namespace) -> int:
    from benchmarks.reliability import client
    from benchmarks.reliability.summary import render_text

    src = Path(args.models_dir)
    if not (src / client.MODEL).is_dir():
        print(f"error: {src / client.MODEL} not found: export the models first (make export)", file=sys.stderr)
        return 2
    run = _open_run(args)
    _log(f"run {run.report.run_id}: results in {run.run_dir}; scratch models in {run.scratch}")
    try:
        _prepare_models(run, src)
        _phases_on_main_server(run)
        if "overload" not in args.skip:
            _phase_overload(run)
        if "reload" not in args.skip:
            _phase_reload(run)
    except KeyboardInterrupt:
        run.report.notes.append("interrupted: phases after the last completed one are missing")
        _log("interrupted; writing what was measured")
    finally:
        for phase in args.skip:
            run.report.notes.append(f"phase '{phase}' skipped on request (--skip)")
        run.save()
        shutil.rmtree(run.scratch, ignore_errors=True)
    print()
    print(render_text(run.report))
    print(f"\nwritten: {run.run_dir / 'reliability.json'}, {run.run_dir / 'reliability.md'}")
    return 0 if run.report.passed else 1


def _open_run(args: argparse.Namespace) -> _Run:
    from benchmarks.reliability import client
    from benchmarks.reliability.summary import ReliabilityReport
    from benchmarks.results.schema import capture_environment, new_run_id

    quick_soak = args.quick and args.soak_seconds == SOAK_S  # --quick shortens the soak unless one was given
    settings = {"soak_seconds": QUICK_SOAK_S if quick_soak else args.soak_seconds,
                "hostile_examples": args.hostile_examples or (80 if args.quick else 300),
                "rollout_epochs": args.rollout_epochs or (1 if args.quick else 3),
                "poll_seconds": args.poll_seconds, "concurrency": args.concurrency,
                "overload_concurrency": args.overload_concurrency, "mode": args.mode, "quick": args.quick}
    run_id = args.run_id or new_run_id("reliability")
    run_dir = Path(args.results_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    env = capture_environment(server_kind="embedded", server_mode=args.mode, settings=settings,
                              command=recorded_command(getattr(args, "argv", sys.argv[1:])))
    report = ReliabilityReport(run_id, environment=asdict(env), settings=settings)
    return _Run(args, settings, run_dir, Path(tempfile.mkdtemp(prefix="tfserve-reliability-")), report,
                client.predict_payload())


def _prepare_models(run: _Run, src: Path) -> None:
    from benchmarks.reliability import faults
    from export.contract import latest_version_dir

    run.models = faults.make_scratch_models(src, run.scratch / "models")
    run.sentinel = faults.make_sentinel(run.scratch / "outside", latest_version_dir(run.model_dir).path)


def _phases_on_main_server(run: _Run) -> None:
    """Capacity, then rollout, broken, hostile, soak and kill against one embedded server."""
    from benchmarks.reliability import client, scenarios
    from benchmarks.targets.managed import ManagedServer

    args = run.args
    server = ManagedServer("embedded", mode=args.mode, models_dir=run.models, models=(client.MODEL,),
                           log_path=run.run_dir / "server.log",
                           extra_args=["--file-system-poll-wait-seconds", str(args.poll_seconds),
                                       "--max-request-bytes", str(MAX_REQUEST_BYTES),
                                       "--max-tensor-elements", str(MAX_TENSOR_ELEMENTS)])
    _log(f"starting the embedded server ({args.mode} mode) ...")
    server.start()
    try:
        client.wait_settled(server.grpc_target)
        cap = scenarios.measure_capacity(server.grpc_target, run.payload)
        run.report.capacity = asdict(cap)
        _log(f"capacity: {cap.throughput_rps:.0f} req/s at {cap.concurrency} streams (p50 {cap.p50_ms} ms)")
        run.save()
        phases = {"rollout": _phase_rollout, "broken": _phase_broken, "hostile": _phase_hostile,
                  "soak": lambda r, s: _phase_soak(r, s, cap.throughput_rps), "kill": _phase_kill}
        for name, phase in phases.items():
            if name not in args.skip:
                phase(run, server)
                run.save()
    finally:
        server.stop()


def _phase_rollout(run: _Run, server) -> None:
    from benchmarks.reliability import client, scenarios
    from benchmarks.reliability.summary import FaultLine
    from export.pipeline import ExportConfig, export_models

    def publish() -> None:
        export_models(ExportConfig(models=(client.MODEL,), out_dir=run.models, epochs=run.settings["rollout_epochs"],
                                   verify=False))

    r = scenarios.rollout_under_load(server.grpc_target, run.model_dir, publish, payload=run.payload,
                                     poll_interval_s=run.args.poll_seconds, concurrency=run.args.concurrency,
                                     progress=_log)
    run.report.phases["rollout"] = asdict(r)
    ok = r.failed == 0 and not r.problem and r.old_unloaded and not math.isnan(r.switch_over_s)
    run.report.faults.append(FaultLine(
        "rollout", f"export v{r.new_version} under load (serving {r.versions_before})", ok,
        r.load["sent"], r.failed,
        f"switch-over {r.switch_over_s:.2f}s (poll {r.poll_interval_s:g}s); v{min(r.versions_before or [0])} "
        f"unloaded: {r.old_unloaded}; export took {r.publish_s:.0f}s" + (f"; {r.problem}" if r.problem else "")))
    run.report.load_held.append(_held("rollout", r.load))
    _log(f"rollout: {r.load['sent']} sent, {r.failed} failed, switch-over {r.switch_over_s}s")


def _phase_broken(run: _Run, server) -> None:
    from benchmarks.reliability import scenarios
    from benchmarks.reliability.summary import FaultLine

    b = scenarios.broken_versions_under_load(server.grpc_target, server.rest_target, run.model_dir,
                                             payload=run.payload, concurrency=run.args.concurrency, progress=_log)
    run.report.phases["broken"] = asdict(b)
    for o in b.outcomes:
        run.report.faults.append(FaultLine(f"broken: {o.kind}", o.description, o.refused, 0, 0,
                                           f"v{o.version} {o.state} code {o.error_code}: {o.error_message[:120]}"))
    run.report.faults.append(FaultLine(
        "broken: previous keeps serving", f"load during {len(b.outcomes)} broken versions",
        b.failed == 0 and b.valid_after is None and bool(b.serving_after), b.load["sent"], b.failed,
        f"answered by versions {b.served_by}; serving afterwards {b.serving_after}"))
    run.report.load_held.append(_held("broken versions", b.load))


def _phase_hostile(run: _Run, server) -> None:
    from benchmarks.reliability.hostile_run import run_hostile

    h = run_hostile(server.grpc_target, server.rest_target, server.proc.pid, run.sentinel,
                    examples=run.settings["hostile_examples"], body_limit=MAX_REQUEST_BYTES,
                    max_elements=MAX_TENSOR_ELEMENTS, progress=_log)
    run.report.hostile = h.as_dict()
    growth = (h.rss_after_mib - h.rss_before_mib) / h.rss_before_mib * 100 if h.rss_before_mib else None
    run.report.memory["hostile"] = {"start_mib": round(h.rss_before_mib, 1), "end_mib": round(h.rss_after_mib, 1),
                                    "peak_mib": None, "growth_pct": round(growth, 2) if growth is not None else None}
    _log(f"hostile: {h.tally.total} cases, {h.tally.failed} wrong answers")


def _phase_soak(run: _Run, server, capacity_rps: float) -> None:
    from benchmarks.reliability import scenarios
    from benchmarks.reliability.summary import FaultLine

    so = scenarios.soak(server.grpc_target, server.proc.pid, payload=run.payload, capacity_rps=capacity_rps,
                        seconds=run.settings["soak_seconds"], progress=_log)
    run.report.phases["soak"] = asdict(so)
    run.report.memory["soak"] = so.memory
    stable = so.latency_stable()
    growth = so.memory.get("growth_pct")
    ok = so.failed == 0 and growth is not None and growth < 5.0 and stable
    first, last = so.first_window, so.last_window
    run.report.faults.append(FaultLine(
        "soak", f"{so.rate_rps:.0f} req/s open loop for {so.seconds:.0f}s (half of capacity)", ok,
        so.load["sent"], so.failed,
        f"RSS growth {growth}% after warm-up; typical window p50 "
        f"{first['median_window_p50_ms']}→{last['median_window_p50_ms']} ms, p99 "
        f"{first['median_window_p99_ms']}→{last['median_window_p99_ms']} ms "
        f"(first→last fifth; merged p99 {first['p99_ms']}→{last['p99_ms']} ms); "
        f"stable: {stable}; other processes used {so.other_cpu_pct}% of the machine"))
    if so.other_cpu_pct > 20:
        run.report.notes.append(f"during the soak other processes used {so.other_cpu_pct}% of this machine's "
                                "CPU: latency stability was measured next to a noisy neighbour; rerun on a "
                                "quiet machine before reading a drift into it")
    run.report.load_held.append(_held("soak", so.load))


def _phase_kill(run: _Run, server) -> None:
    from benchmarks.reliability import scenarios
    from benchmarks.reliability.summary import FaultLine

    k = scenarios.kill_and_restart_under_load(server.grpc_target, server.kill, server.start,
                                              run.run_dir / "kill_restart", payload=run.payload,
                                              concurrency=run.args.concurrency, progress=_log)
    run.report.phases["kill"] = asdict(k)
    retryable = set(k.errors_by_status) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    ok = k.measurements_lost == 0 and k.ok_after_restart > 0 and k.ok_before_kill > 0
    run.report.faults.append(FaultLine(
        "server killed (SIGKILL) and restarted", "kill -9 mid-benchmark, restart on the same ports", ok,
        k.load["sent"], k.measurements_lost,
        f"errors by status {k.errors_by_status}; back after {k.restart_s}s, first success "
        f"{k.recovered_s}s after the kill; {k.rows_in_file} windows in {k.result_file}"
        + ("" if retryable else "; NOTE: non-retryable statuses during the restart")))
    run.report.load_held.append(_held("kill/restart", k.load))


def _phase_overload(run: _Run) -> None:
    """A second server with a deliberately small batch queue: overload, then the per-request deadline."""
    from benchmarks.reliability import client, scenarios
    from benchmarks.targets.managed import ManagedServer

    bfile = run.scratch / "overload_batching.config"
    bfile.write_text(OVERLOAD_BATCHING)
    over = ManagedServer("embedded", mode=run.args.mode, models_dir=run.models, models=(client.MODEL,),
                         log_path=run.run_dir / "server-overload.log",
                         extra_args=["--enable-batching", "--batching-parameters-file", str(bfile),
                                     "--file-system-poll-wait-seconds", "0"])
    _log("starting a second server with a small batch queue for the overload phase ...")
    over.start()
    try:
        client.wait_settled(over.grpc_target)
        o = scenarios.overload(over.grpc_target, over.proc.pid, payload=run.payload,
                               concurrency=run.args.overload_concurrency, seconds=5.0 if run.args.quick else 15.0,
                               progress=_log)
        d = scenarios.deadline_honoured(over.grpc_target, over.rest_target, deadline_ms=50)
        _record_overload(run, o, d)
        run.save()
    finally:
        over.stop()


def _record_overload(run: _Run, o, d) -> None:
    from benchmarks.reliability.summary import FaultLine

    run.report.phases["overload"] = asdict(o)
    run.report.phases["deadline"] = asdict(d)
    run.report.memory["overload"] = o.memory
    bad = {c: n for c, n in o.load["errors"].items() if c not in ("RESOURCE_EXHAUSTED", "UNAVAILABLE")}
    ok = o.rejected > 0 and o.reject_p99_ms < 1000 and o.recovery_failed == 0 and not bad and o.rss_growth_pct < 25
    run.report.faults.append(FaultLine(
        "overload", f"{o.concurrency} streams against a 1-batch queue", ok, o.load["sent"],
        sum(bad.values()) + o.recovery_failed,
        f"{o.rejected} rejected (p99 {o.reject_p99_ms} ms to refuse); admitted p99 {o.admitted_p99_ms} ms, "
        f"max {o.admitted_max_ms} ms; RSS peak +{o.rss_growth_pct:.1f}%; recovery "
        f"{o.recovery_sent - o.recovery_failed}/{o.recovery_sent} ok"))
    run.report.faults.append(FaultLine(
        "per-request deadline", f"{d.deadline_ms:g} ms deadline on a request waiting for its batch",
        d.client_code == "DEADLINE_EXCEEDED" and d.server_deadline_exceeded >= 1, 1, 0,
        f"client got {d.client_code} after {d.elapsed_ms} ms; server counted "
        f"{d.server_deadline_exceeded:g} DEADLINE_EXCEEDED"))
    run.report.load_held.append(_held("overload", o.load))


def _phase_reload(run: _Run) -> None:
    """A third server whose model list comes from a config file it polls; models swapped under load."""
    from benchmarks.reliability import client
    from benchmarks.reliability.reload import POLL_S, ReloadModels, config_reload_under_load
    from benchmarks.reliability.summary import FaultLine
    from benchmarks.targets.managed import ManagedServer

    tree = ReloadModels(run.model_dir, run.scratch / "reload")
    server = ManagedServer("embedded", mode=run.args.mode, config_file=tree.config, models=(client.MODEL,),
                           log_path=run.run_dir / "server-reload.log",
                           extra_args=["--model-config-file-poll-wait-seconds", str(POLL_S)])
    _log("starting a third server on a polled model config for the reload phase ...")
    server.start()
    try:
        client.wait_settled(server.grpc_target)
        r = config_reload_under_load(server.grpc_target, server.rest_target, tree.write_config,
                                     payload=run.payload, concurrency=run.args.concurrency, progress=_log)
    finally:
        server.stop()
    run.report.phases["reload"] = asdict(r)
    run.report.faults.append(FaultLine(
        "config reload", f"--model_config_file swaps {r.removed} for {r.added} while {r.staying} serves",
        r.survived, r.load["sent"], r.failed,
        f"removed answers NOT_FOUND after {r.removed_not_found_s}s ({r.removed_message!r}), its scheduler gone "
        f"after {r.scheduler_forgot_s}s; added AVAILABLE after {r.added_available_s}s (poll {POLL_S:g}s)"
        + (f"; {r.problem}" if r.problem else "")))
    run.report.load_held.append(_held("config reload", r.load))
    run.save()
    _log(f"reload: {r.load['sent']} sent, {r.failed} failed; survived: {r.survived}")


def _held(phase: str, load: dict) -> dict:
    return {"phase": phase, "rps": load.get("throughput_rps"), "seconds": load.get("duration_s"),
            "requests": load.get("sent"), "failed": load.get("failed")}
