"""The embedded server's gRPC and REST APIs against TF Serving's contract, with the official protos and plain HTTP.

One server (graph mode, no batching) serves the session export for the whole module; every test talks to
it over the network exactly as a TF Serving client would.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from tests.server_fixture import running_server, tensor_proto

pytestmark = pytest.mark.timeout(300)

MODEL = "residual_regressor"
RECON = "reconstructing_regressor"
N_FEATURES = 10


@pytest.fixture(scope="module")
def server(exported_models_dir: Path):
    with running_server(exported_models_dir, mode="graph") as handle:
        yield handle


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    from sklearn.datasets import load_diabetes

    return load_diabetes().data[:6].astype(np.float32)


@pytest.fixture(scope="module")
def reference(exported_models_dir: Path, rows: np.ndarray):
    """Outputs of the SavedModel signatures called in this process: what the server must reproduce."""
    import tensorflow as tf

    def ref(model: str, version: int, signature: str = "serving_default") -> dict[str, np.ndarray]:
        loaded = tf.saved_model.load(str(exported_models_dir / model / str(version)))
        return {k: v.numpy() for k, v in loaded.signatures[signature](inputs=tf.constant(rows)).items()}

    return ref


def _close(a, b) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())))


def _predict_request(x: np.ndarray, model: str = MODEL, signature: str = "", version: int | None = None,
                     label: str | None = None) -> predict_pb2.PredictRequest:
    import tensorflow as tf

    return _raw_request(model, signature, {"inputs": tf.make_tensor_proto(x)}, version, label)


def _outputs(resp: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}


# ------------------------------------------------------------------------------------------------ REST status
def test_rest_model_status_lists_every_loaded_version(server) -> None:
    r = requests.get(f"{server.rest_url}/v1/models/{MODEL}", timeout=10)
    assert r.status_code == 200
    statuses = r.json()["model_version_status"]
    assert [s["version"] for s in statuses] == ["2", "1"]
    for s in statuses:
        assert s["state"] == "AVAILABLE"
        assert s["status"] == {"error_code": "OK", "error_message": ""}


@pytest.mark.parametrize("suffix, version", [("/versions/1", "1"), ("/labels/stable", "1"), ("/labels/canary", "2")])
def test_rest_status_by_version_and_label(server, suffix: str, version: str) -> None:
    r = requests.get(f"{server.rest_url}/v1/models/{MODEL}{suffix}", timeout=10)
    assert r.status_code == 200, r.text
    assert [s["version"] for s in r.json()["model_version_status"]] == [version]


def test_rest_metadata_has_signature_defs(server) -> None:
    r = requests.get(f"{server.rest_url}/v1/models/{RECON}/metadata", timeout=10)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_spec"] == {"name": RECON, "signature_name": "", "version": "1"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert "@type" not in doc["metadata"]["signature_def"]
    serving = sigs["serving_default"]
    assert serving["inputs"]["inputs"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in serving["inputs"]["inputs"]["tensor_shape"]["dim"]] == ["-1", str(N_FEATURES)]
    assert set(sigs["reconstruct"]["outputs"]) == {"reconstruction", "reconstruction_error"}


# ------------------------------------------------------------------------------------------------ REST predict
def test_rest_predict_row_and_columnar_match_the_savedmodel(server, rows, reference) -> None:
    want = reference(MODEL, 2)["predictions"]
    r = requests.post(f"{server.rest_url}/v1/models/{MODEL}:predict", json={"instances": rows.tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    _close(r.json()["predictions"], want)  # single output: the name is dropped
    r = requests.post(f"{server.rest_url}/v1/models/{MODEL}:predict", json={"inputs": rows.tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    _close(r.json()["outputs"], want)
    # row objects naming the input are accepted too
    r = requests.post(f"{server.rest_url}/v1/models/{MODEL}/versions/1:predict",
                      json={"instances": [{"inputs": row} for row in rows.tolist()]}, timeout=10)
    assert r.status_code == 200, r.text
    _close(r.json()["predictions"], reference(MODEL, 1)["predictions"])


def test_rest_predict_multi_output_signature_shapes(server, rows, reference) -> None:
    want = reference(RECON, 1, "reconstruct")
    r = requests.post(f"{server.rest_url}/v1/models/{RECON}/labels/stable:predict",
                      json={"signature_name": "reconstruct", "instances": rows.tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == len(rows) and set(preds[0]) == {"reconstruction", "reconstruction_error"}
    _close([p["reconstruction"] for p in preds], want["reconstruction"])
    _close([p["reconstruction_error"] for p in preds], want["reconstruction_error"])
    r = requests.post(f"{server.rest_url}/v1/models/{RECON}:predict",
                      json={"signature_name": "reconstruct", "inputs": {"inputs": rows.tolist()}}, timeout=10)
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    _close(outs["reconstruction"], want["reconstruction"])
    _close(outs["reconstruction_error"], want["reconstruction_error"])


# ------------------------------------------------------------------------------------------------ gRPC
def test_grpc_predict_versions_labels_and_output_filter(server, rows, reference) -> None:
    stub = server.prediction_stub()
    resp = stub.Predict(_predict_request(rows), timeout=10)
    assert resp.model_spec.name == MODEL and resp.model_spec.version.value == 2
    assert resp.model_spec.signature_name == "serving_default"
    _close(_outputs(resp)["predictions"], reference(MODEL, 2)["predictions"])
    resp = stub.Predict(_predict_request(rows, label="stable"), timeout=10)
    assert resp.model_spec.version.value == 1
    _close(_outputs(resp)["predictions"], reference(MODEL, 1)["predictions"])
    req = _predict_request(rows, model=RECON, signature="reconstruct", version=1)
    req.output_filter.append("reconstruction_error")
    resp = stub.Predict(req, timeout=10)
    assert set(resp.outputs) == {"reconstruction_error"}
    _close(_outputs(resp)["reconstruction_error"], reference(RECON, 1, "reconstruct")["reconstruction_error"])


def test_grpc_metadata_and_status(server) -> None:
    stub = server.prediction_stub()
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = MODEL
    resp = stub.GetModelMetadata(req, timeout=10)
    assert resp.model_spec.version.value == 2
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sig_map)
    assert sig_map.signature_def["serving_default"].outputs["predictions"].tensor_shape.dim[1].size == 1

    bad = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def", "graph"])
    bad.model_spec.name = MODEL
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelMetadata(bad, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "graph" in err.value.details()

    status_req = get_model_status_pb2.GetModelStatusRequest()
    status_req.model_spec.name = MODEL
    status = server.model_stub().GetModelStatus(status_req, timeout=10)
    assert {(s.version, s.state) for s in status.model_version_status} == {
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE), (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)}


def test_grpc_reload_is_off_by_default(server) -> None:
    with pytest.raises(grpc.RpcError) as err:
        server.model_stub().HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--enable-config-reload" in err.value.details()


def test_grpc_classify_regress_refuse_a_predict_signature(server) -> None:
    """The exported models have predict signatures only: Classify/Regress/MultiInference say so in TF Serving's
    words (tests/serving/test_tfs_models.py covers models that have classify/regress signatures)."""
    stub = server.prediction_stub()
    classify, regress = classification_pb2.ClassificationRequest(), regression_pb2.RegressionRequest()
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add()
    task.method_name = "tensorflow/serving/regress"
    for request in (classify, regress, task):
        request.model_spec.name = MODEL
    for request in (classify, regress, multi):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    for call, request, kind in ((stub.Classify, classify, "classification"), (stub.Regress, regress, "regression"),
                                (stub.MultiInference, multi, "regression")):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"Expected {kind} signature method_name to be" in err.value.details()
        assert "Was: tensorflow/serving/predict" in err.value.details()


def test_grpc_health_is_serving(server) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(server.channel())
    for service in ("", "tensorflow.serving.PredictionService"):
        assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING


# ------------------------------------------------------------------------------------------------ bad input
GOOD_ROW = [0.01] * N_FEATURES

REST_BAD = [
    # (path suffix, body (dict -> JSON, bytes -> raw), HTTP code, message fragment)
    ("/v1/models/nope:predict", {"instances": [GOOD_ROW]}, 404, "nope"),
    (f"/v1/models/{MODEL}/versions/9:predict", {"instances": [GOOD_ROW]}, 404, "Specific"),
    (f"/v1/models/{MODEL}/labels/gold:predict", {"instances": [GOOD_ROW]}, 404, "gold"),
    (f"/v1/models/{MODEL}:predict", {"inputs": {"x": [GOOD_ROW]}}, 400, "Missing but required: {inputs}"),
    (f"/v1/models/{MODEL}:predict", {"instances": [[0.1] * 9]}, 400, "expects [-1,10]"),
    (f"/v1/models/{MODEL}:predict", {"instances": [GOOD_ROW, [0.1] * 9]}, 400, "ragged"),
    (f"/v1/models/{MODEL}:predict", {"instances": []}, 400, "No values in 'instances'"),
    (f"/v1/models/{MODEL}:predict", {"instances": [["a"] * N_FEATURES]}, 400, "not of expected type"),
    (f"/v1/models/{MODEL}:predict", {"instances": [[None] * N_FEATURES]}, 400, "non-numeric"),
    (f"/v1/models/{MODEL}:predict", b'{"instances": [[1, 2,', 400, "JSON Parse error"),
    (f"/v1/models/{MODEL}:predict", b"", 400, "document is empty"),
    (f"/v1/models/{MODEL}:predict", {"instances": [GOOD_ROW], "inputs": [GOOD_ROW]}, 400, "only one of"),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "nope", "instances": [GOOD_ROW]}, 400, '"nope" not found'),
    (f"/v1/models/{MODEL}:predict", {"rows": [GOOD_ROW]}, 400, "Missing 'inputs' or 'instances'"),
    (f"/v1/models/{MODEL}:predict", {"instances": [[1e39] * N_FEATURES]}, 400, "out of range"),
    (f"/v1/models/{MODEL}:classify", {"examples": [{"x": 1.0}]}, 400, "Was: tensorflow/serving/predict"),
    ("/v1/models/nope", None, 404, "nope"),
    (f"/v1/models/{MODEL}/versions/7", None, 404, "version 7"),
]


@pytest.mark.parametrize("path, body, code, fragment", REST_BAD, ids=[f"{i}-{c}" for i, (_, _, c, _) in enumerate(REST_BAD)])
def test_rest_bad_input_gets_tf_serving_status_and_clear_message(server, path, body, code, fragment) -> None:
    url = server.rest_url + path
    if body is None:
        r = requests.get(url, timeout=10)
    else:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == code, r.text
    assert fragment in r.json()["error"]


def test_rest_refuses_oversized_body_without_reading_it(server) -> None:
    host, port = server.rest_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {10**10}\r\n\r\n".encode())
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "--max-request-bytes" in reply


def _raw_request(model=MODEL, signature="", inputs=None, version=None, label=None):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for k, v in (inputs or {}).items():
        req.inputs[k].CopyFrom(v)
    return req


_ONE_ROW = np.full((1, N_FEATURES), 0.01, np.float32).tobytes()
GRPC_BAD = [
    (dict(model="nope", inputs={"inputs": tensor_proto([1, 10], content=_ONE_ROW)}), grpc.StatusCode.NOT_FOUND, "nope"),
    (dict(version=9, inputs={"inputs": tensor_proto([1, 10], content=_ONE_ROW)}), grpc.StatusCode.NOT_FOUND, "Specific"),
    (dict(label="gold", inputs={"inputs": tensor_proto([1, 10], content=_ONE_ROW)}), grpc.StatusCode.NOT_FOUND, "gold"),
    (dict(inputs={"x": tensor_proto([1, 10], content=_ONE_ROW)}), grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {x}"),
    (dict(inputs={}), grpc.StatusCode.INVALID_ARGUMENT, "no inputs"),
    (dict(inputs={"inputs": tensor_proto([1, 10], dtype=2, content=np.zeros((1, 10)).tobytes())}),
     grpc.StatusCode.INVALID_ARGUMENT, "DT_DOUBLE"),
    (dict(inputs={"inputs": tensor_proto([1, 9], content=np.zeros((1, 9), np.float32).tobytes())}),
     grpc.StatusCode.INVALID_ARGUMENT, "expects [-1,10]"),
    (dict(inputs={"inputs": tensor_proto([2, 10], content=_ONE_ROW)}), grpc.StatusCode.INVALID_ARGUMENT, "tensor_content has 40 bytes"),
    (dict(inputs={"inputs": tensor_proto([2, 10], values=[1.0] * 7)}), grpc.StatusCode.INVALID_ARGUMENT, "carries 7 values"),
    (dict(inputs={"inputs": tensor_proto([10**12, 10], values=[1.0])}), grpc.StatusCode.INVALID_ARGUMENT, "--max-tensor-elements"),
    (dict(inputs={"inputs": tensor_proto([-1, 10], values=[1.0])}), grpc.StatusCode.INVALID_ARGUMENT, "negative dimension"),
    (dict(signature="nope", inputs={"inputs": tensor_proto([1, 10], content=_ONE_ROW)}), grpc.StatusCode.INVALID_ARGUMENT, '"nope" not found'),
]


@pytest.mark.parametrize("kwargs, code, fragment", GRPC_BAD, ids=[f"{i}-{c.name}" for i, (_, c, _) in enumerate(GRPC_BAD)])
def test_grpc_bad_input_gets_status_and_clear_message(server, kwargs, code, fragment) -> None:
    with pytest.raises(grpc.RpcError) as err:
        server.prediction_stub().Predict(_raw_request(**kwargs), timeout=10)
    assert err.value.code() == code, err.value.details()
    assert fragment in err.value.details()


def test_server_still_serves_after_bad_input_and_counts_it(server, rows) -> None:
    """Counts by status move by exactly what this test sends (whatever ran before it on this server)."""
    from benchmarks.measure.prometheus import parse

    metrics_url = f"{server.rest_url}/monitoring/prometheus/metrics"
    count = ":tensorflow:serving:request_count"
    before = parse(requests.get(metrics_url, timeout=10).text)
    for bad in (dict(signature="nope"), dict(model="nope")):  # INVALID_ARGUMENT, then NOT_FOUND
        with pytest.raises(grpc.RpcError):
            server.prediction_stub().Predict(_raw_request(inputs={"inputs": tensor_proto([1, 10], content=_ONE_ROW)},
                                                          **bad), timeout=10)
    resp = server.prediction_stub().Predict(_predict_request(rows[:1]), timeout=10)
    assert _outputs(resp)["predictions"].shape == (1, 1)
    rest = requests.post(f"{server.rest_url}/v1/models/{MODEL}:predict", json={"instances": rows[:1].tolist()},
                         timeout=10)
    assert rest.status_code == 200, rest.text
    text = requests.get(metrics_url, timeout=10).text
    after = parse(text)
    moved = {(model, status): after.total(count, model_name=model, status=status) -
             before.total(count, model_name=model, status=status)
             for model, status in ((MODEL, "OK"), (MODEL, "INVALID_ARGUMENT"), ("<unknown>", "NOT_FOUND"))}
    assert moved == {(MODEL, "OK"): 2, (MODEL, "INVALID_ARGUMENT"): 1, ("<unknown>", "NOT_FOUND"): 1}
    for entrypoint in ("GRPC", "REST"):
        assert f'entrypoint="{entrypoint}"' in text
    assert ":tensorflow:serving:request_latency_bucket{" in text
    assert ":tensorflow:serving:request_latency_count{" in text
    assert server.proc.poll() is None


def _stage_counts(server) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    from export.contract import REQUEST_STAGE_LATENCY

    text = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10).text
    return {(s.labels["entrypoint"], s.labels["stage"]): s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == REQUEST_STAGE_LATENCY + "_count" and s.labels["model_name"] == MODEL}


def test_each_successful_predict_adds_one_sample_per_stage_for_its_api(server, rows) -> None:
    from export.contract import REQUEST_STAGES

    before = _stage_counts(server)
    server.prediction_stub().Predict(_predict_request(rows[:2]), timeout=10)
    ok = requests.post(f"{server.rest_url}/v1/models/{MODEL}:predict", json={"instances": rows[:2].tolist()}, timeout=10)
    assert ok.status_code == 200
    with pytest.raises(grpc.RpcError):  # a refused request is counted by request_count, not split into stages
        server.prediction_stub().Predict(_raw_request(inputs={"x": tensor_proto([1, 10], content=_ONE_ROW)}), timeout=10)
    after = _stage_counts(server)
    for entrypoint in ("GRPC", "REST"):
        for stage in REQUEST_STAGES:
            assert after[(entrypoint, stage)] - before.get((entrypoint, stage), 0.0) == 1.0, (entrypoint, stage)
