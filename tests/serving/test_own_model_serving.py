"""A user's own models (tests/own_models.py) served by the embedded server in graph and eager mode: the served
answers are the Keras model's, over gRPC and REST; eager mode imports the custom classes with --import; the
imported SavedModel, which has no Keras file, is refused in eager mode with the reason in its status; the
benchmark client measures such a model from its served signature without errors."""
from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.own_models import FUNCTIONAL, IMPORTED, PACKAGE, SUBCLASSED, OwnModels, keras_answers, run_cli
from tests.server_fixture import running_server

CALLS = [(FUNCTIONAL, "serving_default"), (SUBCLASSED, "serving_default"), (SUBCLASSED, "half"),
         (IMPORTED, "serving_default")]


def _grpc(server, name: str, signature: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = name, signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    outputs = server.prediction_stub().Predict(request, timeout=60).outputs
    assert list(outputs) == ["output_0"]
    return tf.make_ndarray(outputs["output_0"])


def _rest(server, name: str, signature: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    body = {"signature_name": signature, "inputs": {k: v.tolist() for k, v in inputs.items()}}
    response = requests.post(f"{server.rest_url}/v1/models/{name}:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"])


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_served_answers_are_the_keras_answers(own_models: OwnModels, mode: str, tmp_path) -> None:
    # models.config labels every model's versions; the imported one cannot load eagerly, and a label on a version
    # that is not loaded stops the server at start (TF Serving's rule) unless allowed
    extra = (["--import", f"{PACKAGE}.layers", "--allow-version-labels-for-unavailable-models"]
             if mode == "eager" else [])
    with running_server(own_models.out, mode=mode, extra_args=extra, env=own_models.env) as server:
        for name, signature in CALLS:
            if mode == "eager" and name == IMPORTED:
                continue
            want = keras_answers(own_models, name, signature)["output_0"]
            for call in (_grpc, _rest):
                got = call(server, name, signature, own_models.samples[name])
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                           err_msg=f"{mode} {name} {signature} {call.__name__}")
        status = requests.get(f"{server.rest_url}/v1/models/{IMPORTED}", timeout=30).json()["model_version_status"]
        if mode == "eager":
            assert status[0]["state"] == "END"
            assert "eager mode needs the Keras model file" in status[0]["status"]["error_message"]
            return
        assert status[0]["state"] == "AVAILABLE"
        proc = run_cli("benchmarks", "grpc", "--target", server.grpc_target, "--models-dir", str(own_models.out),
                       "--models", FUNCTIONAL, "--batch-sizes", "1,8", "--concurrency", "1", "--window-s", "0.3",
                       "--max-windows", "3", "--results-dir", str(tmp_path), "--run-id", "own", "--no-progress")
        assert proc.returncode == 0, proc.stderr[-2000:]
    from benchmarks.results.schema import load_run

    rows = [r for r in load_run(tmp_path / "own").rows if r.model == FUNCTIONAL]
    assert sorted({r.batch_size for r in rows}) == [1, 8]
    assert all(r.errors == 0 and r.n > 0 for r in rows), [(r.batch_size, r.errors, r.n) for r in rows]
