"""Start the embedded server in a subprocess for tests and benchmarks; stop it cleanly afterwards.

    with running_server(models_dir) as server:           # a dir with models.local.config, or a config file
        stub = server.prediction_stub()
        requests.get(f"{server.rest_url}/v1/models/residual_regressor")

The server is started with ports 0 (the OS picks free ones, no race), the real ports are read from its
"listening:" log line, and readiness is the gRPC health service answering SERVING. On exit it gets SIGTERM
and must stop by itself within `stop_timeout` (it is killed otherwise and `ServerHandle.exit_code` says so).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening: gRPC (\S+):(\d+), REST (?:(\S+):(\d+)|off)")


class ServerStartError(RuntimeError):
    pass


@dataclass
class ServerHandle:
    grpc_target: str
    rest_url: str
    process: subprocess.Popen
    log_path: Path
    exit_code: int | None = None
    _channels: list[grpc.Channel] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def channel(self) -> grpc.Channel:
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        ch = grpc.insecure_channel(self.grpc_target, options=options)
        self._channels.append(ch)
        return ch

    def prediction_stub(self):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel())

    def model_stub(self):
        from tensorflow_serving.apis import model_service_pb2_grpc

        return model_service_pb2_grpc.ModelServiceStub(self.channel())

    def close_channels(self) -> None:
        for ch in self._channels:
            ch.close()
        self._channels.clear()

    def stop(self, timeout: float = 60.0, sig: int = signal.SIGTERM) -> int:
        """Ask the server to drain and exit; returns its exit code (-9 if it had to be killed)."""
        self.close_channels()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.exit_code = self.process.returncode
        return self.exit_code


def _wait_listening(proc: subprocess.Popen, log_path: Path, timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = _LISTENING.search(log_path.read_text(errors="replace"))
        if m:
            rest = f"http://{m.group(3)}:{m.group(4)}" if m.group(4) else ""
            return f"{m.group(1)}:{m.group(2)}", rest
        if proc.poll() is not None:
            raise ServerStartError(f"server exited with {proc.returncode} before listening:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.1)
    raise ServerStartError(f"server did not open its ports within {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")


def wait_serving(target: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    """Block until grpc.health.v1 says SERVING (all models loaded)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerStartError(f"server exited with {proc.returncode} while loading:\n{log_path.read_text()[-4000:]}")
            with contextlib.suppress(grpc.RpcError):
                if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    raise ServerStartError(f"server not SERVING within {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")


def server_command(models_dir_or_config: Path | str, mode: str = "graph", batching_file: Path | str | None = None,
                   extra_args: Sequence[str] = ()) -> list[str]:
    source = Path(models_dir_or_config)
    argv = [sys.executable, "-m", "serving", "serve", "--mode", mode, "--grpc-port", "0", "--rest-port", "0"]
    argv += ["--models-dir", str(source)] if source.is_dir() else ["--model-config-file", str(source)]
    if batching_file is not None:
        argv += ["--enable-batching", "--batching-parameters-file", str(batching_file)]
    return argv + list(extra_args)


@contextlib.contextmanager
def running_server(models_dir_or_config: Path | str | None, mode: str = "graph", batching_file: Path | str | None = None,
                   extra_args: Sequence[str] = (), ready_timeout: float = 180.0, stop_timeout: float = 60.0,
                   env: dict[str, str] | None = None, wait_ready: bool = True,
                   serve_args: Sequence[str] | None = None) -> Iterator[ServerHandle]:
    """Run `python -m serving serve` on free ports until the block ends (then SIGTERM and wait).

    `serve_args` replaces the whole `serve` command line (e.g. TF Serving's flags, ports included); the
    other arguments that build one are then unused."""
    log_file = tempfile.NamedTemporaryFile(prefix="embedded-server-", suffix=".log", delete=False)
    log_path = Path(log_file.name)
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **(env or {})}
    argv = [sys.executable, "-m", "serving", "serve", *serve_args] if serve_args is not None else \
        server_command(models_dir_or_config, mode, batching_file, extra_args)
    proc = subprocess.Popen(argv, cwd=REPO_ROOT,
                            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env)
    log_file.close()
    handle: ServerHandle | None = None
    try:
        target, rest_url = _wait_listening(proc, log_path, ready_timeout)
        handle = ServerHandle(target, rest_url, proc, log_path)
        if wait_ready:
            wait_serving(target, proc, log_path, ready_timeout)
        yield handle
    finally:
        if handle is not None:
            handle.stop(stop_timeout)
        elif proc.poll() is None:
            proc.kill()
            proc.wait(10)
