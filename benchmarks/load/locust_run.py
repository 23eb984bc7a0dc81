"""Run Locust headless (local or 1 master + N worker subprocesses) and fold its raw timings into
the result schema. Locust's own CSV/HTML reports are kept beside the results."""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load.managers import MeasuredPoint
from benchmarks.measure import prometheus
from benchmarks.measure.cpu_meter import CPU_SATURATION_PCT
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.cpu_sampler import ProcessCpu, ProcessCpuSampler
from benchmarks.measure.recorder import Window
from benchmarks.results.profiler import profile
from benchmarks.results.schema import ResultRow, ResultWriter
from benchmarks.targets.managed import REPO_ROOT, free_port

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
SHAPES = HERE / "locust_shapes.py"
USER_CLASSES = {"grpc": "GrpcPredictUser", "rest": "RestPredictUser"}
LOCUST_MASTER_PORT = 5557  # Locust's default --master-port
BENCH_OPTIONS = (  # the locustfile's own options: (flag, type, default, help); environment LOCUST_ + FLAG in capitals
    ("--bench-model", str, "residual_regressor", "model to call"),
    ("--bench-batch", int, 1, "rows per request"),
    ("--bench-n-features", int, 0, "float32 [batch, N] request without asking the server (a model with a "
                                   "manifest); 0 = build it from the served signature"),
    ("--bench-grpc-target", str, "127.0.0.1:8500", "gRPC host:port of the server (REST is Locust's --host)"),
    ("--bench-inputs", str, "", "input flags as for `python -m benchmarks grpc`, in one string, e.g. "
                                "'--shape x:8 --method classify --feature age:float'"),
    ("--bench-wait-s", float, 0.0, "think time between requests (0 = closed loop)"),
    ("--bench-raw-file", str, "", "master (or local run): write the merged raw results here"),
)


@dataclass
class LocustConfig:
    grpc_target: str
    rest_target: str  # host:port
    model: str = "residual_regressor"
    batch_size: int = 1
    n_features: int = 0  # > 0: float32 [batch, N] without asking the server; 0: from the served signature
    input_args: tuple[str, ...] = ()  # the input flags (--shape, --input-data, --method ...) for the request builder
    users: int = 8
    spawn_rate: float = 4.0
    run_time: str = "20s"
    workers: int = 0  # 0 = one local process; N = 1 master + N worker processes here
    transports: tuple[str, ...] = ("grpc", "rest")
    step_shape: bool = False
    step_users: int = 4
    step_seconds: float = 5.0
    steps: int = 3
    wait_s: float = 0.0
    server_label: str = ""
    out_dir: Path = Path("locust")
    bind: str = ""  # HOST:PORT: a master only, for workers started elsewhere (--master-host)
    expect_workers: int = 0  # with bind: start when this many workers have connected
    expect_workers_wait_s: float = 120.0
    metrics_url: str = ""  # the server's Prometheus endpoint, to reconcile its request count with ours

    @property
    def remote(self) -> bool:
        return bool(self.bind)

    @property
    def n_workers(self) -> int:
        return self.expect_workers if self.remote else self.workers


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


def add_bench_options(parser) -> None:
    """Register BENCH_OPTIONS on Locust's parser (the locustfile's init_command_line_parser listener)."""
    for flag, kind, default, help_text in BENCH_OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=help_text,
                            env_var="LOCUST_" + flag[2:].upper().replace("-", "_"))


def split_host_port(spec: str, default_port: int = LOCUST_MASTER_PORT) -> tuple[str, int]:
    """HOST[:PORT] -> (host, port); ValueError naming the spec when the port is not a number."""
    host, sep, port = spec.rpartition(":")
    if not sep:
        return spec, default_port
    if not host or not port.isdigit():
        raise ValueError(f"{spec!r}: expected HOST[:PORT], e.g. 10.0.0.5:{LOCUST_MASTER_PORT}")
    return host, int(port)


def worker_command(master_host: str, master_port: int, files: str = str(LOCUSTFILE)) -> list[str]:
    """A Locust worker that takes everything else (model, targets, users) from its master."""
    return [sys.executable, "-m", "locust", "-f", files, "--worker", "--master-host", master_host,
            "--master-port", str(master_port), "--loglevel", "WARNING"]


