"""Run Locust headless (local or 1 master + N worker subprocesses) and fold its raw timings into
the result schema. Locust's own CSV/HTML reports are kept beside the results."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure.cpu_meter import CPU_SATURATION_PCT
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.cpu_sampler import ProcessCpu, ProcessCpuSampler
from benchmarks.results.schema import ResultRow, ResultWriter
from benchmarks.targets.managed import REPO_ROOT, free_port

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
SHAPES = HERE / "locust_shapes.py"
USER_CLASSES = {"grpc": "GrpcPredictUser", "rest": "RestPredictUser"}


@dataclass
class LocustConfig:
    grpc_target: str
    rest_target: str  # host:port
    model: str = "residual_regressor"
    batch_size: int = 1
    n_features: int = 10
    users: int = 8
    spawn_rate: float = 4.0
    run_time: str = "20s"
    workers: int = 0  # 0 = one local process
    transports: tuple[str, ...] = ("grpc", "rest")
    step_shape: bool = False
    step_users: int = 4
    step_seconds: float = 5.0
    steps: int = 3
    wait_s: float = 0.0
    server_label: str = ""
    out_dir: Path = Path("locust")


def _seconds(run_time: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    total, num = 0.0, ""
    for ch in run_time.strip():
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch in units and num:
            total += float(num) * units[ch]
            num = ""
        else:
            raise ValueError(f"bad run time {run_time!r}: use e.g. 30s, 2m, 1m30s")
    return total + (float(num) if num else 0.0)


def run_locust(cfg: LocustConfig, writer: ResultWriter | None = None) -> list[ResultRow]:
    """One Locust test per transport, one after the other: each gets all `users` and the server serves one API
    at a time, as in our own client's rows. (Both user classes in one test would split the users between
    them and make the two APIs compete for the server: 4 users became 2 gRPC + 2 REST, run base-eager-locust4.)"""
    for t in cfg.transports:
        if t not in USER_CLASSES:
            raise ValueError(f"unknown Locust transport {t!r}; choose from {sorted(USER_CLASSES)}")
    rows = []
    for transport in cfg.transports:
        row = _run_transport(cfg, transport, Path(cfg.out_dir) / transport)
        rows.append(row)
        if writer:
            writer.append(row)
    return rows


def _run_time_s(cfg: LocustConfig) -> float:
    run_s = _seconds(cfg.run_time)
    return max(run_s, cfg.step_seconds * cfg.steps) if cfg.step_shape else run_s


def _commands(cfg: LocustConfig, transport: str, out: Path, port: int) -> tuple[list[str], list[str]]:
    """(master or local command, worker command) for one transport's test."""
    files = f"{LOCUSTFILE},{SHAPES}" if cfg.step_shape else str(LOCUSTFILE)
    base = [sys.executable, "-m", "locust", "-f", files, "--host", f"http://{cfg.rest_target}",
            "--loglevel", "WARNING", "--stop-timeout", "2"]
    master = base + ["--headless", "--csv", str(out / "locust"), "--html", str(out / "locust.html"),
                     "--exit-code-on-error", "0", "--only-summary"]
    if not cfg.step_shape:  # a LoadTestShape owns users, rate and the end of the test itself
        master += ["-u", str(cfg.users), "-r", str(cfg.spawn_rate), "-t", f"{max(1, int(round(_run_time_s(cfg))))}s"]
    if cfg.workers > 0:
        master += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                   "--expect-workers", str(cfg.workers), "--expect-workers-max-wait", "60"]
    worker = base + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port), USER_CLASSES[transport]]
    return master + [USER_CLASSES[transport]], worker


