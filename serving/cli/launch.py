"""`make serve`: run the real TensorFlow Serving container when a Docker engine answers, else the embedded server.

The decision is a pure function (:func:`choose_server`) of what was asked for and what the machine has;
probing the machine (``docker info``, ``nvidia-smi``) and running the chosen command are separate,
injectable steps so every branch is testable without Docker.

* tfserving: ``docker compose -f docker/docker-compose[.gpu].yml up`` — the GPU file when Docker lists the
  NVIDIA runtime or ``nvidia-smi`` sees a GPU. Ports and the models directory are passed as the compose
  variables TFS_GRPC_PORT / TFS_REST_PORT / TFS_MODELS_DIR.
* embedded: ``python -m serving serve ...`` with ``<models-dir>/models.local.config`` and the same batching
  file TF Serving's CPU container reads (docker/batching/batching_cpu.config).

Either way the server runs in the foreground; SIGINT/SIGTERM are forwarded to it and its exit code is ours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from export.contract import LOCAL_MODEL_CONFIG_FILE, SERVER_MODES
from serving.cli.config_files import parse_batching_parameters, parse_model_server_config, parse_monitoring_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
COMPOSE_CPU = DOCKER_DIR / "docker-compose.yml"
COMPOSE_GPU = DOCKER_DIR / "docker-compose.gpu.yml"
BATCHING_CPU = DOCKER_DIR / "batching" / "batching_cpu.config"
BATCHING_GPU = DOCKER_DIR / "batching" / "batching_gpu.config"
MONITORING = DOCKER_DIR / "monitoring.config"
CONTAINER_MODEL_CONFIG = "models.config"  # base_path /models/<m>: what the container sees

BACKENDS = ("auto", "tfserving", "embedded")
DOCKER_TIMEOUT_S = 5.0


class LaunchError(Exception):
    """A request that cannot be served as asked; the message says what to do instead."""


@dataclass(frozen=True)
class Choice:
    kind: str  # "tfserving" | "embedded"
    compose_file: Path | None  # set for tfserving
    reason: str


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str  # one line for humans: why ok / why not


def choose_server(requested: str, docker_ok: bool, nvidia_ok: bool, mode: str = "graph") -> Choice:
    """Pick the server. Pure: same answers for the same inputs. Raises LaunchError for impossible requests."""
    if requested not in BACKENDS:
        raise LaunchError(f"unknown --backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if mode not in SERVER_MODES:
        raise LaunchError(f"unknown --mode {mode!r}; choose one of {', '.join(SERVER_MODES)}")

    def tfserving(why: str) -> Choice:
        if nvidia_ok:
            return Choice("tfserving", COMPOSE_GPU, f"{why}; NVIDIA runtime present, using the GPU image")
        return Choice("tfserving", COMPOSE_CPU, f"{why}; no NVIDIA runtime, using the CPU image")

    if requested == "embedded":
        return Choice("embedded", None, "forced by --backend embedded")
    if requested == "tfserving":
        if mode == "eager":
            raise LaunchError(
                "--mode eager cannot run on TF Serving: it serves SavedModel graphs only. "
                "Use --backend embedded (or auto) for eager serving."
            )
        if not docker_ok:
            raise LaunchError(
                "--backend tfserving needs a running Docker engine, and `docker info` did not answer. "
                "Start Docker, or use --backend embedded / auto."
            )
        return tfserving("forced by --backend tfserving")
    # auto
    if mode == "eager":
        return Choice("embedded", None, "--mode eager is only served by the embedded server (TF Serving runs graphs)")
    if docker_ok:
        return tfserving("Docker engine answered")
    return Choice("embedded", None, "no Docker engine answered `docker info`; real TF Serving needs one")


# ---------------------------------------------------------------------------------------------------------
# Probes (injectable: tests pass fakes or put fake executables on PATH)
# ---------------------------------------------------------------------------------------------------------

Runner = Callable[..., subprocess.CompletedProcess]


def _run_quiet(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def probe_docker(timeout: float = DOCKER_TIMEOUT_S, run: Runner = _run_quiet) -> tuple[Probe, list[str]]:
    """Does a Docker engine answer? Returns the probe and the engine's runtime names (for the NVIDIA check)."""
    if shutil.which("docker") is None:
        return Probe(False, "docker CLI not found on PATH"), []
    try:
        proc = run(["docker", "info", "--format", "{{json .}}"], timeout=timeout)
    except subprocess.TimeoutExpired:
        return Probe(False, f"`docker info` did not answer within {timeout:g} s"), []
    except OSError as exc:
        return Probe(False, f"`docker info` could not run: {exc}"), []
    info: dict = {}
    try:
        info = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        pass
    errors = info.get("ServerErrors") or []
    if proc.returncode != 0 or errors or not info.get("ServerVersion"):
        if errors:
            why = "; ".join(str(e) for e in errors)
        else:
            lines = (proc.stderr or "").strip().splitlines()
            why = lines[-1] if lines else f"exit code {proc.returncode}, no server version"
        return Probe(False, f"`docker info` failed: {why}"), []
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    return Probe(True, f"Docker engine {info['ServerVersion']} (runtimes: {', '.join(runtimes) or 'none'})"), runtimes


