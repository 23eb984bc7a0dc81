"""The embedded server serving TF Serving-style models (TF1 and TF2 SavedModels, Keras, every dtype), over gRPC
and REST, as TensorFlow Serving's own integration test (model_servers/tensorflow_model_server_test.py) drives
tensorflow_model_server: Predict / Classify / Regress / MultiInference / GetModelStatus / GetModelMetadata and
their REST forms. The models are written by benchmarks/targets/tfs_models.py into a temporary folder.

One server (graph mode) serves every model for the module; one more (xla) checks the TF1 model there, and one
with batching runs TF Serving's batching case.
"""
from __future__ import annotations

import base64
import json
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
    predict_pb2,
    regression_pb2,
)

from tests.server_fixture import running_server
from benchmarks.targets import tfs_models

pytestmark = pytest.mark.timeout(600)

RPC_TIMEOUT = 20.0
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tfs_models")
    tfs_models.write_half_plus_two_tf1(root / "default")
    tfs_models.write_half_plus_two_tf1(root / "half_plus_three", b=3.0)
    tfs_models.write_example_warmup(tfs_models.write_half_plus_two_tf1(root / "warmed", version_dir="1"))
    tfs_models.write_example_warmup(tfs_models.write_half_plus_two_tf1(root / "warm_broken", version_dir="1"),
                                    classify_signature="serving_default")
    tfs_models.write_half_plus_two_tf2(root / "half_plus_two_tf2")
    tfs_models.write_typed_tf2(root / "typed")
    tfs_models.write_keras_sequential(root / "keras_sequential", version_dir="7")
    tfs_models.write_mirrored_keras_sequential(root / "keras_mirrored", version_dir="8")
    tfs_models.write_multi_signature_tf2(root / "multi_signature", version_dir="5")
    tfs_models.write_scale_module(root / "scale", version_dir="9")
    names = ["default", "half_plus_three", "half_plus_two_tf2", "typed", "keras_sequential", "keras_mirrored",
             "multi_signature", "scale", "warmed", "warm_broken"]
    tfs_models.write_model_config(root / "models.config", {n: root / n for n in names})
    return root


@pytest.fixture(scope="module")
def server(models_root: Path):
    with running_server(models_root / "models.config", mode="graph") as handle:
        yield handle


def _stub(server):
    return server.prediction_stub()


