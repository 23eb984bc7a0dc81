"""`make serve` logic: which server runs, with which command, and signals reach it. No Docker needed."""

from __future__ import annotations

import argparse
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from serving.cli import launch
from serving.cli.launch import COMPOSE_CPU, COMPOSE_GPU, Choice, LaunchError, Probe, choose_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "docker" / "models.config.example"

# --------------------------------------------------------------------------------------------------------
# choose_server: the whole decision table
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, docker_ok, nvidia_ok, mode, kind, compose",
    [
        ("auto", True, True, "graph", "tfserving", COMPOSE_GPU),
        ("auto", True, False, "graph", "tfserving", COMPOSE_CPU),
        ("auto", True, False, "xla", "tfserving", COMPOSE_CPU),
        ("auto", False, False, "graph", "embedded", None),
        ("auto", False, True, "graph", "embedded", None),  # a GPU without Docker is no use to TF Serving
        ("auto", True, True, "eager", "embedded", None),  # TF Serving cannot run eager
        ("tfserving", True, False, "graph", "tfserving", COMPOSE_CPU),
        ("tfserving", True, True, "xla", "tfserving", COMPOSE_GPU),
        ("embedded", True, True, "graph", "embedded", None),
        ("embedded", False, False, "eager", "embedded", None),
    ],
)
def test_choose_server_table(requested, docker_ok, nvidia_ok, mode, kind, compose):
    choice = choose_server(requested, docker_ok, nvidia_ok, mode)
    assert (choice.kind, choice.compose_file) == (kind, compose)
    assert choice.reason  # always says why


def test_choose_server_reasons_name_the_cause():
    assert "no Docker engine" in choose_server("auto", False, False).reason
    assert "NVIDIA" in choose_server("auto", True, True).reason
    assert "eager" in choose_server("auto", True, False, "eager").reason
    assert "forced" in choose_server("embedded", True, True).reason


@pytest.mark.parametrize(
    "requested, docker_ok, mode, message",
    [
        ("tfserving", False, "graph", "needs a running Docker engine"),
        ("tfserving", True, "eager", "serves SavedModel graphs only"),
        ("kubernetes", True, "graph", "unknown --backend 'kubernetes'"),
        ("auto", True, "jit", "unknown --mode 'jit'"),
    ],
)
def test_choose_server_refuses_impossible_requests(requested, docker_ok, mode, message):
    with pytest.raises(LaunchError, match=message):
        choose_server(requested, docker_ok, False, mode)


def test_compose_files_exist():
    assert COMPOSE_CPU.is_file() and COMPOSE_GPU.is_file()


# --------------------------------------------------------------------------------------------------------
# run_launch with injected probes and runner
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def models_dir(tmp_path):
    """Both config files export writes (content: the sample config; launch only parses them)."""
    text = EXAMPLE_CONFIG.read_text()
    (tmp_path / "models.config").write_text(text)
    (tmp_path / "models.local.config").write_text(text.replace('"/models/', f'"{tmp_path}/'))
    return tmp_path


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    launch.add_launch_arguments(parser)
    return parser.parse_args(list(argv))


class Recorder:
    def __init__(self, code: int = 0):
        self.calls: list[tuple[list[str], dict]] = []
        self.code = code

    def __call__(self, argv, env):
        self.calls.append((list(argv), dict(env)))
        return self.code


def _launch(args, *, docker: bool, nvidia: bool = False, runner=None, capsys=None):
    runner = runner or Recorder()
    docker_calls = []

    def docker_probe(timeout):
        docker_calls.append(timeout)
        return Probe(docker, "fake docker"), (["nvidia", "runc"] if nvidia else ["runc"])

    code = launch.run_launch(
        args,
        docker_probe=docker_probe,
        nvidia_probe=lambda runtimes: Probe("nvidia" in runtimes, "fake nvidia"),
        compose=lambda: ["docker", "compose"],
        runner=runner,
    )
    return code, runner, docker_calls


