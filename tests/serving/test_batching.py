"""Server-side dynamic batching end to end: merging, full queue, oversize tasks, deadlines, SIGTERM drain.

Two servers: an XLA-mode server that merges concurrent requests (and must still give each caller its own
rows), and a server whose batching file makes queue states deterministic (a 1.5 s batch timeout keeps the
first request's batch open while the others probe the queue).
"""
from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import predict_pb2

from tests.server_fixture import running_server

pytestmark = pytest.mark.timeout(300)
MODEL = "residual_regressor"


def _request(x: np.ndarray, model: str = MODEL) -> predict_pb2.PredictRequest:
    import tensorflow as tf

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x.astype(np.float32)))
    return req


def _pred(resp) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(resp.outputs["predictions"])


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_requests_are_merged_and_split_back(exported_models_dir: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 200000 }\n"
                        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 8 }\n"
                        "allowed_batch_sizes: 8\nallowed_batch_sizes: 64\n")
    rng = np.random.default_rng(3)
    from sklearn.datasets import load_diabetes

    data = load_diabetes().data.astype(np.float32)
    inputs = [data[rng.integers(0, len(data), size=int(rng.integers(1, 4)))] for _ in range(48)]
    loaded = tf.saved_model.load(str(exported_models_dir / MODEL / "2"))
    want = [loaded.signatures["serving_default"](inputs=tf.constant(x))["predictions"].numpy() for x in inputs]

    with running_server(exported_models_dir, mode="xla", batching_file=batching) as server:
        stub = server.prediction_stub()
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda x: _pred(stub.Predict(_request(x), timeout=30)), inputs))
        metrics = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10).text

    for g, w in zip(got, want):  # every caller got exactly its own rows back
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    batches = _metric(metrics, ":tensorflow:serving:batching_session:processed_batch_size_count", model_name=MODEL)
    processed_rows = _metric(metrics, ":tensorflow:serving:batching_session:processed_batch_size_sum", model_name=MODEL)
    tasks = _metric(metrics, ":tensorflow:serving:batching_session:input_batch_size_count", model_name=MODEL)
    assert tasks == len(inputs)
    assert 0 < batches < len(inputs), "no request was merged with another"
    # allowed_batch_sizes 8/64: every processed batch was padded to one of them
    assert processed_rows % 8 == 0
    assert _metric(metrics, ":tensorflow:serving:batching_session:padding_size_sum", model_name=MODEL) > 0
    assert _metric(metrics, ":tensorflow:serving:batching_session:queuing_latency_count") == len(inputs)


def test_full_queue_oversize_deadline_and_sigterm_drain(exported_models_dir: Path, tmp_path: Path) -> None:
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 1500000 }\n"
                        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 1 }\n")
    one, four, five = (np.full((n, 10), 0.01, np.float32) for n in (1, 4, 5))
    with running_server(exported_models_dir, batching_file=batching) as server:
        stub = server.prediction_stub()
        # 1) a 1-row request opens the only batch the queue may hold; it waits for the 1.5 s timeout
        first = stub.Predict.future(_request(one), timeout=30)
        time.sleep(0.3)
        # 2) 4 rows do not fit in the open batch and a second batch is not allowed: refused at once
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_request(four), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue" in err.value.details() and time.monotonic() - started < 1.0
        r = requests.post(f"{server.rest_url}/v1/models/{MODEL}:predict", json={"instances": four.tolist()}, timeout=30)
        assert r.status_code == 429 and "queue" in r.json()["error"]
        # 3) more rows than max_batch_size (no splitting): TF Serving's INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_request(five), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 5 is larger than maximum input batch size 4" in err.value.details()
        # 4) a request whose deadline passes while it waits in the batch is given up, not run late
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_request(one), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert _pred(first.result()).shape == (1, 1)
        time.sleep(0.2)
        metrics = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10).text
        assert _metric(metrics, ":tensorflow:serving:request_count", model_name=MODEL, status="DEADLINE_EXCEEDED") == 1
        assert _metric(metrics, ":tensorflow:serving:request_count", model_name=MODEL, status="RESOURCE_EXHAUSTED") == 2

        # 5) SIGTERM while a request waits in its batch: it still completes, then the server exits 0
        in_flight = stub.Predict.future(_request(one), timeout=30)
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        assert _pred(in_flight.result()).shape == (1, 1)
        assert server.proc.wait(35) == 0, server.log_text()[-3000:]
        log = server.log_text()
        assert "received SIGTERM: draining" in log
        assert re.search(r"stopped after [\d.]+ s drain \(all in-flight requests finished\)", log)
