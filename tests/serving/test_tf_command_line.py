"""`python -m serving serve` started with tensorflow_model_server's command line, as TF Serving's own integration
tests start it (tensorflow_serving/model_servers/tensorflow_model_server_test.py: --rest_api_timeout_in_ms, --grpc_socket_path, --model_name/--model_base_path or --model_config_file,
--model_config_file_poll_wait_seconds, --enable_batching + --batching_parameters_file, --monitoring_config_file,
--grpc_channel_arguments), checked over gRPC (TCP and Unix socket) and REST.

Ports: the server binds free ones itself (--grpc-port=0 --rest-port=0) and the test reads them from its
"listening:" line, so no port is picked before the child binds it; --port / --rest_api_port are parsed in
test_flags.py. The models are tiny tf.Modules saved here (y = 0.5 * x + 2 and + 3, TF Serving's half_plus_two/three idea).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests

from benchmarks.targets.managed import LISTENING
from tests.conftest import REPO_ROOT
from tests.server_fixture import running_server

VERSION = 123


def _save_half_plus(base: Path, offset: float, version: str = str(VERSION)) -> Path:
    import tensorflow as tf

    class HalfPlus(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 0.5 + offset}

    module = HalfPlus()
    tf.saved_model.save(module, str(base / version), signatures={"serving_default": module.serve})
    return base


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tf_models")
    return {"half_plus_two": _save_half_plus(root / "half_plus_two", 2.0),
            "half_plus_three": _save_half_plus(root / "half_plus_three", 3.0)}


def _config(tmp: Path, name: str = "models.config", labels: dict[str, int] | None = None, **models: Path) -> Path:
    entries = []
    for model, base in models.items():
        label_text = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items())
        entries.append(f'  config {{ name: "{model}" base_path: "{base}" model_platform: "tensorflow"{label_text} }}\n')
    path = tmp / name
    path.write_text("model_config_list {\n" + "".join(entries) + "}\n")
    return path


def _ports() -> list[str]:
    # the server binds free ports itself and logs them (TF Serving's --port=0 would turn gRPC off instead)
    return ["--grpc-port=0", "--rest-port=0", "--rest_api_timeout_in_ms=5000"]


def _predict(target: str, model: str = "default", x: float = 2.0, output_filter: bool = True,
             label: str | None = None):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if label:
        request.model_spec.version_label = label
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].float_val.append(x)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if output_filter:
        request.output_filter.append("y")
    with grpc.insecure_channel(target) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)


def _y(response) -> float:
    import tensorflow as tf

    return float(tf.make_ndarray(response.outputs["y"]).reshape(-1)[0])


def _rpc_code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def _served(target: str, model: str, expected: float) -> bool:
    try:
        return _y(_predict(target, model)) == expected
    except grpc.RpcError:
        return False


def test_tf_serving_command_line_grpc_unix_socket_rest_batching_monitoring(models, tmp_path: Path) -> None:
    sock = Path(tempfile.mkdtemp(prefix="tfs-")) / "tf-serving.sock"  # short: Unix socket paths max ~107 bytes
    batching = tmp_path / "batching_config.txt"
    batching.write_text("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
                        "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n")
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    argv = [*_ports(), f"--grpc_socket_path={sock}", "--model_name=default",
            f"--model_base_path={models['half_plus_two']}", "--enable_batching",
            f"--batching_parameters_file={batching}", f"--monitoring_config_file={monitoring}",
            "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,"
            "grpc.max_receive_message_length=65536", "--rest_api_num_threads=4"]
    with running_server(None, serve_args=argv) as server:
        # TF Serving's readiness probe: a missing model answers NOT_FOUND naming the servable.
        code, details = _rpc_code(lambda: _predict(server.grpc_target, "intentionally_missing_model"))
        assert code == grpc.StatusCode.NOT_FOUND and "Servable" in details
        for target in (server.grpc_target, f"unix:{sock}"):
            for output_filter in (False, True):  # without, then with the output filter
                response = _predict(target, output_filter=output_filter)
                assert _y(response) == 3.0
                assert (response.model_spec.name, response.model_spec.version.value,
                        response.model_spec.signature_name) == ("default", VERSION, "serving_default")
        status = requests.get(f"{server.rest_url}/v1/models/default", timeout=10).json()
        assert status == {"model_version_status": [{"version": str(VERSION), "state": "AVAILABLE",
                                                    "status": {"error_code": "OK", "error_message": ""}}]}
        r = requests.post(f"{server.rest_url}/v1/models/default:predict", json={"instances": [[2.0], [3.0]]}, timeout=10)
        assert r.status_code == 200 and r.json() == {"predictions": [[3.0], [3.5]]}
        metrics = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10).text
        assert "# TYPE" in metrics
        batched = re.search(r':tensorflow:serving:batching_session:input_batch_size_count\{model_name="default"\} (\S+)',
                            metrics)
        assert batched and float(batched.group(1)) >= 1, "--enable_batching: requests went through the batch queue"
        # --grpc_channel_arguments reach the server: its receive limit now refuses an 80 kB request.
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        big = predict_pb2.PredictRequest()
        big.model_spec.name = "default"
        big.inputs["x"].CopyFrom(__import__("tensorflow").make_tensor_proto(np.ones((20_000, 1), np.float32)))
        code, _ = _rpc_code(lambda: prediction_service_pb2_grpc.PredictionServiceStub(server.channel()).Predict(big, 10))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.exit_code == 0


def test_model_config_file_polling_adds_and_removes_models(models, tmp_path: Path) -> None:
    config = _config(tmp_path, half_plus_two=models["half_plus_two"])
    monitoring = tmp_path / "monitoring_off.txt"
    monitoring.write_text("prometheus_config { enable: false }\n")
    argv = [*_ports(), f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
            f"--monitoring_config_file={monitoring}"]
    with running_server(None, serve_args=argv) as server:
        target = server.grpc_target
        assert _y(_predict(target, "half_plus_two", output_filter=False)) == 3.0
        assert requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10).status_code == 404

        _config(tmp_path, half_plus_three=models["half_plus_three"])  # swap the model
        assert _eventually(lambda: _served(target, "half_plus_three", 4.0))
        assert _eventually(lambda: not _served(target, "half_plus_two", 3.0))
        code, details = _rpc_code(lambda: _predict(target, "half_plus_two"))
        assert code == grpc.StatusCode.NOT_FOUND and "half_plus_two" in details
        status = requests.get(f"{server.rest_url}/v1/models/half_plus_two", timeout=10).json()
        assert status["model_version_status"][0]["state"] == "END"

        _config(tmp_path, half_plus_two=models["half_plus_two"], half_plus_three=models["half_plus_three"])
        assert _eventually(lambda: _served(target, "half_plus_two", 3.0))  # added back, the other kept
        assert _served(target, "half_plus_three", 4.0)

        # A label on a version that is not available is refused (no --allow_version_labels_...): the reload
        # fails, the models keep serving, the label is not assigned.
        _config(tmp_path, labels={"canary": 999}, half_plus_two=models["half_plus_two"])
        assert _eventually(lambda: "Request to assign label to version 999 of model half_plus_two" in server.log_text())
        assert _served(target, "half_plus_two", 3.0)
        assert requests.get(f"{server.rest_url}/v1/models/half_plus_two/labels/canary", timeout=10).status_code == 404
    assert server.exit_code == 0


def test_zero_poll_period_reads_the_config_once_and_labels_may_wait_when_allowed(models, tmp_path: Path) -> None:
    config = _config(tmp_path, labels={"stable": VERSION, "canary": 999}, half_plus_two=models["half_plus_two"])
    argv = [*_ports(), f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0",
            "--allow_version_labels_for_unavailable_models=true"]
    with running_server(None, serve_args=argv) as server:
        target = server.grpc_target
        assert _y(_predict(target, "half_plus_two", label="stable")) == 3.0
        code, details = _rpc_code(lambda: _predict(target, "half_plus_two", label="canary"))
        assert code == grpc.StatusCode.NOT_FOUND and "999" in details
        _config(tmp_path, half_plus_three=models["half_plus_three"])
        time.sleep(2.5)  # what TF Serving's test waits (poll period + 1 s), and more
        assert _served(target, "half_plus_two", 3.0) and not _served(target, "half_plus_three", 4.0)
    assert server.exit_code == 0


def _serve(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "serving", "serve", *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_malformed_model_config_file_ends_the_process_with_tf_servings_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad_model_config.txt"
    bad.write_text("model_config_list { config { name: 'x' base_path: /no/quotes } }\n")
    proc = _serve(*_ports(), f"--model_config_file={bad}")
    assert proc.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in proc.stderr
    assert "listening:" not in proc.stderr


def test_label_on_an_unavailable_version_refuses_to_start(models, tmp_path: Path) -> None:
    config = _config(tmp_path, labels={"canary": 999}, half_plus_two=models["half_plus_two"])
    proc = _serve(*_ports(), f"--model_config_file={config}")
    assert proc.returncode != 0
    assert ("Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 999 of model "
            "half_plus_two, which is not currently available for inference") in proc.stderr
    assert "listening:" not in proc.stderr  # the ports never opened


def _listening_ports(pid: int) -> set[int]:
    import psutil

    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_ports_open_only_after_the_models_have_loaded_with_load_retries(models, tmp_path: Path) -> None:
    base = tmp_path / "m"
    shutil.copytree(models["half_plus_two"] / str(VERSION), base / "1")
    (base / "2").mkdir(parents=True)
    (base / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")  # the newest version is broken
    log_path = tmp_path / "server.log"
    argv = [sys.executable, "-m", "serving", "serve", *_ports()[:2],
            f"--model_base_path={base}", "--max_num_load_retries=1", "--load_retry_interval_micros=3000000"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    try:
        closed_while_retrying = False
        deadline = time.monotonic() + 180
        while "listening:" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            retrying = "failed to load (attempt 1 of 2)" in log_path.read_text()
            listening = _listening_ports(proc.pid)
            assert not listening or "listening:" in log_path.read_text(), "a port opened before the models had loaded"
            closed_while_retrying |= retrying and not listening
            time.sleep(0.1)
        text = log_path.read_text()
        assert "listening:" in text and closed_while_retrying, text[-3000:]
        ports = LISTENING.search(text)
        grpc_port, rest_port = int(ports.group(2)), int(ports.group(4))
        assert _listening_ports(proc.pid) >= {grpc_port, rest_port}
        assert text.index("default version 2 refused") < text.index("listening:")
        status = requests.get(f"http://127.0.0.1:{rest_port}/v1/models/default/versions/2", timeout=10).json()
        entry = status["model_version_status"][0]
        assert entry["state"] == "END" and "saved_model.pb" in entry["status"]["error_message"]
        # The broken version is out of the policy: the next file-system poll serves version 1.
        assert _eventually(lambda: _served(f"127.0.0.1:{grpc_port}", "default", 3.0))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def _health(target: str) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def test_missing_base_path_is_an_error_line_and_health_stays_not_serving_until_a_version_appears(
        models, tmp_path: Path) -> None:
    base = tmp_path / "nonexistent"
    log_path = tmp_path / "server.log"
    argv = [sys.executable, "-m", "serving", "serve", *_ports(), "--model_name=x", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert _eventually(lambda: "listening:" in log_path.read_text(), timeout=180), log_path.read_text()[-3000:]
        text = log_path.read_text()
        assert re.search(rf"ERROR \S+: model x: base path {re.escape(str(base))} does not exist", text), text
        assert "health NOT_SERVING" in text.split("listening:", 1)[1].splitlines()[0]
        target = f"127.0.0.1:{LISTENING.search(text).group(2)}"
        assert _health(target) == "NOT_SERVING"
        shutil.copytree(models["half_plus_two"] / str(VERSION), base / "1")  # the version TF Serving waits for
        assert _eventually(lambda: _health(target) == "SERVING", timeout=60), log_path.read_text()[-3000:]
        assert _served(target, "x", 3.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
