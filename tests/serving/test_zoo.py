"""The model zoo (benchmarks/targets/zoo.py) against the oracle, TensorFlow's v1 Session loader.

One embedded server serves the zoo; for every model x signature x sample (batch 1 and 3, the empty-example
error case) the server's gRPC and REST answers (Predict, Classify / Regress / MultiInference where the
signature fits) must equal the Session's. The default suite runs the fast subset (one model per loader
difference); `make zoo` (ZOO=all) runs every model.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.targets.zoo import ZooModel, write_zoo, zoo_models
from tests.server_fixture import running_server

WHOLE_ZOO = os.environ.get("ZOO") == "all"
MODELS = zoo_models(fast_only=not WHOLE_ZOO)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("zoo")
    config = write_zoo(base, MODELS)
    from serving.cli.check_model import ServerClient

    with running_server(config) as server:
        client = ServerClient(server.grpc_target, server.rest_url)
        yield base, client
        client.close()


def version_dir(base: Path, model: ZooModel) -> Path:
    from export.contract import version_dirs

    (found,) = version_dirs(base / model.name)
    return found.path


def _rows(base: Path, client, model: ZooModel):
    from serving.cli.check_model import check_signature
    from serving.execution.session_bundle import SessionBundle

    bundle = SessionBundle(version_dir(base, model))
    rng = np.random.default_rng(0)
    try:
        return [row for name in sorted(bundle.signature_defs)
                for row in check_signature(bundle, client, model.name, name, rng)]
    finally:
        bundle.close()


@pytest.mark.parametrize("model", MODELS, ids=[m.name for m in MODELS])
def test_server_answers_as_the_session_does(zoo, model: ZooModel) -> None:
    from serving.cli.check_model import format_table

    rows = _rows(*zoo, model)
    assert rows, f"{model.name}: no answers compared"
    apis = {r.verdict.api.split(" (")[0] for r in rows}
    assert {"gRPC Predict", "REST predict"} <= apis
    if model.session_fails:
        # The Session refuses every call (as TF Serving does); the embedded server answers them.
        wrong = [r for r in rows if not (r.verdict.problem or "").startswith(
            f"the Session refused it ({model.session_fails}") or "server answered OK" not in r.verdict.problem]
    else:
        wrong = [r for r in rows if r.verdict.problem]
    assert not wrong, format_table(model.name, wrong)


def test_fast_subset_covers_each_loader_difference() -> None:
    """The default run keeps one model of each kind the loaders treat differently."""
    names = {m.name for m in zoo_models(fast_only=True)}
    assert {"half_plus_three", "tf1_parse_sparse", "tf1_vocabulary_table", "tf1_reference_variables",
            "tf1_unknown_shapes", "tf1_strings", "tf2_half_plus_two", "tf2_dtypes", "tf2_scalars",
            "keras3_export"} <= names
    assert len(zoo_models()) >= 20


@pytest.mark.parametrize("name", ["half_plus_three", "tf2_half_plus_two"])
def test_inference_apis_are_compared(zoo, name: str) -> None:
    """Classify, Regress and MultiInference answers are checked, not only Predict: on the TF1 model the TF2
    loader refuses (served through a Session) and on a TF2 one whose tf.Example parsing is inside a function."""
    base, client = zoo
    model = next(m for m in MODELS if m.name == name)
    apis = {r.verdict.api.split(" (")[0] for r in _rows(base, client, model)}
    assert {"gRPC Classify", "REST classify", "gRPC Regress", "REST regress", "gRPC MultiInference"} <= apis


def _check_model(*args: str) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "serving", "check-model", *args], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.skipif(not WHOLE_ZOO, reason="the whole zoo only (make zoo): the zoo tests above check the same "
                    "comparisons in process; the next test runs the command itself")
def test_check_model_passes_a_model_tf_serving_serves(tmp_path: Path) -> None:
    version = zoo_models(["half_plus_three"])[0].write(tmp_path / "half_plus_three")
    done = _check_model(str(version), "--signature", "tensorflow/serving/regress", "--samples", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "/ tensorflow/serving/regress" in done.stdout and "/ serving_default" not in done.stdout
    assert "gRPC Regress" in done.stdout and ", 0 mismatch(es)" in done.stdout


def test_check_model_exits_1_where_the_session_disagrees(tmp_path: Path) -> None:
    """A Keras 3 model written by tf.saved_model.save: TF Serving's Session fails every call, so the check
    must say so (the embedded server answers them)."""
    model = zoo_models(["keras3_sequential"])[0]
    model.write(tmp_path / "k3")
    done = _check_model(str(tmp_path / "k3"), "--signature", "serving_default", "--samples", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.count("REST predict") == 4  # 2 samples x batch 1 and 3
    assert "MISMATCH: the Session refused it (FAILED_PRECONDITION: Could not find variable" in done.stdout


def test_check_model_refuses_what_is_not_a_model(tmp_path: Path) -> None:
    done = _check_model(str(tmp_path))
    assert done.returncode == 2 and "neither a SavedModel" in done.stderr
    assert _check_model(str(tmp_path), "--samples", "0").returncode == 2


def _post(url: str, body) -> "requests.Response":
    import json

    import requests

    return requests.post(url, data=body if isinstance(body, str) else json.dumps(body), timeout=60)


def test_rest_api_page_walkthrough(zoo) -> None:
    """TF Serving's REST API page (g3doc/api_rest.md), example by example, on the models it needs."""
    import base64

    import requests

    url = zoo[1].rest_url + "/v1/models"
    status = requests.get(f"{url}/half_plus_three", timeout=60)
    assert status.status_code == 200 and status.json() == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert _post(f"{url}/half_plus_three:predict", {"instances": [1.0, 2.0, 5.0]}).json() == \
        {"predictions": [3.5, 4.0, 5.5]}
    regress = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    assert _post(f"{url}/half_plus_three:regress", regress).json() == {"results": [3.5, 4.0]}
    missing = _post(f"{url}/half:predict", {"instances": [1.0, 5.0]})
    assert missing.status_code == 404 and missing.json() == {"error": "Servable not found for request: Latest(half)"}
    version = _post(f"{url}/half_plus_three/versions/7:predict", {"instances": [1.0]})
    assert version.status_code == 404 and version.json() == \
        {"error": "Servable not found for request: Specific(half_plus_three, 7)"}
    # Classify with a context shared by the examples; a score without a label has the label "".
    assert _post(f"{url}/half_plus_three:classify", {"signature_name": "tensorflow/serving/classify",
                                                     "context": {"x2": 0.0}, "examples": [{"x": 1.0}, {"x": 5.0}]}
                 ).json() == {"results": [[["", 3.5]], [["", 5.5]]]}
    # Row format: one named input (a list of 3 scalar strings; 2 tensors of shape [1, 2]) ...
    baz = {"b64": base64.b64encode(b"baz").decode()}
    rows = _post(f"{url}/tf1_strings:predict", {"instances": ["foo", "bar", baz]})
    first = rows.json()["predictions"][0]
    assert first["greeting"] == "hello foo" and first["length"] == 3
    assert first["tagged_bytes"] == {"b64": base64.b64encode(b"foo\xff\x00").decode()}
    assert rows.json()["predictions"][2]["upper"] == "BAZ"
    assert _post(f"{url}/tf1_unknown_shapes:predict", {"instances": [[[1, 2]], [[3, 4]]]}).json() == \
        {"predictions": [[[3.0, 5.0]], [[7.0, 9.0]]]}
    # ... and several named inputs, as rows of objects and as columns.
    signals = {"tag": ["foo", "bar"], "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
               "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]}
    instances = [{k: v[i] for k, v in signals.items()} for i in range(2)]
    signature = {"signature_name": "tagged_signals"}
    assert _post(f"{url}/tf2_scalars:predict", {**signature, "instances": instances}).json() == \
        {"predictions": [{"tag_length": 3, "signal_sum": 15, "sensor_sum": 10},
                         {"tag_length": 3, "signal_sum": 15, "sensor_sum": 23}]}
    assert _post(f"{url}/tf2_scalars:predict", {**signature, "inputs": signals}).json() == \
        {"outputs": {"tag_length": [3, 3], "signal_sum": [15, 15], "sensor_sum": [10, 23]}}
    # JSON conformance: NaN and the infinities go in and come back as those tokens.
    special = _post(f"{url}/half_plus_three:predict", '{"instances": [NaN, Infinity, -Infinity]}')
    assert special.status_code == 200 and special.text.replace(" ", "").endswith('[NaN,Infinity,-Infinity]}')
    both = _post(f"{url}/half_plus_three:predict", {"instances": [1.0], "inputs": [1.0]})
    assert both.status_code == 400 and both.json()["error"]


def test_not_found_is_worded_as_tf_serving_words_it_over_grpc(zoo) -> None:
    x = {"x": np.array([[1.0]], np.float32)}
    for name, version, wording in (("half", None, "Latest(half)"),
                                   ("half_plus_three", 7, "Specific(half_plus_three, 7)")):
        answer = zoo[1].predict_grpc(name, "", x, version)
        assert (answer.code, answer.message) == ("NOT_FOUND", f"Servable not found for request: {wording}")
