"""Both front ends reach the same execution scheduler: the configured bound holds for REST connections and
gRPC streams together, and a full queue or a missed deadline answers the same over both APIs."""
from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.execution.core import ExecutionSettings, ServingCore
from serving.errors import not_found
from serving.api.grpc_api import GrpcListen, GrpcServer
from serving.metrics import EXECUTION_OUTCOMES_METRIC, EXECUTIONS_METRIC, ServingMetrics
from serving.lifecycle.model_manager import ServableVersion
from serving.api.rest_api import RestApp, RestServer
from serving.execution.scheduler import WAIT_DEADLINE_MESSAGE
from serving.tensors import SignatureSpec, TensorSpec, fill_tensor_proto
from tests.server_fixture import running_server

pytestmark = pytest.mark.timeout(300)

MODEL = "residual_regressor"
DT_FLOAT = 1


def _grpc_request(model: str, rows: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    fill_tensor_proto(request.inputs["inputs"], rows.astype(np.float32))
    return request


def _execution_sample(rest_url: str, metric: str, model: str, label: str) -> float:
    text = requests.get(f"{rest_url}/monitoring/prometheus/metrics", timeout=10).text
    m = re.search(rf'{metric}{{model_name="{model}",{label}}} (\S+)', text)
    assert m, f"no {metric}{{{label}}} sample for {model}"
    return float(m.group(1))


def test_sixteen_rest_connections_and_sixteen_grpc_streams_share_the_bound(exported_models_dir: Path):
    """32 clients over both APIs go through one scheduler: the peak never exceeds the bound, every call is counted."""
    bound, seconds = 3, 2.0
    with running_server(exported_models_dir, mode="eager", extra_args=["--max-concurrent-executions", str(bound)]) as srv:
        rows = np.random.default_rng(0).normal(size=(1, 10))
        body = json.dumps({"instances": rows.tolist()})
        stub = prediction_service_pb2_grpc.PredictionServiceStub(srv.channel())
        answered = {"rest": 0, "grpc": 0}
        failures: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def rest_client() -> None:
            with requests.Session() as session:  # one keep-alive connection per client
                while time.monotonic() < stop_at:
                    r = session.post(f"{srv.rest_url}/v1/models/{MODEL}:predict", data=body, timeout=30)
                    with lock:
                        answered["rest"] += r.status_code == 200
                        failures.extend([r.text] if r.status_code != 200 else [])

        def grpc_client() -> None:
            while time.monotonic() < stop_at:
                stub.Predict(_grpc_request(MODEL, rows), timeout=30)
                with lock:
                    answered["grpc"] += 1

        clients = [threading.Thread(target=rest_client) for _ in range(16)]
        clients += [threading.Thread(target=grpc_client) for _ in range(16)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(120)
        assert not failures
        assert answered["rest"] >= 16 and answered["grpc"] >= 16, answered
        # never more than the bound at once (how close 32 clients get to it depends on the machine's load; the gated
        # scheduler tests in test_scheduler.py reach it exactly)
        assert 1 <= _execution_sample(srv.rest_url, EXECUTIONS_METRIC, MODEL, 'state="peak_running"') <= bound
        # every answered request of both APIs went through this one scheduler (warmup does not)
        executed = _execution_sample(srv.rest_url, EXECUTION_OUTCOMES_METRIC + "_total", MODEL, 'outcome="executed"')
        assert executed == answered["rest"] + answered["grpc"]


# ---------------------------------------------------------------------------------------------------------
# Overload and deadlines: both real front ends in this process, over a model whose calls wait for a gate
# ---------------------------------------------------------------------------------------------------------
class _GatedRunner:
    """A one-signature model that blocks while the gate is closed (holds the only execution slot)."""

    def __init__(self) -> None:
        spec = TensorSpec("inputs", DT_FLOAT, (-1, 2))
        self.signatures = {"serving_default": SignatureSpec(
            "serving_default", {"inputs": spec}, {"predictions": TensorSpec("predictions", DT_FLOAT, (-1, 1))})}
        self.gate = threading.Event()
        self.calls = 0

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        self.gate.wait(30)
        return {"predictions": inputs["inputs"][:, :1]}

    def close(self) -> None:
        self.gate.set()


class _OneModel:
    """The part of ModelManager the predict paths use, serving one fixed version."""

    def __init__(self, sv: ServableVersion) -> None:
        self.sv = sv

    def has_model(self, name: str) -> bool:
        return name == self.sv.model

    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None, label: str | None):
        if name != self.sv.model:
            raise not_found(f"Servable not found for request: Latest({name})")
        yield self.sv


@pytest.fixture()
def gated_server():
    runner = _GatedRunner()
    core = ServingCore("graph", ServingMetrics(), None, 1 << 20, enable_warmup=False,
                       execution=ExecutionSettings(max_concurrent=1, max_queued=1))
    manager = _OneModel(ServableVersion("gated", 1, runner))
    grpc_server = GrpcServer(core, manager, GrpcListen("127.0.0.1", 0, max_message_bytes=1 << 20), False)
    rest = RestServer(RestApp(core, manager, timeout_ms=300), "127.0.0.1", 0, 1 << 20)
    grpc_server.start()
    rest.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}")
    try:
        yield (runner, core.executor("gated"), prediction_service_pb2_grpc.PredictionServiceStub(channel),
               f"http://127.0.0.1:{rest.port}/v1/models/gated:predict")
    finally:
        runner.gate.set()
        channel.close()
        rest.stop_accepting()
        grpc_server.stop(1).wait(5)
        grpc_server.close()
        rest.close()
        core.close()


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def _occupy_slot(url: str, runner: _GatedRunner, executor) -> tuple[threading.Thread, list]:
    runner.gate.clear()
    replies: list = []
    holder = threading.Thread(target=lambda: replies.append(requests.post(url, json={"instances": [[1, 2]]}, timeout=30)))
    holder.start()
    _wait_until(lambda: executor.stats.running == 1)
    return holder, replies


