"""Result schema (one JSON document per run), environment capture, and a crash-safe writer.

Layout of a run: <results-dir>/<run-id>/
    results.json   {"schema_version", "run_id", "environment": {...}, "results": [row, ...]}
    results.csv    the same rows without the raw histogram (spreadsheet-friendly)
    report.md      human-readable tables (written by report.py)
Every append rewrites results.json/results.csv atomically (temp file + os.replace), so an interrupted
run keeps every row it had measured and never leaves a half-written file behind.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import platform
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from benchmarks.measure.histogram import LatencyHistogram

SCHEMA_VERSION = 1
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"

KINDS = ("inprocess", "grpc", "rest", "locust", "wrk")


@dataclass
class Environment:
    """Where and how a run was made: enough to tell whether two runs are comparable."""

    cpu_model: str = ""
    cpu_cores_logical: int = 0
    cpu_cores_physical: int = 0
    memory_gib: float = 0.0
    gpus: list[str] = field(default_factory=list)
    os: str = ""
    python: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    server_kind: str = ""  # embedded | tfserving | noop | none
    server_mode: str = ""  # graph | xla | eager | ...
    git_commit: str = ""
    git_dirty: bool = False
    hostname: str = ""
    started_at: str = ""
    load_average: float | None = None  # 1-minute load at the start: on a shared machine, how busy it was
    command: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


# The fields that identify a row across runs (`compare` matches on them, minus any it is told to ignore)
KEY_FIELDS = ("kind", "model", "mode", "scenario", "batch_size", "concurrency", "target_rate", "server", "client")


@dataclass
class ResultRow:
    """One measured point. Latencies in ms; the raw HdrHistogram travels in `histogram`."""

    kind: str  # inprocess | grpc | rest | locust | wrk
    model: str
    mode: str  # eager | predict_on_batch | graph | xla | savedmodel | tfserving-graph | noop ...
    batch_size: int
    scenario: str = "closed"  # closed | single_stream | server | offline | first_call | locust | wrk
    concurrency: int | None = None
    target_rate: float | None = None
    achieved_rate: float | None = None
    n: int = 0
    errors: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    max_ms: float = math.nan
    mean_ms: float = math.nan
    throughput_rps: float = math.nan
    rows_per_s: float = math.nan
    duration_s: float = math.nan
    stable: bool | None = None  # closed-loop sweep: did 3 windows in a row agree?
    client_cpu_percent: float | None = None  # load generator's own CPU use (100 = one core)
    client_saturated: bool | None = None
    # Per load-generator process when there are several (Locust: master/workers), each a dict with role, pid,
    # cpu_percent and main_thread_cpu_percent; client_cpu_percent is then their sum. Empty for one process.
    client_processes: list[dict[str, Any]] = field(default_factory=list)
    serialize_ms: float | None = None  # request encode cost per request, measured outside the timed section
    deserialize_ms: float | None = None
    server: str = ""  # server kind/mode the row was measured against
    client: str = ""  # load-generator client that sent the requests (grpc.aio | libcurl | asyncio-http1 | ...)
    target: str = ""  # host:port or "" for in-process
    histogram: str = ""  # HdrHistogram encoded (µs values); empty when n == 0
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def key(self) -> tuple:
        """Identity used to match rows across runs in `compare`."""
        return tuple(getattr(self, f) for f in KEY_FIELDS)

    def histogram_obj(self) -> LatencyHistogram:
        return LatencyHistogram.decode(self.histogram)

    @classmethod
    def from_histogram(cls, hist: LatencyHistogram, *, duration_s: float, errors: int = 0,
                       errors_by_code: dict[str, int] | None = None, **kw: Any) -> "ResultRow":
        """Fill percentiles, throughput and rows/s from a histogram of successful requests."""
        s = hist.summary()
        row = cls(**kw)
        row.n = s.n
        row.errors = errors
        row.errors_by_code = dict(errors_by_code or {})
        row.p50_ms, row.p90_ms, row.p95_ms = s.p50_ms, s.p90_ms, s.p95_ms
        row.p99_ms, row.p999_ms, row.max_ms, row.mean_ms = s.p99_ms, s.p999_ms, s.max_ms, s.mean_ms
        row.duration_s = duration_s
        if duration_s and duration_s > 0:
            row.throughput_rps = s.n / duration_s
            row.rows_per_s = row.throughput_rps * row.batch_size
        row.histogram = hist.encode()
        return row


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_safe(v: Any) -> Any:
    """NaN is not valid JSON: store it as null so other tools can read the file (keys as strings, as JSON has)."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def row_from_dict(d: dict[str, Any]) -> ResultRow:
    names = {f.name for f in dataclasses.fields(ResultRow)}
    kw = {k: v for k, v in d.items() if k in names}
    row = ResultRow(**kw)
    for name in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms",
                 "throughput_rps", "rows_per_s", "duration_s"):
        if getattr(row, name) is None:
            setattr(row, name, math.nan)
    return row