def _x_request(model: str = "default", signature: str = "", dims=(1,), output_filter=("y",)) -> predict_pb2.PredictRequest:
    """TF Serving's VerifyPredictRequest: x = 2.0 as float_val with the given shape."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    x = request.inputs["x"]
    x.dtype = 1  # DT_FLOAT
    x.float_val.append(2.0)
    for d in dims:
        x.tensor_shape.dim.add(size=d)
    request.output_filter.extend(output_filter)
    return request


def _example_input(target, values=(2.0,)) -> None:
    for v in values:
        target.example_list.examples.add().features.feature["x"].float_list.value.append(v)


def _verify_predict(result, expected: float, model: str, signature: str, version: int) -> None:
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == 1
    assert list(result.outputs["y"].float_val) == [expected]  # typed field, as TF Serving answers
    assert (result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value) == \
        (model, signature, version)


# ------------------------------------------------------------------------------ TF Serving's test, gRPC
@pytest.mark.parametrize("output_filter", [("y",), ()])
def test_predict_tf1_saved_model(server, output_filter) -> None:  # testPredictSavedModel
    result = _stub(server).Predict(_x_request(output_filter=output_filter), RPC_TIMEOUT)
    _verify_predict(result, 3.0, "default", "serving_default", 123)


def test_good_model_config_serves_both_models(server) -> None:  # testGoodModelConfig
    for model, expected in (("default", 3.0), ("half_plus_three", 4.0)):
        for output_filter in (("y",), ()):
            result = _stub(server).Predict(_x_request(model, output_filter=output_filter), RPC_TIMEOUT)
            _verify_predict(result, expected, model, "serving_default", 123)


def test_get_model_status(server) -> None:  # testGetModelStatus
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    result = server.model_stub().GetModelStatus(request, RPC_TIMEOUT)
    assert [(s.version, s.status.error_code) for s in result.model_version_status] == [(123, 0)]


def test_get_model_metadata(server) -> None:  # testGetModelMetadata
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = _stub(server).GetModelMetadata(request, RPC_TIMEOUT)
    assert (result.model_spec.name, result.model_spec.version.value) == ("default", 123)
    assert list(result.metadata) == ["signature_def"]
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    result.metadata["signature_def"].Unpack(sig_map)
    assert sig_map.signature_def["classify_x_to_y"].method_name == CLASSIFY
    assert sig_map.signature_def["serving_default"].inputs["x"].name == "x:0"


@pytest.mark.parametrize("model", ["default", "half_plus_two_tf2"])  # testClassify / testClassifyTf2
def test_classify(server, model) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "classify_x_to_y"
    _example_input(request.input)
    result = _stub(server).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert [(c.label, c.score) for c in result.result.classifications[0].classes] == [("", 3.0)]
    assert (result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value) == \
        (model, "classify_x_to_y", 123)


@pytest.mark.parametrize("model", ["default", "half_plus_two_tf2"])  # testRegress / testRegressTf2
def test_regress(server, model) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "regress_x_to_y"
    _example_input(request.input, (2.0, 4.0))
    result = _stub(server).Regress(request, RPC_TIMEOUT)
    assert [r.value for r in result.result.regressions] == [3.0, 4.0]
    assert (result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value) == \
        (model, "regress_x_to_y", 123)


@pytest.mark.parametrize("model", ["default", "half_plus_two_tf2"])  # testMultiInference / Tf2
def test_multi_inference(server, model) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)):
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    _example_input(request.input)
    result = _stub(server).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i, signature in enumerate(("regress_x_to_y", "classify_x_to_y")):
        spec = result.results[i].model_spec
        assert (spec.name, spec.signature_name, spec.version.value) == (model, signature, 123)


def test_tf_saved_model_save(server) -> None:  # test_tf_saved_model_save (any-shape input)
    result = _stub(server).Predict(_x_request("scale", output_filter=()), RPC_TIMEOUT)
    _verify_predict(result, 12.0, "scale", "serving_default", 9)


def test_tf_saved_model_save_multiple_signatures(server) -> None:  # test_tf_saved_model_save_multiple_signatures
    result = _stub(server).Predict(_x_request("multi_signature", "custom_signature_key"), RPC_TIMEOUT)
    _verify_predict(result, 2.0, "multi_signature", "custom_signature_key", 5)
    result = _stub(server).Predict(_x_request("multi_signature"), RPC_TIMEOUT)
    _verify_predict(result, 1.0, "multi_signature", "serving_default", 5)


@pytest.mark.parametrize("model,expected,version", [
    ("keras_sequential", 4.0, 7),  # test_sequential_keras_saved_model_save
    ("keras_mirrored", 2.0, 8),  # test_distrat_sequential_keras_saved_model_save
])
def test_keras_sequential_saved_model(server, model, expected, version) -> None:
    # Keras 3 names a tf.saved_model.save signature 'inputs' -> 'output_0' (Keras 2 used the layer names).
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
    result = _stub(server).Predict(request, RPC_TIMEOUT)
    assert list(result.outputs["output_0"].float_val) == [expected]
    assert result.model_spec.version.value == version


# ------------------------------------------------------------------------------ TF Serving's test, REST
def _post(server, path: str, body) -> requests.Response:
    return requests.post(f"{server.rest_url}{path}", data=json.dumps(body), timeout=RPC_TIMEOUT)


def test_classify_rest(server) -> None:  # testClassifyREST
    r = _post(server, "/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert (r.status_code, r.json()) == (200, {"results": [[["", 3.0]]]})


def test_regress_rest(server) -> None:  # testRegressREST
    r = _post(server, "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert (r.status_code, r.json()) == (200, {"results": [3.0]})


def test_predict_rest_row_and_columnar(server) -> None:  # testPredictREST / testPredictColumnarREST
    # x is declared [-1,1]; the TF1 graph takes [3] and answers [3], as TF Serving does.
    r = _post(server, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert (r.status_code, r.json()) == (200, {"predictions": [3.0, 3.5, 4.0]})
    r = _post(server, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert (r.status_code, r.json()) == (200, {"outputs": [3.0, 3.5, 4.0]})


def test_get_status_rest(server) -> None:  # testGetStatusREST
    r = requests.get(f"{server.rest_url}/v1/models/default", timeout=RPC_TIMEOUT)
    assert r.json() == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_get_model_metadata_rest(server) -> None:  # testGetModelMetadataREST
    r = requests.get(f"{server.rest_url}/v1/models/default/metadata", timeout=RPC_TIMEOUT)
    doc = r.json()
    assert doc["model_spec"] == {"name": "default", "signature_name": "", "version": "123"}
    assert list(doc["metadata"]) == ["signature_def"] and "@type" not in doc["metadata"]["signature_def"]
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert sorted(sigs) == ["classify_x_to_classes", "classify_x_to_y", "regress_x_to_y", "serving_default"]
    # TensorFlow >= 2.13's SignatureDef also has a 'defaults' map (empty here); TF Serving's file predates it.
    assert {k: v for k, v in sigs["serving_default"].items() if k != "defaults"} == {
        "inputs": {"x": {"dtype": "DT_FLOAT", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}, "name": "x:0"}},
        "outputs": {"y": {"dtype": "DT_FLOAT", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}, "name": "y:0"}},
        "method_name": "tensorflow/serving/predict"}
    assert sigs["classify_x_to_y"]["inputs"]["inputs"] == {
        "dtype": "DT_STRING", "tensor_shape": {"dim": [], "unknown_rank": True}, "name": "tf_example:0"}


# ------------------------------------------------------------------------------ beyond TF Serving's test
def test_classify_with_classes_and_context(server) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_classes"
    request.input.example_list_with_context.context.features.feature["x"].float_list.value.append(-10.0)
    request.input.example_list_with_context.examples.add()  # takes x from the context
    request.input.example_list_with_context.examples.add().features.feature["x"].float_list.value.append(8.0)
    result = _stub(server).Classify(request, RPC_TIMEOUT)
    rows = [[(c.label, round(c.score, 4)) for c in item.classes] for item in result.result.classifications]
    assert [[label for label, _ in row] for row in rows] == [["negative", "positive"]] * 2
    assert rows[0][1][1] < 0.05 and rows[1][1][1] > 0.99  # sigmoid(0.5*x+2): x=-10 -> 0.047, x=8 -> 0.998


def test_classify_rest_context_int_and_b64_features(server) -> None:
    body = {"signature_name": "classify_x_to_classes", "context": {"x": 8.0},
            "examples": [{"other": 1}, {"x": -10.0, "tag": {"b64": base64.b64encode(b"\0\1").decode()}}]}
    r = _post(server, "/v1/models/default:classify", body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [[pair[0] for pair in row] for row in results] == [["negative", "positive"]] * 2
    assert results[0][1][1] > 0.99 and results[1][1][1] < 0.05


@pytest.mark.parametrize("path,body,status,words", [
    ("/v1/models/default:classify", {"signature_name": "serving_default", "examples": [{"x": 2.0}]}, 400,
     "Expected classification signature method_name to be tensorflow/serving/classify. "
     "Was: tensorflow/serving/predict"),
    ("/v1/models/default:regress", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, 400,
     "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/classify"),
    ("/v1/models/default:regress", {"signature_name": "nope", "examples": [{"x": 2.0}]}, 400,
     "No signature was found with the name: nope"),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y"}, 400, "'examples' is expected"),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": []}, 400, "empty array"),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": [1, 2.5]}]}, 400,
     "Unexpected element type in feature: x"),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": None}]}, 400,
     "unexpected JSON type"),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 1e39}]}, 400,
     "without loss of precision"),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"n": 2**63}]}, 400,
     "has uint64 element. Only int64 is supported."),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "context": [1], "examples": [{}]}, 400,
     "Example must be JSON object but got JSON ARRAY"),
    ("/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"y": 2.0}]}, 400,
     "Feature: x (data type: float) is required but could not be found"),
    ("/v1/models/nope:classify", {"examples": [{"x": 2.0}]}, 404, "nope"),
])
def test_classify_regress_rest_errors(server, path, body, status, words) -> None:
    r = _post(server, path, body)
    assert r.status_code == status and words in r.json()["error"], r.text


@pytest.mark.parametrize("call,request_factory,words", [
    ("Classify", lambda: classification_pb2.ClassificationRequest(), "Input is empty."),
    ("Regress", lambda: regression_pb2.RegressionRequest(), "Input is empty."),
])
def test_empty_input_is_invalid(server, call, request_factory, words) -> None:
    request = request_factory()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y" if call == "Regress" else "classify_x_to_y"
    with pytest.raises(grpc.RpcError) as err:
        getattr(_stub(server), call)(request, RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details()


def test_multi_inference_refusals(server) -> None:
    def request(*tasks):
        req = inference_pb2.MultiInferenceRequest()
        for model, signature, method in tasks:
            t = req.tasks.add()
            t.model_spec.name, t.model_spec.signature_name, t.method_name = model, signature, method
        _example_input(req.input)
        return req

    cases = [
        (request(("default", "regress_x_to_y", REGRESS), ("default", "regress_x_to_y", REGRESS)),
         grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: regress_x_to_y"),
        (request(("default", "regress_x_to_y", REGRESS), ("half_plus_three", "classify_x_to_y", CLASSIFY)),
         grpc.StatusCode.INVALID_ARGUMENT, "must access the same model name"),
        (request(("default", "serving_default", "tensorflow/serving/predict")),
         grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict"),
        (request(("default", "missing", REGRESS)),
         grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: missing"),
    ]
    for req, code, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            _stub(server).MultiInference(req, RPC_TIMEOUT)
        assert err.value.code() == code and words in err.value.details(), err.value.details()


def test_predict_output_filter_refusals(server) -> None:
    for output_filter, words in ((("z",), "output tensor alias not found in signature: z Outputs expected to be "
                                           "in the set {y}."),
                                 (("y", "y"), "duplicate output tensor alias: y")):
        with pytest.raises(grpc.RpcError) as err:
            _stub(server).Predict(_x_request(output_filter=output_filter), RPC_TIMEOUT)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details()


def test_graph_rejected_shape_gets_the_graphs_message(server) -> None:
    """TF1: shapes go to the graph; one its ops refuse is INVALID_ARGUMENT with TensorFlow's own words."""
    r = _post(server, "/v1/models/default:predict", {"signature_name": "classify_x_to_classes",
                                                     "inputs": {"inputs": [["a", "b"]]}})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == ("classify_x_to_classes: InvalidArgumentError: Expected serialized to be a scalar "
                                 "or vector, got shape: [1,2]")
    # TF2: the function's declared shape is checked first, naming the input and the shape it expects.
    r = _post(server, "/v1/models/typed:predict", {"inputs": {"x": [1.0, 2.0], "k": [1]}})
    assert r.status_code == 400 and "input 'x'" in r.json()["error"] and "[-1,2]" in r.json()["error"]