def test_full_queue_is_refused_the_same_over_rest_and_grpc(gated_server):
    runner, executor, stub, url = gated_server
    holder, held = _occupy_slot(url, runner, executor)
    queued = stub.Predict.future(_grpc_request("gated", np.ones((1, 2))), timeout=30)  # takes the one queue place
    _wait_until(lambda: executor.stats.waiting == 1)

    rest_refusal = requests.post(url, json={"instances": [[3, 4]]}, timeout=10)
    with pytest.raises(grpc.RpcError) as grpc_refusal:
        stub.Predict(_grpc_request("gated", np.ones((1, 2))), timeout=10)

    assert rest_refusal.status_code == 429
    assert grpc_refusal.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rest_refusal.json()["error"] == grpc_refusal.value.details()
    assert "execution queue of 'gated' is full" in grpc_refusal.value.details()
    runner.gate.set()
    holder.join(10)
    assert held[0].status_code == 200 and queued.result(10).outputs["predictions"].tensor_shape.dim[0].size == 1
    assert runner.calls == 2  # the refused requests never reached the model


def test_deadline_while_waiting_is_the_same_over_rest_and_grpc(gated_server):
    runner, executor, stub, url = gated_server
    holder, _ = _occupy_slot(url, runner, executor)
    started = time.monotonic()
    rest_expiry = requests.post(url, json={"instances": [[3, 4]]}, timeout=10)  # REST deadline: 300 ms (fixture)
    rest_elapsed = time.monotonic() - started
    with pytest.raises(grpc.RpcError) as grpc_expiry:
        stub.Predict(_grpc_request("gated", np.ones((1, 2))), timeout=0.3)

    assert rest_expiry.status_code == 504 and rest_expiry.json()["error"] == WAIT_DEADLINE_MESSAGE
    assert rest_elapsed >= 0.25  # it waited for its 300 ms deadline (the 10 s client timeout bounds it above)
    assert grpc_expiry.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _wait_until(lambda: executor.stats.waiting == 0)
    assert executor.stats.expired_waiting == 2 and runner.calls == 1
    runner.gate.set()
    holder.join(10)