def current_umask() -> int:
    """The process umask without changing it (Linux reports it in /proc); os.umask's set-and-restore otherwise."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp creates 0600; a result file follows the umask as open() does
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


CSV_FIELDS = [f.name for f in dataclasses.fields(ResultRow) if f.name not in ("histogram", "extra")]


def rows_to_csv(rows: Iterable[ResultRow]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        d = dataclasses.asdict(r)
        d["errors_by_code"] = json.dumps(d["errors_by_code"], sort_keys=True)
        d["client_processes"] = json.dumps(d["client_processes"], sort_keys=True) if d["client_processes"] else ""
        d["warnings"] = " | ".join(d["warnings"])
        w.writerow(d)
    return buf.getvalue()


class ResultWriter:
    """Owns one run directory; append() flushes the whole document atomically every time."""

    def __init__(self, run_dir: Path, environment: Environment) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.environment = environment
        self.rows: list[ResultRow] = []
        self._lock = threading.Lock()
        self.flush()

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def append(self, row: ResultRow) -> ResultRow:
        if row.kind not in KINDS:
            raise ValueError(f"unknown result kind {row.kind!r}; expected one of {KINDS}")
        with self._lock:
            self.rows.append(row)
            self._flush_locked()
        return row

    def extend(self, rows: Iterable[ResultRow]) -> None:
        for r in rows:
            self.append(r)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "environment": dataclasses.asdict(self.environment),
            "results": [dataclasses.asdict(r) for r in self.rows],
        }

    def _flush_locked(self) -> None:
        doc = json_safe(self.to_dict())
        atomic_write_text(self.run_dir / RESULTS_JSON,
                          json.dumps(doc, indent=1, default=_json_default, allow_nan=False))
        atomic_write_text(self.run_dir / RESULTS_CSV, rows_to_csv(self.rows))


@dataclass
class LoadedRun:
    run_dir: Path
    run_id: str
    environment: dict[str, Any]
    rows: list[ResultRow]


def load_run(path: Path) -> LoadedRun:
    path = Path(path)
    f = path / RESULTS_JSON if path.is_dir() else path
    if not f.exists():
        raise FileNotFoundError(f"no {RESULTS_JSON} in {path}")
    doc = json.loads(f.read_text(encoding="utf-8"))
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{f}: schema_version {doc.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return LoadedRun(f.parent, doc.get("run_id", f.parent.name), doc.get("environment", {}),
                     [row_from_dict(r) for r in doc.get("results", [])])


def resolve_run(ref: str, results_dir: Path | None) -> Path:
    """Accept a run directory, a results.json path, or a run id under results_dir ('latest' works)."""
    p = Path(ref)
    if p.exists():
        return p
    if results_dir is not None:
        if ref == "latest":
            runs = sorted((d for d in Path(results_dir).iterdir() if (d / RESULTS_JSON).exists()),
                          key=lambda d: d.stat().st_mtime)
            if runs:
                return runs[-1]
        cand = Path(results_dir) / ref
        if cand.exists():
            return cand
    raise FileNotFoundError(f"run {ref!r} not found (looked for a path and under {results_dir})")


def new_run_id(prefix: str = "") -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{prefix + '-' if prefix else ''}{uuid.uuid4().hex[:6]}"


# ------------------------------------------------------------------------------------------
# environment capture
# ------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    # nvidia-smi is the cheapest honest probe; importing TF just to list GPUs costs seconds.
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return [l.strip() for l in out.stdout.splitlines() if l.strip()]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return []


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[2])
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def capture_environment(*, server_kind: str = "", server_mode: str = "",
                        settings: dict[str, Any] | None = None, command: str = "") -> Environment:
    import psutil

    dists = ["tensorflow", "keras", "tensorflow-serving-api", "grpcio", "protobuf", "numpy", "locust",
             "mlcommons-loadgen", "hdrhistogram", "scipy", "gevent"]
    return Environment(
        cpu_model=_cpu_model(),
        cpu_cores_logical=psutil.cpu_count(logical=True) or 0,
        cpu_cores_physical=psutil.cpu_count(logical=False) or 0,
        memory_gib=round(psutil.virtual_memory().total / 2**30, 2),
        gpus=_gpus(),
        os=platform.platform(),
        python=platform.python_version(),
        versions={d: _version(d) for d in dists},
        server_kind=server_kind,
        server_mode=server_mode,
        git_commit=_git("rev-parse", "HEAD"),
        git_dirty=bool(_git("status", "--porcelain", "--untracked-files=no")),
        hostname=platform.node(),
        started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        load_average=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        command=command,
        settings=dict(settings or {}),
    )