_TYPED_VALUES = {
    "float32": [1.5, -2.25], "float64": [1e-300, 2.5], "float16": [0.5, 65504.0], "int8": [-128, 127],
    "int16": [-32768, 32767], "int32": [-(2**31), 2**31 - 1], "int64": [-(2**63), 2**63 - 1], "uint8": [0, 255],
    "bool": [True, False], "string": ["héllo", ""],
}


@pytest.mark.parametrize("signature,dtype", sorted(tfs_models.TYPED_SIGNATURES.items()))
def test_every_dtype_round_trips_grpc_and_rest(server, signature, dtype) -> None:
    import tensorflow as tf

    values = _TYPED_VALUES[dtype]
    array = np.array([v.encode() for v in values], dtype=object) if dtype == "string" else np.array(values, dtype)
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "typed", signature
    request.inputs["v"].CopyFrom(tf.make_tensor_proto(array))
    out = _stub(server).Predict(request, RPC_TIMEOUT).outputs["out"]
    assert not out.tensor_content  # typed value fields, as TF Serving's AsProtoField
    np.testing.assert_array_equal(tf.make_ndarray(out), array)
    for body, key in (({"signature_name": signature, "instances": values}, "predictions"),
                      ({"signature_name": signature, "inputs": {"v": values}}, "outputs")):
        r = _post(server, "/v1/models/typed:predict", body)
        assert (r.status_code, r.json()) == (200, {key: values}), r.text