def probe_nvidia(runtimes: Sequence[str], timeout: float = DOCKER_TIMEOUT_S, run: Runner = _run_quiet) -> Probe:
    """NVIDIA GPUs usable from Docker: the engine lists the nvidia runtime, or nvidia-smi sees a GPU."""
    if "nvidia" in runtimes:
        return Probe(True, "Docker lists the nvidia runtime")
    if shutil.which("nvidia-smi") is None:
        return Probe(False, "no nvidia runtime in Docker and no nvidia-smi on PATH")
    try:
        proc = run(["nvidia-smi", "-L"], timeout=timeout)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return Probe(False, f"nvidia-smi failed: {exc}")
    gpus = [line for line in (proc.stdout or "").splitlines() if line.startswith("GPU ")]
    if proc.returncode == 0 and gpus:
        return Probe(True, f"nvidia-smi lists {len(gpus)} GPU(s)")
    return Probe(False, "nvidia-smi found no GPU")


def compose_command(timeout: float = DOCKER_TIMEOUT_S, run: Runner = _run_quiet) -> list[str]:
    """`docker compose` (v2 plugin) if present, else the standalone `docker-compose`."""
    try:
        if run(["docker", "compose", "version"], timeout=timeout).returncode == 0:
            return ["docker", "compose"]
    except (subprocess.TimeoutExpired, OSError):
        pass
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise LaunchError("Docker answers but Docker Compose is missing: install the compose plugin (`docker compose`)")


# ---------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]  # additions to the current environment


def embedded_command(args: argparse.Namespace, python: str = sys.executable) -> Command:
    config = Path(args.models_dir).resolve() / LOCAL_MODEL_CONFIG_FILE
    if not config.is_file():
        raise LaunchError(f"{config} not found: export the models first (`make export`)")
    parse_model_server_config(config)  # fail here, clearly, rather than inside the server
    parse_batching_parameters(BATCHING_CPU)
    argv = [
        python, "-m", "serving", "serve",
        "--mode", args.mode,
        "--grpc-port", str(args.grpc_port),
        "--rest-port", str(args.rest_port),
        "--model-config-file", str(config),
        # Same as the TF Serving container: batching on, with the file it reads.
        "--enable-batching",
        "--batching-parameters-file", str(BATCHING_CPU),
        *[arg for module in getattr(args, "imports", []) for arg in ("--import", module)],
    ]  # fmt: skip
    return Command(argv, {})


def tfserving_command(args: argparse.Namespace, choice: Choice, compose: Sequence[str]) -> Command:
    models_dir = Path(args.models_dir).resolve()
    config = models_dir / CONTAINER_MODEL_CONFIG
    if not config.is_file():
        raise LaunchError(f"{config} not found: export the models first (`make export`)")
    parse_model_server_config(config)
    parse_batching_parameters(BATCHING_GPU if choice.compose_file == COMPOSE_GPU else BATCHING_CPU)
    parse_monitoring_config(MONITORING)
    env = {
        "TFS_MODELS_DIR": str(models_dir),
        "TFS_GRPC_PORT": str(args.grpc_port),
        "TFS_REST_PORT": str(args.rest_port),
        "TFS_XLA_CPU": "true" if args.mode == "xla" else "false",
    }
    return Command([*compose, "-f", str(choice.compose_file), "up"], env)


