"""The fault scenarios: each drives load against a live server, injects one fault and returns what happened.

Scenarios take plain targets and callables (publish a version, kill/start the server), not a particular
server class, so the same code runs in the tests (seconds) and in `make reliability` (minutes). None of
them asserts: they measure and return dataclasses; tests and the report decide what is acceptable.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmarks.measure.cpu_meter import CpuMeter
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.recorder import Window, merge
from benchmarks.reliability import client
from benchmarks.reliability.faults import BROKEN_KINDS, write_broken_version
from benchmarks.reliability.load import BackgroundLoad, LoadConfig, LoadSummary, run_load
from benchmarks.reliability.memory import MemoryStats, RssSampler, rss_bytes

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _ms(h: LatencyHistogram, p: float) -> float:
    return round(h.percentile_ms(p), 3) if h.count else math.nan


def load_figures(s: LoadSummary) -> dict[str, Any]:
    return {"sent": s.sent, "ok": s.ok, "failed": s.failed, "errors": dict(s.errors), "unaccounted": s.unaccounted,
            "duration_s": round(s.duration_s, 2), "throughput_rps": round(s.throughput_rps, 1),
            "p50_ms": _ms(s.hist, 50), "p99_ms": _ms(s.hist, 99), "max_ms": _ms(s.hist, 100),
            "versions": {str(k): v for k, v in sorted(s.version_counts.items())}}


# ------------------------------------------------------------------------------------------------ capacity
@dataclass
class Capacity:
    concurrency: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]


def measure_capacity(grpc_target: str, payload: bytes, *, concurrency: int = 8, seconds: float = 3.0) -> Capacity:
    """Closed-loop throughput at `concurrency` (a quick, honest stand-in for the full sweep of `benchmarks grpc`)."""
    run_load(LoadConfig(grpc_target, payload, concurrency=concurrency, track_versions=False), min(1.0, seconds / 3))
    s = run_load(LoadConfig(grpc_target, payload, concurrency=concurrency, track_versions=False), seconds)
    return Capacity(concurrency, round(s.duration_s, 2), round(s.throughput_rps, 1), _ms(s.hist, 50), _ms(s.hist, 99),
                    dict(s.errors))


# ------------------------------------------------------------------------------------------------ rollout
@dataclass
class RolloutResult:
    model: str
    versions_before: list[int]
    new_version: int
    load: dict[str, Any]
    switch_over_s: float  # version dir appeared -> first response served by the new version
    old_unloaded: bool  # the version policy unloaded the oldest version
    old_unload_s: float  # version dir appeared -> oldest version reported END
    publish_s: float  # how long publishing (e.g. exporting) took
    poll_interval_s: float
    versions_after: list[int] = field(default_factory=list)
    problem: str = ""

    @property
    def failed(self) -> int:
        return int(self.load["failed"]) + int(self.load["unaccounted"])


def _watch_for(path: Path, stop: threading.Event, out: dict) -> None:
    while not stop.is_set():
        if path.exists():
            out["t"] = time.monotonic()
            return
        time.sleep(0.005)


def rollout_under_load(grpc_target: str, model_dir: Path, publish: Callable[[], Any], *, payload: bytes,
                       poll_interval_s: float, concurrency: int = 4, rate: float | None = None,
                       settle_s: float = 1.0, timeout_s: float = 120.0, model: str = client.MODEL,
                       progress: Progress = _quiet) -> RolloutResult:
    """Publish a new version while load runs; wait until it serves and the policy unloads the oldest."""
    from export.contract import new_version_dir, next_version

    before = client.available_versions(grpc_target, model)
    new_version = next_version(model_dir)
    appeared: dict[str, float] = {}
    stop_watch = threading.Event()
    new_dir = new_version_dir(Path(model_dir).parent, Path(model_dir).name, new_version)
    watcher = threading.Thread(target=_watch_for, args=(new_dir, stop_watch, appeared), daemon=True)
    load = BackgroundLoad(LoadConfig(grpc_target, payload, concurrency=concurrency, rate=rate)).start()
    problem = ""
    old_unload_s = math.nan
    try:
        time.sleep(settle_s)
        watcher.start()
        progress(f"rollout: publishing {model} v{new_version} under load (serving {before})")
        t0 = time.monotonic()
        publish()
        publish_s = time.monotonic() - t0
        try:
            client.wait_for(lambda: new_version in load.totals().version_first_seen, timeout_s,
                            what=f"a response from v{new_version}")
        except TimeoutError as exc:
            problem = str(exc)
        oldest = min(before) if before else None
        if oldest is not None and not problem:
            try:
                client.wait_for(lambda: any(s.version == oldest and s.state == "END"
                                            for s in client.model_status(grpc_target, model)), timeout_s,
                                what=f"v{oldest} unloaded by the version policy")
                old_unload_s = time.monotonic() - appeared.get("t", t0)
            except TimeoutError as exc:
                problem = str(exc)
        time.sleep(settle_s)  # keep loading after the unload: requests racing the unload must not fail
    finally:
        summary = load.stop()
        stop_watch.set()
    first_new = summary.version_first_seen.get(new_version)
    t_appear = appeared.get("t")
    switch = (first_new - t_appear) if (first_new and t_appear) else math.nan
    after = client.available_versions(grpc_target, model)
    return RolloutResult(model, before, new_version, load_figures(summary), round(switch, 3),
                         bool(before) and min(before) not in after and not problem, round(old_unload_s, 3),
                         round(publish_s, 2), poll_interval_s, after, problem)


# ------------------------------------------------------------------------------------------------ broken versions
@dataclass
class BrokenOutcome:
    kind: str
    version: int
    description: str
    state: str
    error_code: int
    error_message: str

    @property
    def refused(self) -> bool:
        return self.state == "END" and self.error_code != 0 and bool(self.error_message)


@dataclass
class BrokenResult:
    outcomes: list[BrokenOutcome]
    load: dict[str, Any]
    served_by: list[int]  # versions that answered during the run
    serving_after: list[int]
    valid_after: str | None  # problem with a valid request afterwards (None = fine)

    @property
    def failed(self) -> int:
        return int(self.load["failed"]) + int(self.load["unaccounted"])


def broken_versions_under_load(grpc_target: str, rest_target: str | None, model_dir: Path, *, payload: bytes,
                               kinds: tuple[str, ...] = tuple(BROKEN_KINDS), concurrency: int = 2,
                               timeout_s: float = 120.0, cleanup: bool = True, model: str = client.MODEL,
                               progress: Progress = _quiet) -> BrokenResult:
    """Drop each kind of broken version into the model dir under load; each must be refused with a status."""
    import shutil

    healthy = client.available_versions(grpc_target, model)
    if not healthy:
        raise RuntimeError(f"{model} has no AVAILABLE version to copy from")
    good = Path(model_dir) / str(max(healthy))
    load = BackgroundLoad(LoadConfig(grpc_target, payload, concurrency=concurrency)).start()
    written = []
    try:
        time.sleep(0.5)
        for kind in kinds:
            written.append(write_broken_version(model_dir, kind, good_version_dir=good))
        progress(f"broken versions: wrote {', '.join(f'v{b.version}={b.kind}' for b in written)}; waiting for verdicts")

        def verdicts():
            states = {s.version: s for s in client.model_status(grpc_target, model)}
            done = [states.get(b.version) for b in written]
            return done if all(s is not None and s.state == "END" for s in done) else None

        try:
            states = client.wait_for(verdicts, timeout_s, interval_s=0.2, what="a status for every broken version")
        except TimeoutError:
            all_states = {s.version: s for s in client.model_status(grpc_target, model)}
            states = [all_states.get(b.version) for b in written]
        time.sleep(0.5)
    finally:
        summary = load.stop()
    outcomes = []
    for b, s in zip(written, states):
        outcomes.append(BrokenOutcome(b.kind, b.version, b.description, s.state if s else "MISSING",
                                      s.error_code if s else 0, s.error_message if s else ""))
    valid = client.check_valid_request(grpc_target, rest_target)
    serving = client.available_versions(grpc_target, model)
    if cleanup:
        for b in written:
            shutil.rmtree(b.path, ignore_errors=True)
    return BrokenResult(outcomes, load_figures(summary), sorted(summary.version_counts), serving, valid)


# ------------------------------------------------------------------------------------------------ kill / restart
@dataclass
class KillResult:
    load: dict[str, Any]
    result_file: str
    rows_in_file: int
    requests_in_file: int  # sum of n + errors over the rows in the file
    ok_in_file: int
    ok_before_kill: int
    ok_after_restart: int
    errors_by_status: dict[str, int]
    restart_s: float  # kill -> server ready again
    recovered_s: float  # kill -> first successful response after the restart
    phases_in_file: dict[str, int]

    @property
    def measurements_lost(self) -> int:
        return int(self.load["sent"]) - self.requests_in_file


def kill_and_restart_under_load(grpc_target: str, kill: Callable[[], None], start: Callable[[], None],
                                run_dir: Path, *, payload: bytes, concurrency: int = 4, before_s: float = 2.0,
                                after_s: float = 2.0, server_label: str = "embedded-graph",
                                model: str = client.MODEL, progress: Progress = _quiet) -> KillResult:
    """SIGKILL the server mid-run, start it again; every window is flushed to a result file as it closes."""
    from benchmarks.results.schema import ResultRow, ResultWriter, capture_environment, load_run

    writer = ResultWriter(run_dir, capture_environment(server_kind="embedded", server_mode="graph",
                                                       settings={"scenario": "kill_restart"}))
    phase = {"name": "before_kill"}
    window_start_phase = {"name": "before_kill"}  # a window is labelled by the phase it started in
    first_ok_after: dict[str, float] = {}

    def on_window(w: Window) -> None:
        row = ResultRow.from_histogram(
            w.hist, duration_s=w.t1 - w.t0, errors=sum(w.errors.values()), errors_by_code=w.errors,
            kind="grpc", model=model, mode="graph", batch_size=1, scenario="kill_restart",
            concurrency=concurrency, server=server_label, target=grpc_target,
            extra={"window": w.index, "t0_s": round(w.t0, 3), "t1_s": round(w.t1, 3),
                   "phase": window_start_phase["name"], "phase_at_end": phase["name"],
                   "versions": {str(k): v for k, v in w.versions.items()}})
        writer.append(row)
        window_start_phase["name"] = phase["name"]
        if phase["name"] == "after_restart" and w.ok and "t" not in first_ok_after:
            first_ok_after["t"] = time.monotonic()

    load = BackgroundLoad(LoadConfig(grpc_target, payload, concurrency=concurrency, timeout_s=5.0), on_window).start()
    try:
        time.sleep(before_s)
        ok_before = load.snapshot()[1]
        progress("kill: SIGKILL to the server under load")
        t_kill = time.monotonic()
        phase["name"] = "server_down"
        kill()
        start()
        t_ready = time.monotonic()
        phase["name"] = "after_restart"
        progress(f"kill: server back after {t_ready - t_kill:.1f}s; loading {after_s:.0f}s more")
        ok_at_ready = load.snapshot()[1]
        # First success after the restart, observed from the client's side.
        try:
            client.wait_for(lambda: load.snapshot()[1] > ok_at_ready, 30, interval_s=0.01, what="a success after restart")
            t_first_ok = time.monotonic()
        except TimeoutError:
            t_first_ok = math.nan
        time.sleep(after_s)
    finally:
        summary = load.stop()
    run = load_run(writer.run_dir)
    phases: dict[str, int] = {}
    for r in run.rows:
        phases[r.extra.get("phase", "?")] = phases.get(r.extra.get("phase", "?"), 0) + r.n + r.errors
    ok_after = sum(r.n for r in run.rows if r.extra.get("phase_at_end") == "after_restart")
    return KillResult(load_figures(summary), str(writer.run_dir / "results.json"), len(run.rows),
                      sum(r.n + r.errors for r in run.rows), sum(r.n for r in run.rows), ok_before, ok_after,
                      dict(summary.errors), round(t_ready - t_kill, 2), round(t_first_ok - t_kill, 2), phases)


# ------------------------------------------------------------------------------------------------ overload
@dataclass
class OverloadResult:
    concurrency: int
    load: dict[str, Any]
    rejected: int  # RESOURCE_EXHAUSTED (or UNAVAILABLE when the server is configured so)
    reject_p50_ms: float
    reject_p99_ms: float
    admitted_p99_ms: float
    admitted_max_ms: float
    memory: dict[str, Any]
    rss_baseline_mib: float
    recovery_sent: int
    recovery_failed: int
    recovery_errors: dict[str, int]

    @property
    def rss_growth_pct(self) -> float:
        return (self.memory["peak_mib"] - self.rss_baseline_mib) / self.rss_baseline_mib * 100


def overload(grpc_target: str, pid: int, *, payload: bytes, concurrency: int = 128, seconds: float = 4.0,
             recovery_requests: int = 20, timeout_s: float = 10.0, progress: Progress = _quiet) -> OverloadResult:
    baseline = rss_bytes(pid) / 2**20
    progress(f"overload: {concurrency} concurrent streams for {seconds:.0f}s")
    with RssSampler(pid, interval_s=0.2) as sampler:
        s = run_load(LoadConfig(grpc_target, payload, concurrency=concurrency, timeout_s=timeout_s,
                                error_backoff_s=0.002, track_versions=False), seconds)
    mem: MemoryStats = sampler.stats
    rejected = s.errors.get("RESOURCE_EXHAUSTED", 0) + s.errors.get("UNAVAILABLE", 0)
    progress(f"overload: recovery with {recovery_requests} sequential requests")
    rec_errors: dict[str, int] = {}
    for _ in range(recovery_requests):
        try:
            client.predict(grpc_target, timeout=timeout_s)
        except Exception as exc:  # grpc.RpcError has .code()
            code = exc.code().name if hasattr(exc, "code") else type(exc).__name__
            rec_errors[code] = rec_errors.get(code, 0) + 1
    return OverloadResult(concurrency, load_figures(s), rejected, _ms(s.error_hist, 50), _ms(s.error_hist, 99),
                          _ms(s.hist, 99), _ms(s.hist, 100), mem.as_dict(), round(baseline, 1), recovery_requests,
                          sum(rec_errors.values()), rec_errors)


@dataclass
class DeadlineResult:
    deadline_ms: float
    client_code: str
    elapsed_ms: float
    server_deadline_exceeded: float  # delta of request_count{status="DEADLINE_EXCEEDED"} on the server


def deadline_honoured(grpc_target: str, rest_target: str, *, deadline_ms: float = 50.0) -> DeadlineResult:
    """A request whose deadline passes while it waits (e.g. for its batch) ends with DEADLINE_EXCEEDED, and the
    server itself counts it so (not just the client giving up)."""
    before = client.request_counts(rest_target).get("DEADLINE_EXCEEDED", 0.0)
    t0 = time.perf_counter()
    try:
        client.predict(grpc_target, timeout=deadline_ms / 1000)
        code = "OK"
    except Exception as exc:
        code = exc.code().name if hasattr(exc, "code") else type(exc).__name__
    elapsed = (time.perf_counter() - t0) * 1000
    delta = 0.0
    for _ in range(40):  # the server finishes its side a moment after the client gave up
        delta = client.request_counts(rest_target).get("DEADLINE_EXCEEDED", 0.0) - before
        if delta:
            break
        time.sleep(0.05)
    return DeadlineResult(deadline_ms, code, round(elapsed, 1), delta)


# ------------------------------------------------------------------------------------------------ soak
@dataclass
class SoakResult:
    rate_rps: float
    capacity_rps: float
    seconds: float
    load: dict[str, Any]
    memory: dict[str, Any]
    first_window: dict[str, float]
    last_window: dict[str, float]
    windows: list[dict[str, Any]]
    other_cpu_pct: float = 0.0  # CPU used by processes other than server and load generator (% of machine)

    @property
    def failed(self) -> int:
        return int(self.load["failed"]) + int(self.load["unaccounted"])

    def latency_stable(self, factor: float = 2.0, slack_ms: float = 5.0) -> bool:
        """Last fifth's typical window p50 and p99 within `factor` x the first fifth's (+ slack for sub-ms noise).

        Typical = median over the windows of that fifth: a drift (leak, growing queue) moves every window, while
        one stall caused by a noisy neighbour moves one; the merged percentiles are reported beside it."""
        f, l = self.first_window, self.last_window
        return all(l[k] <= factor * f[k] + slack_ms for k in ("median_window_p50_ms", "median_window_p99_ms"))


def _merge(ws: list[Window]) -> dict[str, float]:
    import statistics

    h = merge(ws)[0]
    p50s = [_ms(w.hist, 50) for w in ws if w.hist.count]
    p99s = [_ms(w.hist, 99) for w in ws if w.hist.count]
    return {"n": h.count, "p50_ms": _ms(h, 50), "p99_ms": _ms(h, 99),
            "median_window_p50_ms": round(statistics.median(p50s), 3) if p50s else math.nan,
            "median_window_p99_ms": round(statistics.median(p99s), 3) if p99s else math.nan,
            "t0_s": round(ws[0].t0, 1) if ws else 0, "t1_s": round(ws[-1].t1, 1) if ws else 0}


def soak(grpc_target: str, pid: int, *, payload: bytes, capacity_rps: float, seconds: float,
         fraction: float = 0.5, warmup_s: float | None = None, window_s: float | None = None,
         progress: Progress = _quiet) -> SoakResult:
    """Open-loop load at `fraction` of capacity for `seconds`; RSS sampled; first vs last fifth compared."""
    rate = max(1.0, capacity_rps * fraction)
    warmup = warmup_s if warmup_s is not None else min(30.0, max(2.0, seconds * 0.1))
    window = window_s or max(1.0, seconds / 60)
    last_print = [0.0]

    def report(elapsed: float, load: BackgroundLoad) -> None:
        if elapsed - last_print[0] >= max(5.0, seconds / 20) or elapsed >= seconds:
            last_print[0] = elapsed
            sent, ok, errs = load.snapshot()
            progress(f"soak: {elapsed:5.0f}/{seconds:.0f}s  {ok} ok  {sum(errs.values())} errors  "
                     f"server RSS {rss_bytes(pid) / 2**20:.0f} MiB")

    progress(f"soak: {rate:.0f} req/s (= {fraction:.0%} of {capacity_rps:.0f} req/s capacity) for {seconds:.0f}s")
    others = CpuMeter([pid])  # measured beside this process: what neither side used is a neighbour's
    with RssSampler(pid, interval_s=max(0.2, min(2.0, seconds / 200)), warmup_s=warmup) as sampler:
        s = run_load(LoadConfig(grpc_target, payload, concurrency=256, rate=rate, window_s=window,
                                track_versions=False), seconds, progress=report)
    other_cpu = round(others.stop().others_pct, 1)
    after_warmup = [w for w in s.windows if w.t0 >= warmup - 1e-9]
    k = max(1, len(after_warmup) // 5)
    return SoakResult(round(rate, 1), capacity_rps, seconds, load_figures(s), sampler.stats.as_dict(),
                      _merge(after_warmup[:k]), _merge(after_warmup[-k:]),
                      [{"t0_s": round(w.t0, 2), "ok": w.ok, "errors": w.errors, "p50_ms": _ms(w.hist, 50),
                        "p99_ms": _ms(w.hist, 99)} for w in s.windows], other_cpu)


def as_dict(obj: Any) -> dict[str, Any]:
    return asdict(obj)
