"""Triton's perf_analyzer as an independent load generator for TF Serving's gRPC API: find it, check it
can start, run one (batch, concurrency) point, and parse what it measured.

Where it comes from: PyPI `tritonclient==2.41.0` (manylinux wheel) installs the binary as
`<venv>/bin/perf_analyzer`; it links `libb64.so.0d` (Debian `libb64-0d`) and `libcudart.so.12` (PyPI
`nvidia-cuda-runtime-cu12`, found through LD_LIBRARY_PATH); it runs without a GPU. `find()` says
exactly what is missing; `install()` installs it (pip into this interpreter's environment, apt-get as root).
"""
from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.system_packages import apt_install

TRITONCLIENT = "tritonclient==2.41.0"
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12==12.9.79"
APT_PACKAGE = "libb64-0d"
# library perf_analyzer links -> how to get it
_LIBRARIES = {"libb64.so.0d": f"apt-get install -y {APT_PACKAGE}",
              "libcudart.so.12": f"pip install {CUDA_RUNTIME}"}


class PerfAnalyzerMissing(RuntimeError):
    """perf_analyzer or a library it needs is not installed; the message says what to install."""


@dataclass
class PerfAnalyzer:
    binary: Path
    env: dict[str, str]  # os.environ plus LD_LIBRARY_PATH for libcudart


def _cudart_dir() -> Path | None:
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        lib = Path(base) / "cuda_runtime" / "lib"
        if (lib / "libcudart.so.12").exists():
            return lib
    return None


def _binary() -> Path | None:
    here = Path(sys.executable).parent / "perf_analyzer"  # where the tritonclient wheel puts it
    if here.exists():
        return here
    found = shutil.which("perf_analyzer")
    return Path(found) if found else None


def find() -> PerfAnalyzer:
    """The runnable binary, or PerfAnalyzerMissing naming every missing piece and its install command."""
    binary = _binary()
    if binary is None:
        raise PerfAnalyzerMissing(
            f"perf_analyzer not found: pip install {TRITONCLIENT} {CUDA_RUNTIME} (into this environment: "
            f"{sys.executable} -m pip ...) and apt-get install -y {APT_PACKAGE}; `make crosscheck` does it")
    env = dict(os.environ)
    lib = _cudart_dir()
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), env.get("LD_LIBRARY_PATH", "")]))
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env).stdout
    missing = [name for name in _LIBRARIES if re.search(rf"{re.escape(name)} => not found", ldd)]
    if missing:
        how = "; ".join(f"{m}: {_LIBRARIES[m]}" for m in missing)
        raise PerfAnalyzerMissing(f"{binary} cannot start, missing {', '.join(missing)} ({how}); "
                                  "`make crosscheck` installs them")
    return PerfAnalyzer(binary, env)


def install() -> PerfAnalyzer:
    """Install what is missing: pip into this interpreter's environment, apt-get libb64 when root."""
    if _binary() is None or _cudart_dir() is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", TRITONCLIENT, CUDA_RUNTIME], check=True)
    try:
        return find()
    except PerfAnalyzerMissing as e:
        if "libb64" not in str(e) or os.geteuid() != 0:
            raise
    apt_install(APT_PACKAGE, check=True)
    return find()


@dataclass
class PaPoint:
    """What perf_analyzer measured at one (batch, concurrency) point; latencies in µs as it reports them."""

    batch_size: int
    concurrency: int
    stable: bool
    infer_per_s: float = float("nan")  # rows/s (perf_analyzer counts inferences = batch rows)
    p50_us: float = float("nan")
    p90_us: float = float("nan")
    p95_us: float = float("nan")
    p99_us: float = float("nan")
    request_count: int = 0
    avg_grpc_us: float | None = None
    command: list[str] = field(default_factory=list)
    output_tail: str = ""


_PASS = re.compile(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec\. p50 latency: (\d+) usec")


def _unstable_point(stdout: str, batch_size: int, concurrency: int) -> PaPoint:
    """No stable measurement (no CSV row): the last 3 windows' figures from -v output, marked unstable,
    the way our sweep reports a point that never stabilised."""
    passes = [(float(t), float(p)) for t, p in _PASS.findall(stdout)][-3:]
    point = PaPoint(batch_size, concurrency, stable=False, output_tail=stdout[-800:])
    if passes:
        point.infer_per_s = sum(t for t, _ in passes) / len(passes)
        point.p50_us = sorted(p for _, p in passes)[len(passes) // 2]
    return point


def parse_output(csv_text: str, stdout: str, batch_size: int, concurrency: int) -> PaPoint:
    """perf_analyzer's -f CSV (one row per concurrency) plus the client summary it prints."""
    rows = [r for r in csv.DictReader(io.StringIO(csv_text)) if r.get("Concurrency")]
    row = next((r for r in rows if int(r["Concurrency"]) == concurrency), None)
    if row is None:
        return _unstable_point(stdout, batch_size, concurrency)
    count = re.search(r"Request count:\s*(\d+)", stdout)
    grpc_time = re.search(r"Avg gRPC time:\s*(\d+) usec", stdout)
    return PaPoint(batch_size, concurrency, stable=True, infer_per_s=float(row["Inferences/Second"]),
                   p50_us=float(row["p50 latency"]), p90_us=float(row["p90 latency"]),
                   p95_us=float(row["p95 latency"]), p99_us=float(row["p99 latency"]),
                   request_count=int(count.group(1)) if count else 0,
                   avg_grpc_us=float(grpc_time.group(1)) if grpc_time else None, output_tail=stdout[-800:])


def run_point(pa: PerfAnalyzer, *, target: str, model: str, batch_size: int, concurrency: int, window_ms: int,
              max_trials: int, stability_pct: float, signature: str, shapes: dict[str, tuple[int, ...]],
              input_data: Path | None, out_dir: Path, label: str = "") -> PaPoint:
    """One closed-loop point over gRPC, stabilised on p50. `label` tells repeated points' files apart."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"pa-b{batch_size}-c{concurrency}{label}"
    csv_path = out_dir / f"{stem}.csv"
    csv_path.unlink(missing_ok=True)  # perf_analyzer writes no CSV when it finds no stable point: never read an old one
    cmd = [str(pa.binary), "-m", model, "--service-kind=tfserving", "-i", "grpc", "-u", target,
           "-b", str(batch_size), f"--concurrency-range={concurrency}:{concurrency}",
           "-p", str(window_ms), f"--max-trials={max_trials}", f"--stability-percentage={stability_pct:g}",
           "--percentile=50", "--model-signature-name", signature, "-f", str(csv_path), "-v"]
    cmd += [f"--shape={name}:{','.join(map(str, dims))}" for name, dims in shapes.items()]
    if input_data is not None:
        cmd += ["--input-data", str(input_data)]
    timeout = 60 + max_trials * window_ms / 1000 * 3
    proc = subprocess.run(cmd, capture_output=True, text=True, env=pa.env, timeout=timeout)
    stdout = proc.stdout + proc.stderr
    (out_dir / f"{stem}.log").write_text(" ".join(cmd) + "\n\n" + stdout)
    point = parse_output(csv_path.read_text() if csv_path.exists() else "", stdout, batch_size, concurrency)
    point.command = cmd
    return point
