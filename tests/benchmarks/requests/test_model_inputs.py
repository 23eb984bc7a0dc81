"""Requests built from a signature, offline: every dtype, several inputs, --shape, --input-data in each
accepted format, Classify/Regress examples, and the response checks (any outputs, not one float)."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from benchmarks.requests import protos
from benchmarks.requests.examples import example_request_bytes, example_rest_body, random_features
from benchmarks.requests.input_data import example_features, load_document, predict_tensors, take_rows
from benchmarks.requests.tensors import (NUMPY_DTYPES, STRING, InputOptions, parse_feature, parse_shape,
                                       predict_request_bytes, predict_rest_body, random_inputs)
from benchmarks.requests import builder
from benchmarks.requests.builder import RequestSpec, SignatureRequests, build_requests, resolve_method
from benchmarks.requests.payloads import build_payload, check_grpc_response, check_rest_response
from benchmarks.requests.signature import ServedSignature, signature_from_map
from export.contract import CLASSIFY_METHOD
from export.tensor_proto import to_ndarray

ALL_DTYPES = sorted(NUMPY_DTYPES)  # every dtype the contract lists, DT_STRING included


def _metadata_map(inputs: dict[str, tuple[str, list[int] | None]], method: str = "predict"):
    """A SignatureDefMap proto as GetModelMetadata returns it."""
    p = protos.load()
    sig_map = p["get_model_metadata_pb2"].SignatureDefMap()
    sd = sig_map.signature_def["serving_default"]
    sd.method_name = f"tensorflow/serving/{method}"
    for name, (dtype, shape) in inputs.items():
        info = sd.inputs[name]
        info.name = f"serving_default_{name}:0"
        info.dtype = p["types_pb2"].DataType.Value(dtype)
        if shape is None:
            info.tensor_shape.unknown_rank = True
        for d in shape or []:
            info.tensor_shape.dim.add().size = d
    sd.outputs["y"].dtype = p["types_pb2"].DT_FLOAT
    return sig_map


def _sig(inputs, method="predict") -> ServedSignature:
    return signature_from_map(_metadata_map(inputs, method), "m", "serving_default")


def _decode_request(raw: bytes) -> dict[str, np.ndarray]:
    req = protos.get("predict_pb2").PredictRequest.FromString(raw)
    assert req.model_spec.name == "m" and req.model_spec.signature_name == "serving_default"
    return {k: to_ndarray(t) for k, t in req.inputs.items()}


def _decode_rest(body: bytes, sig: ServedSignature) -> dict[str, np.ndarray]:
    """Decode REST's columnar JSON back to numpy (b64 -> bytes) with the signature's dtypes."""
    from benchmarks.requests.input_data import to_array

    doc = json.loads(body)
    assert doc["signature_name"] == "serving_default"
    return {k: to_array(v, sig.inputs[k].dtype, k) for k, v in doc["inputs"].items()}


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_every_dtype_round_trips_through_grpc_and_rest(dtype):
    sig = _sig({"x": (dtype, [-1, 3])})
    opts = InputOptions(int_range=(2, 9), string_length=5)
    values = random_inputs(sig, 4, opts)
    x = values["x"]
    assert x.shape == (4, 3)
    if dtype == STRING:
        assert all(isinstance(v, bytes) and len(v) == 5 for v in x.reshape(-1))
    else:
        assert x.dtype == NUMPY_DTYPES[dtype]
        if x.dtype.kind in "iu":
            assert x.min() >= 2 and x.max() < 9
    grpc_side = _decode_request(predict_request_bytes(sig, values))["x"]
    rest_side = _decode_rest(predict_rest_body(sig, values), sig)["x"]
    np.testing.assert_array_equal(grpc_side, x)
    np.testing.assert_array_equal(rest_side, x)  # the same tensors over both transports


def test_strings_go_as_b64_over_rest_and_string_val_over_grpc():
    sig = _sig({"tag": (STRING, [-1])})
    values = {"tag": np.array([b"\x00\xffab", b"cd"], dtype=object)}
    req = protos.get("predict_pb2").PredictRequest.FromString(predict_request_bytes(sig, values))
    assert list(req.inputs["tag"].string_val) == [b"\x00\xffab", b"cd"]
    doc = json.loads(predict_rest_body(sig, values))
    assert doc["inputs"]["tag"] == [{"b64": base64.b64encode(b"\x00\xffab").decode()}, {"b64": "Y2Q="}]


def test_several_inputs_from_metadata_with_batch_and_shape_flags():
    sig = _sig({"x": ("DT_FLOAT", [-1, 8]), "ids": ("DT_INT64", [-1, 4]), "mask": ("DT_BOOL", [-1]),
                "tag": (STRING, [-1]), "seq": ("DT_INT32", [-1, -1, 2]), "free": ("DT_DOUBLE", None)})
    opts = InputOptions(shapes={"seq": (5, 2), "free": (3,)}, int_range=(0, 1000))
    values = random_inputs(sig, 7, opts)
    assert {k: v.shape for k, v in values.items()} == {
        "x": (7, 8), "ids": (7, 4), "mask": (7,), "tag": (7,), "seq": (7, 5, 2), "free": (7, 3)}
    decoded = _decode_request(predict_request_bytes(sig, values))
    assert set(decoded) == set(values)
    for k in values:
        np.testing.assert_array_equal(decoded[k], values[k])
    again = random_inputs(sig, 7, opts)  # seeded: the same data every run
    np.testing.assert_array_equal(again["x"], values["x"])


def test_shape_errors_name_the_problem():
    sig = _sig({"x": ("DT_FLOAT", [-1, -1]), "y": ("DT_FLOAT", [-1, 3])})
    with pytest.raises(ValueError, match=r"--shape x:N"):
        random_inputs(sig, 1, InputOptions())
    with pytest.raises(ValueError, match=r"'nope'.*does not have.*inputs: x, y"):
        random_inputs(sig, 1, InputOptions(shapes={"nope": (2,), "x": (2,)}))
    with pytest.raises(ValueError, match=r"does not fit the signature's shape \[-1, 3\]"):
        random_inputs(sig, 1, InputOptions(shapes={"x": (2,), "y": (4,)}))
    for bad in ("x", "x:", ":3", "x:a,b", "x:-2"):
        with pytest.raises(ValueError, match="NAME:d1,d2"):
            parse_shape(bad)
    assert parse_shape("a:b:2,3") == ("a:b", (2, 3))  # names may hold ':' (TF tensor names do)


def test_unknown_signature_lists_the_ones_there_are():
    with pytest.raises(ValueError, match=r"no signature 'other' \(it has: serving_default\)"):
        signature_from_map(_metadata_map({"x": ("DT_FLOAT", [-1])}), "m", "other")


def _write(tmp_path, doc) -> object:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_input_data_in_every_format_gives_the_same_tensors(tmp_path):
    sig = _sig({"x": ("DT_FLOAT", [-1, 2]), "tag": (STRING, [-1])})
    rows = {"instances": [{"x": [1, 2], "tag": "a"}, {"x": [3, 4], "tag": {"b64": "Yg=="}}]}
    cols = {"inputs": {"x": [[1, 2], [3, 4]], "tag": ["a", "b"]}}
    pa = {"data": [{"x": [1, 2], "tag": ["a"]}, {"x": {"content": [3, 4], "shape": [2]}, "tag": {"b64": "Yg=="}}]}
    for doc in (rows, cols, pa):
        got = predict_tensors(load_document(_write(tmp_path, doc)), sig, {}, "f")
        np.testing.assert_array_equal(got["x"], np.array([[1, 2], [3, 4]], np.float32))
        assert got["tag"].reshape(-1).tolist() == [b"a", b"b"]
    batch = take_rows(predict_tensors(rows, sig, {}, "f"), 5)  # rows cycled to the batch size
    assert batch["x"].shape == (5, 2) and batch["x"][4].tolist() == [1, 2]


def test_single_input_rest_bodies_need_no_names():
    sig = _sig({"inputs": ("DT_FLOAT", [-1, 3])})
    assert predict_tensors({"instances": [[1, 2, 3]]}, sig, {}, "f")["inputs"].shape == (1, 3)
    assert predict_tensors({"inputs": [[1, 2, 3], [4, 5, 6]]}, sig, {}, "f")["inputs"].shape == (2, 3)


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ('{"rows": []}', "one of instances, inputs, examples, data"),
    ('{"instances": []}', "non-empty list"),
    ('{"instances": [{"x": [1, 2]}]}', r"missing: \['tag'\]"),
    ('{"inputs": {"x": [[1, 2]], "tag": ["a"], "extra": [1]}}', r"unknown: \['extra'\]"),
    ('{"inputs": {"x": [[1, 2], [3]], "tag": ["a", "b"]}}', "not a rectangular array of DT_FLOAT"),
    ('{"inputs": {"x": [[1, 2]], "tag": [{"b64": "!!"}]}}', "b64"),
    ('{"data": [{"x": {"content": [1, 2, 3], "shape": [2]}, "tag": ["a"]}]}', "do not fill shape"),
])
def test_malformed_input_data_is_a_value_error_naming_the_problem(tmp_path, text, match):
    sig = _sig({"x": ("DT_FLOAT", [-1, 2]), "tag": (STRING, [-1])})
    with pytest.raises(ValueError, match=match):
        predict_tensors(load_document(_write(tmp_path, text)), sig, {}, "f")


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_and_regress_requests_carry_tf_examples(method):
    sig = _sig({"inputs": (STRING, [-1])}, method=method)
    assert resolve_method(sig, "auto") == method
    opts = InputOptions(features=dict(parse_feature(f) for f in ("age:float:2", "ids:int64:3", "city:bytes")))
    features = random_features(3, opts)
    raw = example_request_bytes(sig, method, features)
    mod = protos.get("classification_pb2" if method == "classify" else "regression_pb2")
    req = (mod.ClassificationRequest if method == "classify" else mod.RegressionRequest).FromString(raw)
    examples = req.input.example_list.examples
    assert req.model_spec.signature_name == "serving_default" and len(examples) == 3
    f = examples[1].features.feature
    assert list(f["age"].float_list.value) == pytest.approx(features["age"][1].tolist())
    assert list(f["ids"].int64_list.value) == features["ids"][1].tolist()
    assert list(f["city"].bytes_list.value) == [features["city"][1][0]]
    body = json.loads(example_rest_body(sig, features))
    assert len(body["examples"]) == 3 and body["examples"][1]["city"] == [
        {"b64": base64.b64encode(features["city"][1][0]).decode()}]
    # the REST body read back as --input-data gives the same features
    back = example_features(body, "f")
    np.testing.assert_allclose(back["age"], features["age"])
    np.testing.assert_array_equal(back["ids"], features["ids"])
    payload = SignatureRequests(sig, method, opts).payload(3)
    assert payload.rest_path == f"/v1/models/m:{method}" and payload.grpc_method.endswith("/" + method.capitalize())


def test_classify_without_features_says_how_to_give_them():
    with pytest.raises(ValueError, match="--feature NAME:float"):
        random_features(2, InputOptions())
    for bad in ("x", "x:double", "x:float:0", "x:float:a"):
        with pytest.raises(ValueError, match="NAME:float"):
            parse_feature(bad)


def test_response_checks_accept_any_outputs_and_methods():
    p = protos.load()
    resp = p["predict_pb2"].PredictResponse()
    for name, dims, dtype in (("ids", [3, 2], p["types_pb2"].DT_INT64), ("label", [3], p["types_pb2"].DT_STRING)):
        resp.outputs[name].dtype = dtype
        for d in dims:
            resp.outputs[name].tensor_shape.dim.add().size = d
    assert check_grpc_response(resp.SerializeToString(), 3) is None
    assert "no output has 4 rows" in check_grpc_response(resp.SerializeToString(), 4)
    cls = p["classification_pb2"].ClassificationResponse()
    cls.result.classifications.add()
    assert check_grpc_response(cls.SerializeToString(), 1, "classify") is None
    assert "has 1 rows, expected 2" in check_grpc_response(cls.SerializeToString(), 2, "classify")
    assert check_rest_response(b'{"outputs": {"a": 1.0, "b": [[1], [2]]}}', 2) is None
    assert check_rest_response(b'{"predictions": [{"a": 1, "b": "x"}]}', 1) is None
    assert check_rest_response(b'{"results": [[["a", 0.2]], [["b", 0.1]]]}', 2) is None
    assert check_rest_response(b'{"predictions": [1]}', 2) == \
        'no predictions/outputs/results with 2 rows in b\'{"predictions": [1]}\''


# ------------------------------------------------------------------------------------------------ the entry point
def test_build_requests_takes_the_fast_path_for_the_projects_models():
    built = build_requests(RequestSpec("m", n_features=4))
    p = built.payload(3)
    assert built.method == "predict"
    assert p.grpc_bytes == build_payload("m", 3, 4).grpc_bytes and p.rest_path == "/v1/models/m:predict"
    x = _decode_request(p.grpc_bytes)["inputs"]
    assert x.shape == (3, 4) and x.dtype == np.float32
    assert json.loads(p.rest_body)["instances"] == x.tolist()
    resp = protos.get("predict_pb2").PredictResponse()
    resp.outputs["y"].tensor_shape.dim.add().size = 3
    assert built.check("grpc", resp.SerializeToString(), 3) is None
    assert "no output has 2 rows" in built.check("grpc", resp.SerializeToString(), 2)
    assert built.check("rest", b'{"predictions": [[1], [2], [3]]}', 3) is None


def test_build_requests_builds_any_other_model_from_the_served_signature(monkeypatch):
    sigs = {"m": _sig({"ids": ("DT_INT64", [-1, -1]), "tag": (STRING, [-1])}),
            "c": _sig({"inputs": (STRING, [-1])}, "classify")}
    asked = []

    def fetch(kind, target, model, signature):
        asked.append((kind, target, model, signature))
        return sigs[model]

    monkeypatch.setattr(builder, "fetch_signature", fetch)
    # n_features with non-default options still asks the server: the options describe the signature's inputs
    built = build_requests(RequestSpec("m", "rest", "h:1", 10, InputOptions(shapes={"ids": (5,)})))
    assert asked == [("rest", "h:1", "m", "serving_default")]
    got = _decode_request(built.payload(2).grpc_bytes)
    assert got["ids"].shape == (2, 5) and got["ids"].dtype == np.int64 and got["tag"].shape == (2,)
    with pytest.raises(ValueError, match="--shape names input 'nope'"):
        build_requests(RequestSpec("m", "grpc", "h:1", options=InputOptions(shapes={"nope": (1,)})))
    classify = build_requests(RequestSpec("c", "grpc", "h:1", options=InputOptions(features={"a": ("DT_FLOAT", 2)})))
    p = classify.payload(4)
    assert classify.method == "classify" and p.grpc_method == CLASSIFY_METHOD and p.rest_path.endswith(":classify")
    req = protos.get("classification_pb2").ClassificationRequest.FromString(p.grpc_bytes)
    assert len(req.input.example_list.examples) == 4
