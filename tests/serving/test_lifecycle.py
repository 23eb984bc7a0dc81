"""Versions coming and going while the server is under load (eager mode, so that path is served end to end).

* a new version copied in (file by file, not atomically) is picked up by polling and replaces the old one
  under the `latest { num_versions: 1 }` policy with zero failed requests;
* a corrupt version is refused with an error status for that version while the previous one keeps serving,
  and is retried (and served) once its files are fixed.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import predict_pb2

from tests.server_fixture import running_server

pytestmark = pytest.mark.timeout(300)
MODEL = "residual_regressor"


def _config(base: Path) -> str:
    return f"""model_config_list {{
  config {{
    name: "{MODEL}"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ latest {{ num_versions: 1 }} }}
  }}
}}
"""


def _request(x: np.ndarray) -> predict_pb2.PredictRequest:
    import tensorflow as tf

    req = predict_pb2.PredictRequest()
    req.model_spec.name = MODEL
    req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
    return req


def _status(server) -> dict[str, dict]:
    r = requests.get(f"{server.rest_url}/v1/models/{MODEL}", timeout=10)
    return {s["version"]: s for s in r.json()["model_version_status"]}


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_rollout_under_load_and_corrupt_version(exported_models_dir: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    base = tmp_path / MODEL
    base.mkdir()
    shutil.copytree(exported_models_dir / MODEL / "1", base / "1")
    config = tmp_path / "models.config"
    config.write_text(_config(base))
    from sklearn.datasets import load_diabetes

    x = load_diabetes().data[:4].astype(np.float32)
    want = {v: tf.saved_model.load(str(exported_models_dir / MODEL / str(v))).signatures["serving_default"](
        inputs=tf.constant(x))["predictions"].numpy() for v in (1, 2)}

    with running_server(config, mode="eager", extra_args=["--file-system-poll-wait-seconds", "0.2"]) as server:
        stub = server.prediction_stub()
        failures: list[str] = []
        versions_seen: list[int] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    resp = stub.Predict(_request(x), timeout=10)
                    v = resp.model_spec.version.value
                    got = tf.make_ndarray(resp.outputs["predictions"])
                    # eager serving agrees with the graph signature of the same version
                    if not np.allclose(got, want[v], rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want[v]).max()))):
                        failures.append(f"v{v} output differs from the SavedModel")
                    versions_seen.append(v)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")

        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()
        try:
            time.sleep(0.5)
            shutil.copytree(exported_models_dir / MODEL / "2", base / "2")  # not atomic, on purpose
            _wait_for(lambda: _status(server).get("2", {}).get("state") == "AVAILABLE"
                      and _status(server).get("1", {}).get("state") == "END", 60, "v2 AVAILABLE and v1 unloaded")
            n_after = len(versions_seen)
            _wait_for(lambda: len(versions_seen) > n_after + 20, 30, "requests after the rollout")

            # a corrupt version 3: garbage saved_model.pb, no variables
            (base / "3").mkdir()
            (base / "3" / "saved_model.pb").write_bytes(b"\x00not a saved model\xff" * 10)
            _wait_for(lambda: "3" in _status(server) and _status(server)["3"]["state"] == "END", 30, "v3 refused")
            st = _status(server)
            assert st["3"]["status"]["error_code"] != "OK" and st["3"]["status"]["error_message"]
            assert st["2"]["state"] == "AVAILABLE"
            r = requests.get(f"{server.rest_url}/v1/models/{MODEL}/versions/3", timeout=10)
            assert r.status_code == 200 and r.json()["model_version_status"][0]["status"]["error_message"]
            n_before = len(versions_seen)
            _wait_for(lambda: len(versions_seen) > n_before + 20, 30, "requests while v3 is refused")
        finally:
            stop.set()
            for w in workers:
                w.join(30)

        assert failures == [], failures[:5]
        assert versions_seen[0] == 1 and versions_seen[-1] == 2
        first_v2 = versions_seen.index(2)
        assert all(v == 2 for v in versions_seen[first_v2 + 20:]), "v1 still answered long after the rollout"

        # fixing version 3's files makes the server retry it (and serve it: it is the latest)
        shutil.rmtree(base / "3")
        shutil.copytree(exported_models_dir / MODEL / "1", base / "3")
        _wait_for(lambda: _status(server).get("3", {}).get("state") == "AVAILABLE", 60, "fixed v3 AVAILABLE")
        resp = stub.Predict(_request(x), timeout=10)
        assert resp.model_spec.version.value == 3
        log = server.log_text()
        assert "residual_regressor version 3 refused" in log
        assert "still serving versions [2]" in log
