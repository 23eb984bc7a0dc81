"""Requests built once, before any timed section, for gRPC and REST alike.

Both transports carry the same numbers: one float32 matrix [batch, n_features] per (model, batch).
gRPC payloads are stored already serialised (bytes), REST payloads as the exact JSON body bytes, so a
timed loop only sends bytes. What encoding/decoding costs is measured here separately and reported
in the result rows (serialize_ms / deserialize_ms).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmarks.requests import protos
from benchmarks.requests.tensors import predict_request, rest_path
from export.contract import CLASSIFY_METHOD, DEFAULT_SIGNATURE, PREDICT_METHOD, REGRESS_METHOD
from export.tensor_proto import to_ndarray

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
GRPC_METHODS = {"predict": PREDICT_METHOD, "classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD}


def make_inputs(batch_size: int, n_features: int, seed: int = 0) -> np.ndarray:
    # Values on the scale of the (standardised) diabetes features; the scaling is inside the graph,
    # so any finite floats are valid inputs.
    rng = np.random.default_rng(seed + 1000 * batch_size)
    return rng.normal(0.0, 0.05, size=(batch_size, n_features)).astype(np.float32)


def build_predict_request(model: str, x: np.ndarray, signature: str = DEFAULT_SIGNATURE,
                          input_name: str = "inputs", version: int | None = None):
    """PredictRequest with one float32 TensorProto (tensor_content, as tf.make_tensor_proto writes it)."""
    return predict_request(model, signature, {input_name: x.astype(np.float32, copy=False)}, version)


def build_rest_body(x: np.ndarray, signature: str = DEFAULT_SIGNATURE) -> bytes:
    body: dict = {"instances": x.tolist()}
    if signature and signature != DEFAULT_SIGNATURE:
        body["signature_name"] = signature
    return json.dumps(body, separators=(",", ":")).encode()


def per_call_ms(fn, reps: int) -> float:
    fn()  # untimed: the first call pays one-time costs (proto class setup, imports), not per-request work
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) * 1000.0 / reps


@dataclass
class Payload:
    model: str
    batch_size: int
    n_features: int
    signature: str
    grpc_bytes: bytes
    rest_body: bytes
    rest_path: str
    grpc_serialize_ms: float  # numpy -> PredictRequest -> bytes
    rest_serialize_ms: float  # numpy -> JSON bytes
    method: str = "predict"  # predict | classify | regress: which API the bytes are for
    grpc_method: str = PREDICT_METHOD  # the gRPC method path they are sent to


def timed_payload(model: str, batch_size: int, signature: str, grpc_bytes: Callable[[], bytes],
                  rest_body: Callable[[], bytes], *, n_features: int = 0, method: str = "predict",
                  version: int | None = None, codec_reps: int | None = None) -> Payload:
    """A Payload from the two encoders of one request, each also timed per call (serialize_ms)."""
    request = grpc_bytes()
    # ~800 KB encoded in all (200 calls at most, 3 at least): the project's [batch, n_features] matrices keep their
    # counts, and a 600 KB image is timed in a second instead of taking minutes before its first request.
    reps = codec_reps or max(3, min(200, 800_000 // max(len(request), 1)))
    return Payload(model, batch_size, n_features, signature, request, rest_body(),
                   rest_path(model, method, version), per_call_ms(grpc_bytes, reps), per_call_ms(rest_body, reps),
                   method, GRPC_METHODS[method])


def build_payload(model: str, batch_size: int, n_features: int, *, signature: str = DEFAULT_SIGNATURE,
                  version: int | None = None, seed: int = 0, codec_reps: int | None = None) -> Payload:
    """The project's fast path: one float32 matrix [batch, n_features] under the input "inputs"."""
    x = make_inputs(batch_size, n_features, seed)
    return timed_payload(model, batch_size, signature,
                         lambda: build_predict_request(model, x, signature, version=version).SerializeToString(),
                         lambda: build_rest_body(x, signature), n_features=n_features, version=version,
                         codec_reps=codec_reps)


def _response_class(method: str):
    if method == "classify":
        return protos.get("classification_pb2").ClassificationResponse
    if method == "regress":
        return protos.get("regression_pb2").RegressionResponse
    return protos.get("predict_pb2").PredictResponse


def grpc_response_decode_ms(response_bytes: bytes, reps: int = 50, method: str = "predict") -> float:
    """Cost of parsing a response (and, for Predict, turning every output into numpy)."""
    cls = _response_class(method)

    def decode():
        resp = cls.FromString(response_bytes)
        for t in getattr(resp, "outputs", {}).values():
            to_ndarray(t)

    return per_call_ms(decode, reps)


def rest_response_decode_ms(body: bytes, reps: int = 50) -> float:
    return per_call_ms(lambda: json.loads(body), reps)


def _rows_problem(what: str, got: int, batch_size: int) -> str | None:
    return None if got == batch_size else f"{what} has {got} rows, expected {batch_size}"


def check_grpc_response(response_bytes: bytes, batch_size: int, method: str = "predict") -> str | None:
    """Returns a problem description, or None when the response answers every row: for Predict, some
    output (of any dtype, among any number) has the batch as its first dimension."""
    resp = _response_class(method).FromString(response_bytes)
    if method == "classify":
        return _rows_problem("ClassificationResponse", len(resp.result.classifications), batch_size)
    if method == "regress":
        return _rows_problem("RegressionResponse", len(resp.result.regressions), batch_size)
    if not resp.outputs:
        return "PredictResponse has no outputs"
    shapes = {k: [d.size for d in t.tensor_shape.dim] for k, t in resp.outputs.items()}
    if any(dims and dims[0] == batch_size for dims in shapes.values()):
        return None
    return f"no output has {batch_size} rows (output shapes: {shapes})"


def check_rest_response(body: bytes, batch_size: int) -> str | None:
    """Same check for a REST answer: predictions (row format), outputs (columnar: one value or a dict
    of named outputs) or results (classify/regress)."""
    try:
        d = json.loads(body)
    except ValueError as e:
        return f"response is not JSON: {e}"
    if not isinstance(d, dict):
        return f"response is a JSON {type(d).__name__}, not an object"
    answer = next((d[k] for k in ("predictions", "outputs", "results") if k in d), None)
    columns = list(answer.values()) if isinstance(answer, dict) else [answer]
    if any(isinstance(c, list) and len(c) == batch_size for c in columns):
        return None
    return f"no predictions/outputs/results with {batch_size} rows in {body[:120]!r}"