def test_string_inputs_b64_and_int_outputs_rest(server) -> None:
    raw = "wörld".encode()
    r = _post(server, "/v1/models/typed:predict", {"signature_name": "greet",
                                                   "instances": [{"b64": base64.b64encode(raw).decode()}, "x"]})
    assert r.status_code == 200, r.text
    b64 = {"b64": base64.b64encode(raw).decode()}  # outputs named *_bytes come back base64-encoded
    assert r.json() == {"predictions": [{"greeting": "hello wörld", "length": 5, "name_bytes": b64},
                                        {"greeting": "hello x", "length": 1, "name_bytes": {"b64": "eA=="}}]}
    r = _post(server, "/v1/models/typed:predict", {"signature_name": "count_up", "inputs": [1, 41]})
    assert r.json() == {"outputs": [2, 42]}
    r = _post(server, "/v1/models/typed:predict", {"signature_name": "greet", "instances": [{"b64": "%%%"}]})
    assert r.status_code == 400 and "base64" in r.json()["error"]


def test_several_inputs_of_different_dtypes(server) -> None:
    r = _post(server, "/v1/models/typed:predict",
              {"instances": [{"x": [1.0, 2.0], "k": 2}, {"x": [0.5, 0.5], "k": -1}]})
    assert (r.status_code, r.json()) == (200, {"predictions": [6.0, -1.0]})


