"""Version directories as TF Serving reads them, and eager mode per model, against a running embedded server.

* a version directory named `00000123` is served as version 123 (loaded from that directory, not from `123`);
* in eager mode a model without a Keras file is refused with that reason in its model status, while another
  model keeps serving, its `reconstruct` signature mapped to the model method its class declares.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2

from export.contract import KERAS_FILE, latest_version_dir
from serving.lifecycle.model_manager import ModelManager, ModelSource, ServableVersion
from tests.server_fixture import running_server

pytestmark = pytest.mark.timeout(300)
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]


def _config(tmp_path: Path, models: dict[str, Path]) -> Path:
    entries = "".join(f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
                      for name, base in models.items())
    path = tmp_path / "models.config"
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


def _copy_latest(models_dir: Path, model: str, dst: Path) -> Path:
    shutil.copytree(latest_version_dir(models_dir / model).path, dst)
    return dst


def _request(model: str, x: np.ndarray, signature: str = "", version: int | None = None) -> predict_pb2.PredictRequest:
    import tensorflow as tf

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
    return req


def _rows(n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).normal(0.0, 0.05, size=(n, 10)).astype(np.float32)


class _Runner:
    def close(self) -> None:
        pass


def test_manager_loads_versions_from_the_directories_found(tmp_path: Path) -> None:
    for name in ("00000123", "0", "notes"):
        (tmp_path / name).mkdir()
    loaded: dict[int, Path] = {}

    def loader(model: str, version: int, path: Path) -> ServableVersion:
        loaded[version] = path
        return ServableVersion(model, version, _Runner())

    manager = ModelManager([ModelSource("m", tmp_path, policy="all")], loader, poll_seconds=0)
    manager.start()
    assert loaded == {123: tmp_path / "00000123", 0: tmp_path / "0"}
    status = {s.version: s for s in manager.status("m")}
    assert status[123].state == "AVAILABLE" and status[123].path == tmp_path / "00000123"
    assert status[0].state == "AVAILABLE"  # TF Serving serves version 0; the server used to skip it
    with manager.acquire("m") as sv:
        assert sv.version == 123
    manager.stop()


def test_zero_padded_version_directory_is_served_as_its_number(exported_models_dir: Path, tmp_path: Path) -> None:
    model = "residual_regressor"
    _copy_latest(exported_models_dir, model, tmp_path / model / "00000123")
    x = _rows()
    with running_server(_config(tmp_path, {model: tmp_path / model})) as server:
        status = server.model_stub().GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": model}), timeout=30)
        assert [(s.version, s.state) for s in status.model_version_status] == \
            [(123, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]

        stub = server.prediction_stub()
        latest = stub.Predict(_request(model, x), timeout=30)
        pinned = stub.Predict(_request(model, x, version=123), timeout=30)
        assert latest.model_spec.version.value == pinned.model_spec.version.value == 123
        import tensorflow as tf

        grpc_out = tf.make_ndarray(pinned.outputs["predictions"])
        # the same rows through TensorFlow's own loader of the copied directory: the independent reference
        want = tf.saved_model.load(str(tmp_path / model / "00000123")).signatures["serving_default"](
            inputs=tf.constant(x))["predictions"].numpy()
        assert grpc_out.shape == want.shape == (3, 1)
        np.testing.assert_allclose(grpc_out, want, rtol=1e-5, atol=1e-5)

        r = requests.post(f"{server.rest_url}/v1/models/{model}/versions/123:predict",
                          json={"instances": x.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.asarray(r.json()["predictions"], np.float32), grpc_out, rtol=1e-5, atol=1e-6)
        rest_status = requests.get(f"{server.rest_url}/v1/models/{model}/versions/123", timeout=10).json()
        assert rest_status["model_version_status"][0]["state"] == "AVAILABLE"


def test_eager_refuses_a_model_without_keras_file_and_serves_the_others(exported_models_dir: Path,
                                                                         tmp_path: Path) -> None:
    import tensorflow as tf

    good, bare = "reconstructing_regressor", "graph_only"
    good_dir = _copy_latest(exported_models_dir, good, tmp_path / good / "1")
    (_copy_latest(exported_models_dir, "residual_regressor", tmp_path / bare / "1") / KERAS_FILE).unlink()
    x = _rows(4)
    with running_server(_config(tmp_path, {good: tmp_path / good, bare: tmp_path / bare}), mode="eager") as server:
        status = requests.get(f"{server.rest_url}/v1/models/{bare}", timeout=10).json()["model_version_status"]
        assert len(status) == 1 and status[0]["state"] == "END", status
        assert status[0]["status"]["error_code"] == "FAILED_PRECONDITION"
        assert "eager mode needs the Keras model file" in status[0]["status"]["error_message"]
        assert "assets.extra/model.keras" in status[0]["status"]["error_message"]
        grpc_status = server.model_stub().GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": bare}), timeout=30)
        assert grpc_status.model_version_status[0].status.error_code == FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as err:
            server.prediction_stub().Predict(_request(bare, x), timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        # the other model serves both declared signatures eagerly, agreeing with its SavedModel graph
        graph = tf.saved_model.load(str(good_dir))
        stub = server.prediction_stub()
        for signature, outputs in (("serving_default", ("predictions",)),
                                   ("reconstruct", ("reconstruction", "reconstruction_error"))):
            want = graph.signatures[signature](inputs=tf.constant(x))
            got = stub.Predict(_request(good, x, signature), timeout=30).outputs
            assert set(got) == set(outputs)
            for key in outputs:
                np.testing.assert_allclose(tf.make_ndarray(got[key]), want[key].numpy(), rtol=1e-5, atol=1e-5)
        r = requests.post(f"{server.rest_url}/v1/models/{good}:predict",
                          json={"signature_name": "reconstruct", "instances": x.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        assert set(r.json()["predictions"][0]) == {"reconstruction", "reconstruction_error"}
