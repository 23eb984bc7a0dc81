"""Start/stop servers the benchmarks talk to: the embedded TF Serving-API server or the no-op one.

Each runs as its own process (so server CPU is not charged to the load generator and a crash cannot
take the benchmark down); readiness = every model reports AVAILABLE over REST.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ManagedServer:
    kind: str  # embedded | noop
    mode: str = "graph"  # embedded: graph | xla | eager
    models_dir: Path | None = None
    models: tuple[str, ...] = ()
    grpc_port: int = 0
    rest_port: int = 0
    log_path: Path | None = None
    delay_ms: float = 0.0
    start_timeout_s: float = 180.0
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_target(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}/monitoring/prometheus/metrics"

    @property
    def label(self) -> str:
        return "noop" if self.kind == "noop" else f"{self.kind}-{self.mode}"

    @property
    def pids(self) -> list[int]:
        """Processes to charge server CPU to (their children count too: the no-op server forks one)."""
        return [self.proc.pid] if self.proc else []

    def command(self) -> list[str]:
        py = sys.executable
        if self.kind == "noop":
            return [py, "-m", "benchmarks", "noop-server", "--grpc-port", str(self.grpc_port),
                    "--rest-port", str(self.rest_port), "--delay-ms", str(self.delay_ms),
                    "--ready-file", str(self._ready_file()), *self.extra_args]
        if self.kind == "embedded":
            if self.models_dir is None:
                raise ValueError("embedded server needs models_dir")
            config = Path(self.models_dir).resolve() / "models.local.config"
            if not config.is_file():
                raise FileNotFoundError(f"{config} not found: export the models first (python -m export)")
            return [py, "-m", "serving", "serve", "--mode", self.mode, "--grpc-port", str(self.grpc_port),
                    "--rest-port", str(self.rest_port), "--model-config-file", str(config), *self.extra_args]
        raise ValueError(f"unknown server kind {self.kind!r} (embedded|noop)")

    def _ready_file(self) -> Path:
        import tempfile

        if not getattr(self, "_ready_path", None):
            self._ready_path = Path(tempfile.mkdtemp(prefix="noop-ready-")) / "ready.json"
        return self._ready_path

    def start(self) -> "ManagedServer":
        self.grpc_port = self.grpc_port or free_port()
        self.rest_port = self.rest_port or free_port()
        cmd = self.command()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
                                     start_new_session=True)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        probe = list(self.models) or ["__probe__"]
        last = ""
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} server exited with {self.proc.returncode} before it was ready"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            if self.kind == "noop":
                # the no-op server writes its ready file only once BOTH endpoints listen
                if self._ready_file().exists():
                    return
                time.sleep(0.05)
                continue
            try:
                ready = True
                for m in probe:
                    r = requests.get(f"http://{self.rest_target}/v1/models/{m}", timeout=2)
                    states = [v.get("state") for v in r.json().get("model_version_status", [])] if r.ok else []
                    if "AVAILABLE" not in states:
                        ready, last = False, f"{m}: HTTP {r.status_code} {states}"
                        break
                if ready:
                    return
            except (requests.RequestException, ValueError) as e:
                last = str(e)
            time.sleep(0.3)
        raise TimeoutError(f"{self.label} server not ready after {self.start_timeout_s:.0f}s ({last})")

    def kill(self) -> None:
        """Hard kill (fault injection): no graceful shutdown."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def _cleanup(self) -> None:
        rp = getattr(self, "_ready_path", None)
        if rp is not None:
            import shutil

            shutil.rmtree(rp.parent, ignore_errors=True)
            self._ready_path = None

    def stop(self) -> None:
        self._cleanup()
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def __enter__(self) -> "ManagedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_for_run(args, run_dir: Path, models: tuple[str, ...], extra_args: tuple[str, ...] = ()) -> ManagedServer | None:
    """Start the server a benchmark command asked for (``--server embedded|noop``), logging into its run dir.

    None for ``--server none``: the command then measures an external server (``--grpc-target`` etc.).
    Only the embedded server loads models and takes extra serve arguments; the no-op one answers any model.
    """
    if args.server == "none":
        return None
    embedded = args.server == "embedded"
    return ManagedServer(args.server, mode=args.mode, models_dir=args.models_dir, models=models if embedded else (),
                         log_path=Path(run_dir) / f"{args.server}-server.log",
                         extra_args=list(extra_args) if embedded else []).start()
