"""The one launcher of server processes the benchmarks, reliability, the perf check and the tests talk to:
the embedded TF Serving-API server, the Python no-op server, and the bare gRPC echo servers.

Each runs as its own process (so server CPU is not charged to the load generator and a crash cannot
take the benchmark down), in its own process group (a stop or kill reaches any child it forked). Ports
default to 0: the server binds free ones itself and says which (the embedded and echo servers in their
"listening:" log line, the no-op server in its ready file), so two launches can never race for a port;
the ports found are kept, so a restart after kill() comes back on the same ones.
Ready = the embedded server's gRPC health service answers SERVING and every model in `models` has an
AVAILABLE version over REST; the echo server once it listens; the no-op server once both endpoints listen.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.requests.signature import wait_until_available
from export.contract import LOCAL_MODEL_CONFIG_FILE, PROMETHEUS_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("embedded", "noop", "echo")
# What serving/cli/server.py and benchmarks/targets/echo.py log once their ports are open.
LISTENING = re.compile(r"listening: gRPC (\S+):(\d+), REST (?:(\S+):(\d+)|off)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time; the message carries the end of its log."""


@dataclass
class ManagedServer:
    kind: str  # embedded | noop | echo
    mode: str = "graph"  # embedded: graph | xla | eager; echo: sync | aio
    models_dir: Path | None = None  # embedded: serves <models_dir>/models.local.config ...
    config_file: Path | None = None  # ... or this ModelServerConfig
    models: tuple[str, ...] = ()  # embedded: ready only once each has an AVAILABLE version
    batching_file: Path | None = None  # embedded: --enable-batching with this file
    grpc_port: int = 0
    rest_port: int = 0
    log_path: Path | None = None  # default: a temporary file, removed by stop()
    delay_ms: float = 0.0  # noop: sleep in every Predict
    start_timeout_s: float = 180.0
    stop_timeout_s: float = 15.0  # SIGTERM, then SIGKILL after this long
    extra_args: list[str] = field(default_factory=list)
    serve_args: list[str] | None = None  # embedded: a whole `serve` command line instead (e.g. TF Serving's flags)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    exit_code: int | None = None  # set by stop()/kill(); -9 when it had to be killed
    _temp_log: bool = field(default=False, init=False, repr=False)
    _ready_path: Path | None = field(default=None, init=False, repr=False)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_target(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.rest_target}"

    @property
    def metrics_url(self) -> str:
        return f"{self.rest_url}{PROMETHEUS_PATH}"

    @property
    def label(self) -> str:
        return "noop" if self.kind == "noop" else f"{self.kind}-{self.mode}"

    @property
    def pids(self) -> list[int]:
        """Processes to charge server CPU to (their children count too: the no-op server forks one)."""
        return [self.proc.pid] if self.proc else []

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def command(self) -> list[str]:
        py = sys.executable
        ports = ["--grpc-port", str(self.grpc_port), "--rest-port", str(self.rest_port)]
        if self.kind == "noop":
            return [py, "-m", "benchmarks", "noop-server", *ports, "--delay-ms", str(self.delay_ms),
                    "--ready-file", str(self._ready_file()), *self.extra_args]
        if self.kind == "echo":
            return [py, "-m", "benchmarks.targets.echo", "--kind", self.mode, "--grpc-port", str(self.grpc_port),
                    *self.extra_args]
        if self.kind == "embedded" and self.serve_args is not None:
            return [py, "-m", "serving", "serve", *self.serve_args]
        if self.kind == "embedded":
            return [py, "-m", "serving", "serve", "--mode", self.mode, *ports,
                    "--model-config-file", str(self._model_config()), *self._batching_args(), *self.extra_args]
        raise ValueError(f"unknown server kind {self.kind!r} ({'|'.join(KINDS)})")

    def _model_config(self) -> Path:
        if self.config_file is not None:
            config = Path(self.config_file).resolve()
        elif self.models_dir is not None:
            config = Path(self.models_dir).resolve() / LOCAL_MODEL_CONFIG_FILE
        else:
            raise ValueError("the embedded server needs models_dir or config_file")
        if not config.is_file():
            raise FileNotFoundError(f"{config} not found: export the models first (python -m export)")
        return config

    def _batching_args(self) -> list[str]:
        if self.batching_file is None:
            return []
        return ["--enable-batching", "--batching-parameters-file", str(Path(self.batching_file).resolve())]

    def _ready_file(self) -> Path:
        if self._ready_path is None:
            self._ready_path = Path(tempfile.mkdtemp(prefix="noop-ready-")) / "ready.json"
        return self._ready_path

    def start(self) -> "ManagedServer":
        cmd = self.command()
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"{self.label}-server-", suffix=".log")
            os.close(fd)
            self.log_path, self._temp_log = Path(name), True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # a restart appends
        if self._ready_path is not None:
            self._ready_path.unlink(missing_ok=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "PYTHONUNBUFFERED": "1",  # the ports are read from the log as soon as they are printed
               "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO_ROOT, env=env, start_new_session=True)
        self.exit_code = None
        try:
            self.wait_ready(log_offset)
        except BaseException:
            self.stop()
            raise
        return self

    # ------------------------------------------------------------------------------------------ readiness
    def _fail(self, what: str) -> ServerStartError:
        return ServerStartError(f"{self.label} server {what} ({self.log_path}):\n{self.log_text()[-4000:]}")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self._fail(f"exited with {self.proc.returncode} before it was ready")

    def wait_ready(self, log_offset: int = 0) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        if self.kind == "noop":
            self._wait_ready_file(deadline)
            return
        self._wait_listening(deadline, log_offset)
        if self.kind == "embedded":
            self._wait_serving(deadline)
            if self.models and self.rest_port > 0:
                try:
                    wait_until_available("rest", self.rest_target, list(self.models), deadline - time.monotonic(),
                                         check=self._check_alive)
                except TimeoutError as e:
                    raise self._fail(f"not ready after {self.start_timeout_s:.0f} s ({e})") from None

    def _wait_ready_file(self, deadline: float) -> None:
        # the no-op server writes its ready file only once BOTH endpoints listen
        while not self._ready_file().exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._fail(f"wrote no ready file within {self.start_timeout_s:.0f} s")
            time.sleep(0.05)
        ports = json.loads(self._ready_file().read_text())
        self.grpc_port, self.rest_port = int(ports["grpc_port"]), int(ports["rest_port"])

    def _wait_listening(self, deadline: float, log_offset: int) -> None:
        while True:
            with open(self.log_path, "rb") as fh:
                fh.seek(log_offset)
                m = LISTENING.search(fh.read().decode(errors="replace"))
            if m:
                self.grpc_port = int(m.group(2))
                self.rest_port = int(m.group(4)) if m.group(4) else -1
                return
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._fail(f"did not open its ports within {self.start_timeout_s:.0f} s")
            time.sleep(0.1)

    def _wait_serving(self, deadline: float) -> None:
        """gRPC health SERVING: the embedded server's initial model load is over."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.grpc_target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                self._check_alive()
                with contextlib.suppress(grpc.RpcError):
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.2)
        raise self._fail(f"not SERVING within {self.start_timeout_s:.0f} s")

    # ------------------------------------------------------------------------------------------ stopping
    def kill(self) -> None:
        """Hard kill (fault injection): no graceful shutdown."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc:
            self.exit_code = self.proc.returncode

    def stop(self) -> int | None:
        """SIGTERM (the server drains in-flight requests), SIGKILL after stop_timeout_s; returns the exit code."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                self.proc.wait(timeout=10)
        if self.proc:
            self.exit_code = self.proc.returncode
        self._cleanup()
        return self.exit_code

    def _cleanup(self) -> None:
        if self._ready_path is not None:
            import shutil

            shutil.rmtree(self._ready_path.parent, ignore_errors=True)
            self._ready_path = None
        if self._temp_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path, self._temp_log = None, False

    def __enter__(self) -> "ManagedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_for_run(args, run_dir: Path, models: tuple[str, ...], extra_args: tuple[str, ...] = ()) -> ManagedServer | None:
    """Start the server a benchmark command asked for (``--server embedded|noop``), logging into its run dir.

    None for ``--server none``: the command then measures an external server (``--target``, ``--rest-target``).
    Only the embedded server loads models and takes extra serve arguments; the no-op one answers any model.
    """
    if args.server == "none":
        return None
    embedded = args.server == "embedded"
    return ManagedServer(args.server, mode=args.mode, models_dir=args.models_dir, models=models if embedded else (),
                         log_path=Path(run_dir) / f"{args.server}-server.log",
                         extra_args=list(extra_args) if embedded else []).start()