@pytest.mark.parametrize("body,words", [
    ({"signature_name": "count_up", "inputs": [1.5]}, "decimal numbers"),
    ({"signature_name": "echo_string", "inputs": [1, 2]}, "DT_STRING"),
    ({"signature_name": "count_up", "inputs": ["a"]}, "DT_INT64"),
    ({"signature_name": "echo_uint8", "inputs": [256]}, "out of range"),
    ({"signature_name": "missing", "inputs": [1]}, 'Serving signature name: "missing" not found'),
    ({"inputs": {"x": [[1.0, 2.0]]}}, "Missing but required: {k}"),
])
def test_predict_rest_bad_input(server, body, words) -> None:
    r = _post(server, "/v1/models/typed:predict", body)
    assert r.status_code == 400 and words in r.json()["error"], r.text


def test_wrong_dtype_grpc_names_the_input(server) -> None:
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "typed", "count_up"
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([b"a"], dtype=object)))
    with pytest.raises(grpc.RpcError) as err:
        _stub(server).Predict(request, RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'n'" in err.value.details()
    request.inputs["n"].Clear()
    request.inputs["n"].dtype = 7  # DT_STRING, shape [3], one value short
    request.inputs["n"].tensor_shape.dim.add(size=3)
    request.inputs["n"].string_val.extend([b"a", b"b"])
    request.model_spec.signature_name = "echo_string"
    request.inputs["v"].CopyFrom(request.inputs.pop("n"))
    with pytest.raises(grpc.RpcError) as err:
        _stub(server).Predict(request, RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "carries 2 values" in err.value.details()
    # The server is still answering.
    assert _stub(server).Predict(_x_request(), RPC_TIMEOUT).outputs["y"].float_val[0] == 3.0


def test_warmup_replays_classify_regress_and_multi_inference_records(server) -> None:
    """'warmed' (one warmup record of each kind) loads; in 'warm_broken' the classify record names a predict
    signature, so that version is refused with the reason in its status while the rest keeps serving."""
    [broken] = requests.get(f"{server.rest_url}/v1/models/warm_broken", timeout=RPC_TIMEOUT).json()[
        "model_version_status"]
    assert broken["state"] == "END"
    assert "warmup request 1 failed" in broken["status"]["error_message"]
    assert "Expected classification signature method_name" in broken["status"]["error_message"]
    [warmed] = requests.get(f"{server.rest_url}/v1/models/warmed", timeout=RPC_TIMEOUT).json()["model_version_status"]
    assert warmed["state"] == "AVAILABLE"
    assert "replayed 4 warmup requests" in server.log_text()
    result = _stub(server).Predict(_x_request("warmed"), RPC_TIMEOUT)
    _verify_predict(result, 3.0, "warmed", "serving_default", 1)


# ------------------------------------------------------------------------------ other server modes
def test_xla_mode_serves_tf1_and_string_signatures(models_root: Path) -> None:
    with running_server(models_root / "models.config", mode="xla") as server:
        _verify_predict(_stub(server).Predict(_x_request(), RPC_TIMEOUT), 3.0, "default", "serving_default", 123)
        r = _post(server, "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
        assert r.json() == {"results": [3.0]}
        r = _post(server, "/v1/models/typed:predict", {"signature_name": "greet", "instances": ["a"]})
        assert r.json() == {"predictions": [{"greeting": "hello a", "length": 1, "name_bytes": {"b64": "YQ=="}}]}


def test_predict_with_batching(models_root: Path, tmp_path: Path) -> None:  # testPredictBatching
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n"
                        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 8 }\n")
    with running_server(models_root / "models.config", batching_file=batching) as server:
        for output_filter in (("y",), ()):
            result = _stub(server).Predict(_x_request(output_filter=output_filter), RPC_TIMEOUT)
            _verify_predict(result, 3.0, "default", "serving_default", 123)
        request = regression_pb2.RegressionRequest()
        request.model_spec.name, request.model_spec.signature_name = "half_plus_two_tf2", "regress_x_to_y"
        _example_input(request.input, (2.0, 6.0))
        assert [r.value for r in _stub(server).Regress(request, RPC_TIMEOUT).result.regressions] == [3.0, 5.0]