def _bench_options(cfg: LocustConfig, raw_file: Path) -> list[str]:
    """The locustfile's own options; Locust hands them from the master to every worker."""
    return ["--bench-model", cfg.model, "--bench-batch", str(cfg.batch_size), "--bench-n-features",
            str(cfg.n_features), "--bench-grpc-target", cfg.grpc_target, "--bench-inputs", shlex.join(cfg.input_args),
            "--bench-wait-s", str(cfg.wait_s), "--bench-raw-file", str(raw_file)]


def _commands(cfg: LocustConfig, transport: str, out: Path, port: int) -> tuple[list[str], list[str]]:
    """(master or local command, worker command) for one transport's test."""
    files = f"{LOCUSTFILE},{SHAPES}" if cfg.step_shape else str(LOCUSTFILE)
    master = [sys.executable, "-m", "locust", "-f", files, "--host", f"http://{cfg.rest_target}", "--loglevel",
              "WARNING", "--stop-timeout", "2", *_bench_options(cfg, out / "locust_raw.json"), "--headless",
              "--csv", str(out / "locust"), "--html", str(out / "locust.html"), "--exit-code-on-error", "0",
              "--only-summary"]
    if not cfg.step_shape:  # a LoadTestShape owns users, rate and the end of the test itself
        master += ["-u", str(cfg.users), "-r", str(cfg.spawn_rate), "-t", f"{max(1, int(round(_run_time_s(cfg))))}s"]
    bind_host, port = split_host_port(cfg.bind) if cfg.remote else ("127.0.0.1", port)
    if cfg.n_workers > 0:
        master += ["--master", "--master-bind-host", bind_host, "--master-bind-port", str(port),
                   "--expect-workers", str(cfg.n_workers), "--expect-workers-max-wait",
                   str(int(cfg.expect_workers_wait_s))]
    return master + [USER_CLASSES[transport]], worker_command("127.0.0.1", port, files)


