"""One interface to put a server in a trial's configuration: `start(config, trial_dir) -> Endpoint`, `stop()`.

  embedded   the embedded server as a managed process (benchmarks/targets/managed.py), with the trial's
             batching file and flags; every setting of the search space applies.
  tfserving  the TF Serving container, `docker run` built from the service `make serve SERVER=tfserving`
             runs (docker/docker-compose.yml: image, entrypoint, flags, the model and monitoring mounts), with
             the trial's batching file mounted and its flags in place of the compose file's batching ones.
  manual     a server the user manages: prints the configuration and waits for Enter once it is applied.

A server that refuses a configuration or does not come up raises `TrialRefused` with the reason; the search
records it and goes on.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import requests

from benchmarks.targets.managed import REPO_ROOT, ManagedServer, ServerStartError, free_port
from benchmarks.tune.space import TrialConfig
from export.contract import PROMETHEUS_PATH

BATCHING_FILE = "batching_parameters.txt"
TF_SERVING_SETTINGS = ("batching", "batch_timeout_micros", "max_batch_size", "num_batch_threads",
                       "max_enqueued_batches", "allowed_batch_sizes", "intra_op", "inter_op", "rest_api_num_threads")
EMBEDDED_SETTINGS = TF_SERVING_SETTINGS + ("max_concurrent_executions", "mode")
COMPOSE_FILE = REPO_ROOT / "docker" / "docker-compose.yml"  # what `make serve SERVER=tfserving` runs on a CPU host


class TrialRefused(RuntimeError):
    """The server refused the configuration or did not start; the message is the reason."""


@dataclass(frozen=True)
class Endpoint:
    grpc_target: str
    rest_target: str
    server: str  # the result rows' server label
    pids: tuple[int, ...] = ()  # processes whose CPU is the server's

    @property
    def metrics_url(self) -> str:
        return f"http://{self.rest_target}{PROMETHEUS_PATH}" if self.rest_target else ""


class Launcher(Protocol):
    name: str
    settings: tuple[str, ...]  # the TrialConfig settings this server has

    def start(self, config: TrialConfig, trial_dir: Path) -> Endpoint: ...

    def stop(self) -> None: ...


def write_batching_file(config: TrialConfig, trial_dir: Path) -> Path:
    trial_dir.mkdir(parents=True, exist_ok=True)
    path = trial_dir / BATCHING_FILE
    path.write_text(config.batching_text())
    return path


def last_words(log: str, lines: int = 2) -> str:
    """The end of a server log: usually the line that says why it stopped."""
    tail = [line.strip() for line in log.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(tail)[-300:] or "no output"


@dataclass
class EmbeddedLauncher:
    models_dir: Path
    model: str
    start_timeout_s: float = 120.0
    name: str = "embedded"
    settings: tuple[str, ...] = EMBEDDED_SETTINGS
    server: ManagedServer | None = field(default=None, init=False)

    def start(self, config: TrialConfig, trial_dir: Path) -> Endpoint:
        batching = write_batching_file(config, trial_dir)
        srv = ManagedServer("embedded", mode=config.mode, models_dir=self.models_dir, models=(self.model,),
                            log_path=trial_dir / "server.log", start_timeout_s=self.start_timeout_s,
                            extra_args=config.server_flags(str(batching.resolve())) + config.embedded_flags())
        try:
            self.server = srv.start()
        except ServerStartError:
            raise TrialRefused(f"server did not start: {last_words(srv.log_text())}") from None
        return Endpoint(srv.grpc_target, srv.rest_target, srv.label, tuple(srv.pids))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _compose_service(compose_file: Path) -> dict:
    import yaml

    return yaml.safe_load(compose_file.read_text())["services"]["tfserving"]


@dataclass
class TfServingLauncher:
    models_dir: Path
    model: str
    compose_file: Path = COMPOSE_FILE
    start_timeout_s: float = 180.0
    name: str = "tfserving"
    settings: tuple[str, ...] = TF_SERVING_SETTINGS
    container: str = field(default="", init=False)
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run

    def command(self, config: TrialConfig, batching_file: Path, grpc_port: int, rest_port: int) -> list[str]:
        """`docker run` of the compose service, its batching flags replaced by the trial's."""
        service = _compose_service(self.compose_file)
        flags = [f.replace("${TFS_XLA_CPU:-false}", "true" if config.mode == "xla" else "false")
                 for f in service["command"] if "batching" not in f]
        mounts = {Path(self.models_dir).resolve(): "/models", batching_file.resolve(): "/config/batching.config",
                  self.compose_file.parent / "monitoring.config": "/config/monitoring.config"}
        volumes = [arg for src, dst in mounts.items() for arg in ("-v", f"{src}:{dst}:ro")]
        return ["docker", "run", "--rm", "-d", "--init", "-p", f"127.0.0.1:{grpc_port}:8500",
                "-p", f"127.0.0.1:{rest_port}:8501", *volumes, "--entrypoint", service["entrypoint"][0],
                service["image"], *flags, *config.server_flags("/config/batching.config")]

    def start(self, config: TrialConfig, trial_dir: Path) -> Endpoint:
        grpc_port, rest_port = free_port(), free_port()
        cmd = self.command(config, write_batching_file(config, trial_dir), grpc_port, rest_port)
        (trial_dir / "docker_run.txt").write_text(" ".join(cmd) + "\n")
        done = self.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise TrialRefused(f"docker run failed: {last_words(done.stderr)}")
        self.container = done.stdout.strip()
        rest = f"127.0.0.1:{rest_port}"
        deadline = time.monotonic() + self.start_timeout_s
        while not _available(rest, self.model):
            state = self.run(["docker", "inspect", "-f", "{{.State.Running}}", self.container],
                             capture_output=True, text=True)
            if state.stdout.strip() != "true" or time.monotonic() > deadline:
                logs = self.run(["docker", "logs", "--tail", "5", self.container], capture_output=True, text=True)
                self.stop()
                raise TrialRefused(f"TF Serving did not become ready: {last_words(logs.stdout + logs.stderr)}")
            time.sleep(1.0)
        return Endpoint(f"127.0.0.1:{grpc_port}", rest, "tfserving")

    def stop(self) -> None:
        if self.container:
            self.run(["docker", "rm", "-f", self.container], capture_output=True, text=True)
            self.container = ""


