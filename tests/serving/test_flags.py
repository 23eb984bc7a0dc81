"""`python -m serving serve`'s command line: TF Serving's flags with TF Serving's meaning, the project's own
flags unchanged, and TF Serving flags the embedded server cannot honour refused with their reason."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from export.contract import PROMETHEUS_PATH
from serving.cli.serve_flags import ServerConfig, add_serve_arguments, config_from_args
from serving.cli.tf_flag_syntax import UNSUPPORTED_FLAGS, parse_grpc_channel_arguments
from tests.conftest import REPO_ROOT


def _parser() -> argparse.ArgumentParser:
    return add_serve_arguments(argparse.ArgumentParser(prog="serve"))


def _config(*argv: str) -> ServerConfig:
    return config_from_args(_parser().parse_args(list(argv)))


BASE = "--model_base_path=/models/half_plus_two"


@pytest.mark.parametrize("argv, expected", [
    # TF Serving's spelling and meaning
    ([BASE], dict(model_name="default", grpc_port=8500, rest_port=8501)),
    (["--port=9000", "--rest_api_port=9001", BASE], dict(grpc_port=9000, rest_port=9001)),
    (["--port", "9000", "--rest_api_port", "0", BASE], dict(grpc_port=9000, rest_port=-1)),  # 0 = REST off
    (["--port=0", "--grpc_socket_path=/tmp/tfs.sock", BASE], dict(grpc_port=None, grpc_socket_path=Path("/tmp/tfs.sock"))),
    (["--model_name=m", BASE], dict(model_name="m", model_base_path=Path("/models/half_plus_two"))),
    (["--enable_batching", BASE], dict(enable_batching=True)),
    (["--enable_batching=true", BASE], dict(enable_batching=True)),
    (["--enable_batching=false", BASE], dict(enable_batching=False)),
    (["--enable_batching=1", BASE], dict(enable_batching=True)),
    (["--enable_model_warmup=false", BASE], dict(enable_model_warmup=False)),
    (["--allow_version_labels_for_unavailable_models", BASE], dict(allow_version_labels_for_unavailable_models=True)),
    (["--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb", BASE],
     dict(grpc_channel_arguments=(("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb")))),
    (["--rest_api_num_threads=3", "--rest_api_timeout_in_ms=5000", BASE], dict(rest_api_num_threads=3, rest_api_timeout_ms=5000)),
    (["--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=3", BASE],
     dict(intra_op_parallelism=2, inter_op_parallelism=3)),
    (["--tensorflow_session_parallelism=4", BASE], dict(intra_op_parallelism=4, inter_op_parallelism=4)),
    (["--max_num_load_retries=5", "--load_retry_interval_micros=250000", BASE],
     dict(max_num_load_retries=5, load_retry_interval_micros=250000)),
    (["--file_system_poll_wait_seconds=0", BASE], dict(file_system_poll_wait_seconds=0.0)),
    (["--num_load_threads=0", "--saved_model_tags=serve", "--enable_profiler=false", BASE], dict(model_name="default")),
    # the project's own flags, unchanged (0 = a free port, -1 = REST off, warmup on by default)
    (["--grpc-port", "0", "--rest-port", "0", "--model-base-path", "/m", "--model-name", "m"],
     dict(grpc_port=0, rest_port=0, enable_model_warmup=True, prometheus_path=PROMETHEUS_PATH)),
    (["--rest-port", "-1", "--no-enable-model-warmup", "--enable-batching", "--model-base-path", "/m"],
     dict(rest_port=-1, enable_model_warmup=False, enable_batching=True)),
])
def test_flag_mapping(argv: list[str], expected: dict) -> None:
    config = _config(*argv)
    for key, value in expected.items():
        assert getattr(config, key) == value, key


def test_model_config_file_and_its_poll_period(tmp_path: Path) -> None:
    cfg = tmp_path / "models.config"
    cfg.write_text("")
    config = _config(f"--model_config_file={cfg}", "--model_config_file_poll_wait_seconds=2")
    assert config.model_config_file == cfg and config.model_config_file_poll_wait_seconds == 2
    assert config.model_name is None
    (tmp_path / "models.local.config").write_text("")
    from_dir = _config("--models-dir", str(tmp_path))  # the project's spelling of a config file
    assert from_dir.model_config_file == tmp_path / "models.local.config"
    assert from_dir.model_config_file_poll_wait_seconds == 0  # default: read once


def test_monitoring_config_decides_the_metrics_path(tmp_path: Path) -> None:
    on = tmp_path / "on.config"
    on.write_text('prometheus_config { enable: true path: "/metrics/here" }')
    off = tmp_path / "off.config"
    off.write_text("prometheus_config { enable: false }")
    assert _config(BASE, f"--monitoring_config_file={on}").prometheus_path == "/metrics/here"
    assert _config(BASE, f"--monitoring_config_file={off}").prometheus_path is None
    assert _config(BASE).prometheus_path == PROMETHEUS_PATH  # the project's default: on


@pytest.mark.parametrize("argv, message", [
    (["--port=0", BASE], "--grpc_socket_path"),
    (["--port=1", "--grpc-port=2", BASE], "not both"),
    (["--rest_api_port=1", "--rest-port=2", BASE], "not both"),
    (["--port=7000", "--rest_api_port=7000", BASE], "same as the gRPC port"),
    (["--model_name=m"], "--model-base-path"),
    (["--model_config_file_poll_wait_seconds=1", BASE], "needs a model config file"),
    (["--grpc_channel_arguments=grpc.keepalive", BASE], "not key=value"),
    (["--tensorflow_session_parallelism=1", "--tensorflow_intra_op_parallelism=1",
      "--tensorflow_inter_op_parallelism=1", BASE], "not all three"),
    (["--batching_parameters_file=/b", BASE], "--enable-batching"),
    (["--max_num_load_retries=-1", BASE], ">= 0"),
    (["--rest_api_num_threads=0", BASE], ">= 1"),
])
def test_bad_combinations_are_refused_with_the_reason(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(*argv)


def test_bad_boolean_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _config("--enable_batching=maybe", BASE)
    assert exc.value.code == 2
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err


@pytest.mark.parametrize("flag", UNSUPPORTED_FLAGS, ids=[f.name for f in UNSUPPORTED_FLAGS])
def test_flags_that_cannot_be_honoured_are_refused_with_a_reason(flag, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args([f"--{flag.name}=some_value", BASE])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--{flag.name} is not supported by the embedded server: {flag.reason}" in err
    for value in flag.same_as_embedded:  # a value that says what the server does anyway is accepted
        _parser().parse_args([f"--{flag.name}={value}", BASE])


def test_channel_arguments_parse_like_tf_serving() -> None:
    assert parse_grpc_channel_arguments("") == ()
    assert parse_grpc_channel_arguments("a=1, b=-2,c=x,d=99999999999") == (
        ("a", 1), ("b", -2), ("c", "x"), ("d", "99999999999"))  # beyond int32: a string, as safe_strto32 fails


def _serve(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving", "serve", *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def test_version_flag_prints_versions_and_exits_zero() -> None:
    proc = _serve("--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: ") and lines[1].startswith("TensorFlow Library: 2.")


def test_refused_flag_ends_the_process_with_one_line_reason() -> None:
    proc = _serve("--per_process_gpu_memory_fraction=0.5", BASE)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "--per_process_gpu_memory_fraction is not supported by the embedded server: " in last
    assert "CPU only" in last


@pytest.mark.parametrize("argv, hidden", [
    (["serve", BASE], ("sklearn", "keras")),
    (["serve", BASE, "--mode", "xla"], ("sklearn", "keras")),
    (["serve", BASE, "--mode", "eager"], ("sklearn",)),  # eager mode runs Keras
    (["serve", BASE, "--import", "json"], ("sklearn",)),  # a user's module may use tf.keras
    (["serve", BASE, "--graph-executor", "function"], ("sklearn", "keras")),
])
def test_what_the_servers_tensorflow_import_hides(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                   hidden: tuple[str, ...]) -> None:
    import export.tf_startup
    import serving.__main__ as cli
    import serving.cli.server

    seen: list[tuple[str, ...]] = []
    monkeypatch.setattr(export.tf_startup, "quiet_tensorflow_startup", lambda verbose=False, hide=(): seen.append(hide))
    configs: list[ServerConfig] = []
    monkeypatch.setattr(serving.cli.server, "run_server", lambda config: configs.append(config) or 0)
    assert cli.main(argv) == 0
    assert seen == [hidden]
    assert configs[0].graph_executor == ("function" if "function" in argv else "session")