def _run_transport(cfg: LocustConfig, transport: str, out: Path) -> ResultRow:
    out.mkdir(parents=True, exist_ok=True)
    raw_file = out / "locust_raw.json"
    env = {**os.environ, "BENCH_STEP_USERS": str(cfg.step_users), "BENCH_STEP_SECONDS": str(cfg.step_seconds),
           "BENCH_STEPS": str(cfg.steps), "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    master, worker = _commands(cfg, transport, out, free_port())
    roles = [("master" if cfg.n_workers else "local", master, out / "master.log")]
    roles += [(f"worker{i}", worker, out / f"worker{i}.log") for i in range(0 if cfg.remote else cfg.workers)]
    before = prometheus.scrape(cfg.metrics_url)
    cpu = ProcessCpuSampler().start()
    t0 = time.time()
    try:
        wait_s = _run_time_s(cfg) + 120 + 15 * cfg.workers + (cfg.expect_workers_wait_s if cfg.remote else 0)
        rc = _launch_and_wait(roles, env, cpu, wait_s)
    finally:
        cpu.stop()
    after = prometheus.scrape(cfg.metrics_url)
    server = prometheus.delta(before, after, cfg.model) if before and after else None
    if not raw_file.exists():
        tail = (out / "master.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Locust wrote no raw results (master exit {rc}); master log tail:\n{tail}")
    raw = json.loads(raw_file.read_text())
    t_start, t_stop = raw.get("t_start") or t0, raw.get("t_stop") or time.time()
    row = _row(cfg, transport, raw, t_stop - t_start, cpu.summary(t_start, t_stop), rc, out, server)
    _add_workers(row, cfg, raw)
    _reconcile(row, transport, raw, server)
    return row


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


def _point(cfg: LocustConfig, transport: str, raw: dict, duration: float, server: dict | None) -> MeasuredPoint:
    """The Locust test as the profiler's input: one window (test_start..test_stop) of the merged raw timings."""
    hist = LatencyHistogram.decode(raw["histograms"].get(transport, ""))
    summary = hist.summary()
    window = Window(0, 0.0, duration, hist, dict(raw["errors"].get(transport, {})), ok=summary.n,
                    sum_ns=int(summary.mean_ms * 1e6 * summary.n) if summary.n else 0)
    users = (cfg.step_users * cfg.steps) if cfg.step_shape else cfg.users
    return MeasuredPoint({"concurrency": users}, [window], cpu=None, server_metrics=server or {})


def _row(cfg: LocustConfig, transport: str, raw: dict, duration: float, cpu: list[ProcessCpu], rc: int | None,
         out: Path, server: dict | None) -> ResultRow:
    row = profile(_point(cfg, transport, raw, duration, server), kind="locust", model=cfg.model,
                  mode=cfg.server_label or "served", batch_size=cfg.batch_size,
                  scenario=f"locust-{transport}" + ("-step" if cfg.step_shape else ""), server=cfg.server_label,
                  target=cfg.grpc_target if transport == "grpc" else cfg.rest_target, extra={
                      "workers": cfg.n_workers, "remote_workers": cfg.remote, "distributed": raw.get("distributed"),
                      "run_time": cfg.run_time, "spawn_rate": cfg.spawn_rate, "wait_s": cfg.wait_s,
                      "locust_csv": str(out / "locust_stats.csv"), "locust_html": str(out / "locust.html"),
                      "locust_rounded_stats": raw.get("locust_stats", {}), "master_exit_code": rc,
                      "note": "duration includes the spawn ramp; throughput = requests / (test_start..test_stop)"
                              + ("; one row for the whole step ramp, per-step figures in locust_stats_history.csv"
                                 if cfg.step_shape else "")})
    _judge_cpu(row, cpu, distributed=cfg.n_workers > 0)
    if raw.get("cpu_warning"):
        row.warnings.append("Locust reported a load-generator CPU above 90%: results are client-bound")
    return row


def _add_workers(row: ResultRow, cfg: LocustConfig, raw: dict) -> None:
    """Per worker: requests, CPU (Locust's own, from heartbeats) and saturation; the intervals over which
    how many workers were sending; a warning naming any worker lost mid-run."""
    workers = raw.get("workers", [])
    row.extra.update(worker_stats=workers, sending_intervals=raw.get("sending_intervals", []))
    if not cfg.n_workers:
        return
    if len(workers) < cfg.n_workers:
        row.warnings.append(f"only {len(workers)} of {cfg.n_workers} workers reported")
    for w in workers:
        if w.get("lost_at_s") is not None:
            last = (f"its last reported request at +{w['sending_to_s']}s" if w["sending_to_s"] is not None
                    else "no request reported")
            row.warnings.append(f"worker {w['name']} ({w['client_id']}) was lost mid-run ({w['lost_how']} at "
                                f"+{w['lost_at_s']}s; {last}): what it sent after its last report is in no count "
                                "here but the server's")
        if w.get("saturated"):
            row.client_saturated = True
            row.warnings.append(f"worker {w['name']} near saturation (its main thread at "
                                f"{w['main_thread_cpu_percent']:.0f}% of a core): numbers may reflect Locust, not "
                                "the server")
    if cfg.remote:  # workers on other machines: the CPU they measured themselves is all there is
        means = [w["cpu_percent"] for w in workers if w.get("cpu_percent") is not None]
        row.client_cpu_percent = round(sum(means), 1) if means else None
        row.client_saturated = any(w.get("saturated") for w in workers) if means else None
    spans = ", ".join(f"{i['workers']} from +{i['from_s']}s to +{i['to_s']}s" for i in row.extra["sending_intervals"])
    if spans:
        row.extra["sending_summary"] = spans


def _reconcile(row: ResultRow, transport: str, raw: dict, server: dict | None) -> None:
    """Requests as the master counted them, as the workers counted them, as Locust's own stats counted them and as
    the server's Prometheus counter did (when it has one). Any difference is reported, never smoothed over."""
    master = row.n + row.errors
    counts = {"master": master, "locust_stats": raw.get("locust_total", {}).get("num_requests"),
              "workers_sum": sum(w["requests"].get(transport, 0) for w in raw.get("workers", []))
              if raw.get("distributed") else None,
              # no counter in the server's metrics (delta leaves the key out): no count, not a count of 0
              "server": sum(server["request_count_by_status"].values())
              if server and "request_count_by_status" in server else None}
    gaps = {k: v - master for k, v in counts.items() if v is not None and v != master}
    row.extra.update(request_counts=counts, request_count_gaps=gaps)
    if gaps:
        row.warnings.append("request counts differ from the master's " + f"{master}: " + ", ".join(
            f"{k} {counts[k]} ({d:+d})" for k, d in gaps.items()) + " (the server also counts requests still in "
            "flight when the users were stopped; a lost worker's unreported requests reach only the server)")


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