def test_auto_without_docker_runs_embedded_server(models_dir, capsys):
    args = _args("--mode", "xla", "--grpc-port", "9500", "--rest-port", "9501", "--models-dir", str(models_dir))
    code, runner, _ = _launch(args, docker=False)
    assert code == 0
    ((argv, env),) = runner.calls
    assert argv == [
        sys.executable, "-m", "serving", "serve", "--mode", "xla", "--grpc-port", "9500", "--rest-port", "9501",
        "--model-config-file", str(models_dir.resolve() / "models.local.config"),
        "--enable-batching",
        "--batching-parameters-file", str(ROOT / "docker" / "batching" / "batching_cpu.config"),
    ]  # fmt: skip
    assert env == {}
    # The embedded server's own parser and validation accept exactly this command line.
    from serving.__main__ import build_parser
    from serving.cli.serve_flags import config_from_args

    config = config_from_args(build_parser().parse_args(argv[3:]))
    assert config.enable_batching and config.mode == "xla"
    out = capsys.readouterr().out
    assert "server: embedded (no Docker engine answered" in out and "running: " in out


@pytest.mark.parametrize("nvidia, compose_file", [(False, COMPOSE_CPU), (True, COMPOSE_GPU)])
def test_auto_with_docker_runs_compose(models_dir, capsys, nvidia, compose_file):
    args = _args("--mode", "xla", "--grpc-port", "18500", "--rest-port", "18501", "--models-dir", str(models_dir))
    code, runner, docker_calls = _launch(args, docker=True, nvidia=nvidia)
    assert code == 0 and docker_calls == [launch.DOCKER_TIMEOUT_S]
    ((argv, env),) = runner.calls
    assert argv == ["docker", "compose", "-f", str(compose_file), "up"]
    assert env == {
        "TFS_MODELS_DIR": str(models_dir.resolve()),
        "TFS_GRPC_PORT": "18500",
        "TFS_REST_PORT": "18501",
        "TFS_XLA_CPU": "true",
    }
    assert "server: tfserving" in capsys.readouterr().out


def test_compose_variables_are_the_ones_the_compose_files_use():
    import re

    for compose_file in (COMPOSE_CPU, COMPOSE_GPU):
        used = set(re.findall(r"\$\{([A-Z_]+):-", compose_file.read_text()))
        assert used == {"TFS_MODELS_DIR", "TFS_GRPC_PORT", "TFS_REST_PORT", "TFS_XLA_CPU"}


def test_forced_tfserving_without_docker_is_a_clear_error(models_dir, capsys):
    code, runner, _ = _launch(_args("--backend", "tfserving", "--models-dir", str(models_dir)), docker=False)
    assert code != 0 and runner.calls == []
    assert "needs a running Docker engine" in capsys.readouterr().err


def test_forced_embedded_does_not_probe_docker(models_dir):
    code, runner, docker_calls = _launch(_args("--backend", "embedded", "--models-dir", str(models_dir)), docker=True)
    assert code == 0 and docker_calls == [] and runner.calls[0][0][1:4] == ["-m", "serving", "serve"]


def test_missing_or_broken_model_config_fails_before_running(tmp_path, models_dir, capsys):
    code, runner, _ = _launch(_args("--models-dir", str(tmp_path / "empty")), docker=False)
    assert code != 0 and runner.calls == []
    err = capsys.readouterr().err
    assert "models.local.config not found" in err and "make export" in err
    (models_dir / "models.config").write_text("model_config_list { config { name: 'm' } }\n")
    code, runner, _ = _launch(_args("--models-dir", str(models_dir)), docker=True)
    assert code != 0 and runner.calls == []
    assert "base_path is empty" in capsys.readouterr().err


def test_dry_run_prints_but_does_not_run(models_dir, capsys):
    code, runner, _ = _launch(_args("--dry-run", "--models-dir", str(models_dir)), docker=True)
    assert code == 0 and runner.calls == []
    out = capsys.readouterr().out
    assert "docker compose -f" in out and "TFS_REST_PORT=8501" in out


def test_child_exit_code_is_returned(models_dir):
    code, _, _ = _launch(_args("--models-dir", str(models_dir)), docker=False, runner=Recorder(code=3))
    assert code == 3


# --------------------------------------------------------------------------------------------------------
# Probes against fake executables on PATH
# --------------------------------------------------------------------------------------------------------