def _available(rest_target: str, model: str) -> bool:
    try:
        r = requests.get(f"http://{rest_target}/v1/models/{model}", timeout=2)
        return r.ok and any(v.get("state") == "AVAILABLE" for v in r.json().get("model_version_status", []))
    except (requests.RequestException, ValueError):
        return False


@dataclass
class ManualLauncher:
    grpc_target: str
    rest_target: str
    ask: Callable[[str], str] = input
    name: str = "manual"
    settings: tuple[str, ...] = TF_SERVING_SETTINGS

    def start(self, config: TrialConfig, trial_dir: Path) -> Endpoint:
        batching = write_batching_file(config, trial_dir)
        flags = config.server_flags(str(batching.resolve()))
        print(f"\n== apply configuration: {config.label()}\n   flags: {' '.join(flags) or '(none: the defaults)'}\n"
              f"   batching file {batching}:\n"
              + "".join(f"     {line}\n" for line in config.batching_text().splitlines()),
              flush=True)
        answer = self.ask("   restart the server with it, then press Enter (or type 'skip' to refuse it): ")
        if answer.strip().lower() == "skip":
            raise TrialRefused("skipped by the user")
        return Endpoint(self.grpc_target, self.rest_target, "manual")

    def stop(self) -> None:
        return None


def make_launcher(kind: str, models_dir: Path, model: str, grpc_target: str = "", rest_target: str = "") -> Launcher:
    if kind == "embedded":
        return EmbeddedLauncher(models_dir, model)
    if kind == "tfserving":
        return TfServingLauncher(models_dir, model)
    if kind == "manual":
        return ManualLauncher(grpc_target, rest_target)
    raise ValueError(f"unknown launcher {kind!r} (embedded|tfserving|manual)")


def docker_answers() -> bool:
    from serving.cli.launch import probe_docker

    return probe_docker()[0].ok

