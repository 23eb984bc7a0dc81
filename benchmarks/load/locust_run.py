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

from benchmarks.measure.histogram import LatencyHistogram
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
    for t in cfg.transports:
        if t not in USER_CLASSES:
            raise ValueError(f"unknown Locust transport {t!r}; choose from {sorted(USER_CLASSES)}")
    run_s = _seconds(cfg.run_time)
    if cfg.step_shape:
        run_s = max(run_s, cfg.step_seconds * cfg.steps)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw_file = out / "locust_raw.json"
    env = {**os.environ, "BENCH_MODEL": cfg.model, "BENCH_BATCH": str(cfg.batch_size),
           "BENCH_N_FEATURES": str(cfg.n_features), "BENCH_GRPC_TARGET": cfg.grpc_target,
           "BENCH_WAIT_S": str(cfg.wait_s), "BENCH_LOCUST_RAW": str(raw_file),
           "BENCH_STEP_USERS": str(cfg.step_users), "BENCH_STEP_SECONDS": str(cfg.step_seconds),
           "BENCH_STEPS": str(cfg.steps), "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    files = f"{LOCUSTFILE},{SHAPES}" if cfg.step_shape else str(LOCUSTFILE)
    classes = [USER_CLASSES[t] for t in cfg.transports]
    base = [sys.executable, "-m", "locust", "-f", files, "--host", f"http://{cfg.rest_target}",
            "--loglevel", "WARNING", "--stop-timeout", "2"]
    master = base + ["--headless", "--csv", str(out / "locust"), "--html", str(out / "locust.html"),
                     "--exit-code-on-error", "0", "--only-summary"]
    if not cfg.step_shape:  # a LoadTestShape owns users, rate and the end of the test itself
        master += ["-u", str(cfg.users), "-r", str(cfg.spawn_rate), "-t", f"{max(1, int(round(run_s)))}s"]
    procs: list[subprocess.Popen] = []
    logs = []
    port = free_port()
    if cfg.workers > 0:
        master += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                   "--expect-workers", str(cfg.workers), "--expect-workers-max-wait", "60"]
    master += classes
    t0 = time.time()
    try:
        mlog = open(out / "master.log", "wb")
        logs.append(mlog)
        mproc = subprocess.Popen(master, stdout=mlog, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        procs.append(mproc)
        for i in range(cfg.workers):
            wlog = open(out / f"worker{i}.log", "wb")
            logs.append(wlog)
            procs.append(subprocess.Popen(base + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
                                          + classes, stdout=wlog, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT))
        # bounded: run time + start-up of every process + Locust's stop/quit grace
        rc = mproc.wait(timeout=run_s + 120 + 15 * cfg.workers)
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
    if not raw_file.exists():
        tail = (out / "master.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Locust wrote no raw results (master exit {rc}); master log tail:\n{tail}")
    raw = json.loads(raw_file.read_text())
    duration = (raw.get("t_stop") or time.time()) - (raw.get("t_start") or t0)
    rows = []
    for transport in cfg.transports:
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
        row.extra = {"workers": cfg.workers, "workers_reported": len(raw.get("workers_reported", [])),
                     "distributed": raw.get("distributed"), "run_time": cfg.run_time, "spawn_rate": cfg.spawn_rate,
                     "locust_csv": str(out / "locust_stats.csv"), "locust_html": str(out / "locust.html"),
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
        rows.append(row)
        if writer:
            writer.append(row)
    return rows