def _fake_bin(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def test_probe_docker_reads_runtimes(fake_path):
    _fake_bin(fake_path, "docker", """\
        echo '{"ServerVersion":"27.3.1","Runtimes":{"runc":{},"nvidia":{"path":"nvidia-container-runtime"}}}'
        """)
    probe, runtimes = launch.probe_docker(timeout=5)
    assert probe.ok and "27.3.1" in probe.detail
    assert runtimes == ["nvidia", "runc"]
    assert launch.probe_nvidia(runtimes).ok


def test_probe_docker_daemon_down(fake_path):
    _fake_bin(fake_path, "docker", """\
        echo '{"ServerErrors":["Cannot connect to the Docker daemon at unix:///var/run/docker.sock"]}'
        echo 'ERROR: Cannot connect to the Docker daemon' >&2
        exit 1
        """)
    probe, runtimes = launch.probe_docker(timeout=5)
    assert not probe.ok and "Cannot connect to the Docker daemon" in probe.detail and runtimes == []


def test_probe_docker_timeout_and_absent(fake_path, monkeypatch):
    _fake_bin(fake_path, "docker", "sleep 5\n")
    probe, _ = launch.probe_docker(timeout=0.3)
    assert not probe.ok and "did not answer within 0.3 s" in probe.detail
    (fake_path / "docker").unlink()
    monkeypatch.setenv("PATH", str(fake_path))
    probe, _ = launch.probe_docker(timeout=1)
    assert not probe.ok and "not found on PATH" in probe.detail


def test_probe_nvidia_via_nvidia_smi(fake_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_path))
    assert not launch.probe_nvidia(["runc"]).ok  # no runtime, no nvidia-smi
    _fake_bin(fake_path, "nvidia-smi", "echo 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-123)'\n")
    probe = launch.probe_nvidia(["runc"])
    assert probe.ok and "1 GPU" in probe.detail
    _fake_bin(fake_path, "nvidia-smi", "echo 'NVIDIA-SMI has failed' ; exit 9\n")
    assert not launch.probe_nvidia(["runc"]).ok


def test_compose_command_prefers_plugin(fake_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_path))
    _fake_bin(fake_path, "docker", 'if [ "$1" = compose ]; then echo "Docker Compose version v2.29.7"; exit 0; fi; exit 1\n')
    assert launch.compose_command() == ["docker", "compose"]
    _fake_bin(fake_path, "docker", "exit 1\n")
    with pytest.raises(LaunchError, match="compose plugin"):
        launch.compose_command()
    _fake_bin(fake_path, "docker-compose", "exit 0\n")
    assert launch.compose_command() == ["docker-compose"]


# --------------------------------------------------------------------------------------------------------
# Foreground run: signals reach the server, its exit code is ours
# --------------------------------------------------------------------------------------------------------

CHILD = """\
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1], "a").write(f"got {signum}\\n")
    sys.exit(7)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
open(sys.argv[1], "a").write("ready\\n")
time.sleep(30)
sys.exit(1)
"""

PARENT = """\
import sys
from serving.cli.launch import run_foreground
sys.exit(run_foreground([sys.executable, sys.argv[1], sys.argv[2]], {}))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_foreground_forwards_signals(tmp_path, sig):
    child, log = tmp_path / "child.py", tmp_path / "log.txt"
    child.write_text(CHILD)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(child), str(log)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 20
        while not (log.exists() and "ready" in log.read_text()):
            assert time.monotonic() < deadline, "child never started"
            assert parent.poll() is None, "launcher exited early"
            time.sleep(0.05)
        parent.send_signal(sig)
        assert parent.wait(timeout=20) == 7  # the child's own exit code, passed through
    finally:
        if parent.poll() is None:
            parent.kill()
    assert log.read_text().splitlines() == ["ready", f"got {int(sig)}"]  # delivered exactly once


def test_run_foreground_reports_signal_deaths_as_128_plus_n(tmp_path):
    assert launch.run_foreground([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]) == 137
    assert launch.run_foreground([sys.executable, "-c", "raise SystemExit(4)"]) == 4
    with pytest.raises(LaunchError, match="cannot start"):
        launch.run_foreground([str(tmp_path / "no-such-binary")])


def test_eager_launch_passes_the_modules_to_import_to_the_embedded_server(models_dir):
    args = _args("--backend", "embedded", "--mode", "eager", "--models-dir", str(models_dir),
                 "--import", "json", "--import", "csv")
    code, runner, _ = _launch(args, docker=False)
    assert code == 0
    ((argv, _),) = runner.calls
    assert argv[argv.index("--mode") + 1] == "eager" and argv[-4:] == ["--import", "json", "--import", "csv"]