def _run_transport(cfg: LocustConfig, transport: str, out: Path) -> ResultRow:
    out.mkdir(parents=True, exist_ok=True)
    raw_file = out / "locust_raw.json"
    env = {**os.environ, "BENCH_MODEL": cfg.model, "BENCH_BATCH": str(cfg.batch_size),
           "BENCH_N_FEATURES": str(cfg.n_features), "BENCH_GRPC_TARGET": cfg.grpc_target,
           "BENCH_WAIT_S": str(cfg.wait_s), "BENCH_LOCUST_RAW": str(raw_file),
           "BENCH_STEP_USERS": str(cfg.step_users), "BENCH_STEP_SECONDS": str(cfg.step_seconds),
           "BENCH_STEPS": str(cfg.steps), "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    master, worker = _commands(cfg, transport, out, free_port())
    roles = [("master" if cfg.workers else "local", master, out / "master.log")]
    roles += [(f"worker{i}", worker, out / f"worker{i}.log") for i in range(cfg.workers)]
    cpu = ProcessCpuSampler().start()
    t0 = time.time()
    try:
        rc = _launch_and_wait(roles, env, cpu, _run_time_s(cfg) + 120 + 15 * cfg.workers)
    finally:
        cpu.stop()
    if not raw_file.exists():
        tail = (out / "master.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Locust wrote no raw results (master exit {rc}); master log tail:\n{tail}")
    raw = json.loads(raw_file.read_text())
    t_start, t_stop = raw.get("t_start") or t0, raw.get("t_stop") or time.time()
    return _row(cfg, transport, raw, t_stop - t_start, cpu.summary(t_start, t_stop), rc, out)


def _launch_and_wait(roles: list[tuple[str, list[str], Path]], env: dict, cpu: ProcessCpuSampler,
                     timeout_s: float) -> int | None:
    """Start master (or the local process) and workers, watch their CPU, wait for the master; never leave
    a process behind."""
    procs: list[subprocess.Popen] = []
    logs = []
    rc = None
    try:
        for role, argv, log_path in roles:
            logs.append(open(log_path, "wb"))
            procs.append(subprocess.Popen(argv, stdout=logs[-1], stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT))
            cpu.watch(procs[-1].pid, role)
        rc = procs[0].wait(timeout=timeout_s)  # bounded: run time + start-up of every process + stop grace
        for p in procs[1:]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.terminate()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for f in logs:
            f.close()
    return rc


def _row(cfg: LocustConfig, transport: str, raw: dict, duration: float, cpu: list[ProcessCpu], rc: int | None,
         out: Path) -> ResultRow:
    hist = LatencyHistogram.decode(raw["histograms"].get(transport, ""))
    errors = raw["errors"].get(transport, {})
    row = ResultRow.from_histogram(hist, duration_s=duration, errors=sum(errors.values()), errors_by_code=errors,
                                   kind="locust", model=cfg.model, mode=cfg.server_label or "served",
                                   batch_size=cfg.batch_size,
                                   scenario=f"locust-{transport}" + ("-step" if cfg.step_shape else ""),
                                   concurrency=(cfg.step_users * cfg.steps) if cfg.step_shape else cfg.users,
                                   server=cfg.server_label,
                                   target=cfg.grpc_target if transport == "grpc" else cfg.rest_target)
    row.achieved_rate = row.throughput_rps
    _judge_cpu(row, cpu, distributed=cfg.workers > 0)
    row.extra = {"workers": cfg.workers, "workers_reported": len(raw.get("workers_reported", [])),
                 "distributed": raw.get("distributed"), "run_time": cfg.run_time, "spawn_rate": cfg.spawn_rate,
                 "wait_s": cfg.wait_s, "locust_csv": str(out / "locust_stats.csv"),
                 "locust_html": str(out / "locust.html"),
                 "locust_rounded_stats": raw.get("locust_stats", {}), "master_exit_code": rc,
                 "note": "duration includes the spawn ramp; throughput = requests / (test_start..test_stop)"
                         + ("; one row for the whole step ramp, per-step figures in locust_stats_history.csv"
                            if cfg.step_shape else "")}
    if raw.get("cpu_warning"):
        row.warnings.append("Locust reported a load-generator CPU above 90%: results are client-bound")
    if errors:
        row.warnings.append(f"{sum(errors.values())} failed requests: {errors}")
    if cfg.workers and len(raw.get("workers_reported", [])) < cfg.workers:
        row.warnings.append(f"only {len(raw.get('workers_reported', []))} of {cfg.workers} workers reported")
    return row


def _judge_cpu(row: ResultRow, cpu: list[ProcessCpu], distributed: bool) -> None:
    """client_cpu_percent = every Locust process together; saturated when a process that generates load (the
    workers, or the single local process) has its main thread, where all its users run, at the threshold."""
    row.client_processes = [p.as_dict() for p in cpu]
    measured = [p.cpu_percent for p in cpu if p.cpu_percent is not None]
    row.client_cpu_percent = round(sum(measured), 1) if measured else None
    loaders = [p for p in cpu if not (distributed and p.role == "master")]
    busiest = max((p.main_thread_cpu_percent or 0.0 for p in loaders), default=0.0)
    row.client_saturated = busiest >= CPU_SATURATION_PCT if any(p.cpu_percent is not None for p in loaders) else None
    if row.client_saturated:
        row.warnings.append(f"Locust near saturation (a load-generating process's main thread at {busiest:.0f}% "
                            "of a core): numbers may reflect Locust, not the server")