def run_foreground(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run argv until it exits; forward SIGINT/SIGTERM to it; return its exit code (128+N if killed by N).

    The child gets its own process group so a terminal Ctrl-C reaches it once (through us), not twice.
    """
    full_env = {**os.environ, **(env or {})}
    try:
        child = subprocess.Popen(list(argv), env=full_env, process_group=0)
    except OSError as exc:
        raise LaunchError(f"cannot start {argv[0]}: {exc}") from exc

    def forward(signum: int, _frame) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


# ---------------------------------------------------------------------------------------------------------
# CLI glue: `python -m serving launch ...` (serving/__main__.py calls these two)
# ---------------------------------------------------------------------------------------------------------


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the exported models. --backend auto runs the official tensorflow/serving container "
        "(docker/docker-compose.yml, or docker-compose.gpu.yml when Docker has the NVIDIA runtime) when "
        "`docker info` answers, and the embedded server otherwise. It prints which one it chose and why."
    )
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto (default): TF Serving if a Docker engine answers, else embedded; "
                        "tfserving / embedded force one (tfserving without Docker is an error)")
    parser.add_argument("--mode", choices=SERVER_MODES, default="graph",
                        help="graph (default) | xla (TF Serving: --xla_cpu_compilation_enabled) | "
                        "eager (embedded server only)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="embedded server: import MODULE at start (custom Keras classes for eager mode)")
    parser.add_argument("--grpc-port", type=int, default=8500, help="host gRPC port (default 8500)")
    parser.add_argument("--rest-port", type=int, default=8501, help="host REST port (default 8501)")
    parser.add_argument("--models-dir", type=Path, default=Path("artifacts/models"),
                        help="export directory holding <model>/<version>/, models.config and models.local.config")
    parser.add_argument("--docker-timeout", type=float, default=DOCKER_TIMEOUT_S,
                        help=f"seconds to wait for `docker info` (default {DOCKER_TIMEOUT_S:g})")
    parser.add_argument("--dry-run", action="store_true", help="print the choice and the command, do not run it")  # fmt: skip


def run_launch(
    args: argparse.Namespace,
    *,
    docker_probe: Callable[[float], tuple[Probe, list[str]]] = probe_docker,
    nvidia_probe: Callable[[Sequence[str]], Probe] = probe_nvidia,
    compose: Callable[[], list[str]] = compose_command,
    runner: Callable[[Sequence[str], Mapping[str, str]], int] = run_foreground,
    out=None,
) -> int:
    out = out or sys.stdout
    try:
        if args.backend == "embedded":
            docker, runtimes, nvidia = Probe(False, "not probed (--backend embedded)"), [], Probe(False, "not probed")
        else:
            docker, runtimes = docker_probe(args.docker_timeout)
            nvidia = nvidia_probe(runtimes) if docker.ok else Probe(False, "not probed (no Docker)")
        print(f"[launch] docker: {docker.detail}", file=out)
        if docker.ok:
            print(f"[launch] nvidia: {nvidia.detail}", file=out)
        choice = choose_server(args.backend, docker.ok, nvidia.ok, args.mode)
        print(f"[launch] server: {choice.kind} ({choice.reason})", file=out, flush=True)
        if choice.kind == "tfserving":
            command = tfserving_command(args, choice, compose())
        else:
            command = embedded_command(args)
    except (LaunchError, ValueError) as exc:
        print(f"[launch] error: {exc}", file=sys.stderr)
        return 2
    env_text = " ".join(f"{k}={v}" for k, v in command.env.items())
    print(f"[launch] running: {(env_text + ' ') if env_text else ''}{' '.join(command.argv)}", file=out, flush=True)
    if args.dry_run:
        return 0
    try:
        return runner(command.argv, command.env)
    except LaunchError as exc:
        print(f"[launch] error: {exc}", file=sys.stderr)
        return 2
