"""Requests built once, before any timed section, for gRPC and REST alike.

Both transports carry the same numbers: one float32 matrix [batch, n_features] per (model, batch).
gRPC payloads are stored already serialised (bytes), REST payloads as the exact JSON body bytes, so a
timed loop only sends bytes. What encoding/decoding costs is measured here separately and reported
in the result rows (serialize_ms / deserialize_ms).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.clients import protos
from benchmarks.clients.inputs import predict_request, rest_path, tensor_to_array
from export import contract
from export.contract import DEFAULT_SIGNATURE, PREDICT_METHOD, VersionDir

DEFAULT_N_FEATURES = 10
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class ModelInfo:
    name: str
    version_dirs: list[VersionDir]  # ascending, each with its directory as found on disk
    n_features: int  # 0: not one of the project's models; requests follow its served signature
    signatures: dict = field(default_factory=dict)
    model_dir: Path | None = None

    @property
    def versions(self) -> list[int]:
        return [v.version for v in self.version_dirs]

    @property
    def latest_dir(self) -> Path | None:
        return self.version_dirs[-1].path if self.version_dirs else None

    def version_dir(self, version: int) -> Path:
        """The directory of one version (zero-padded or not); FileNotFoundError when it is not exported."""
        for found in self.version_dirs:
            if found.version == version:
                return found.path
        raise FileNotFoundError(f"{self.name} has no version {version} under {self.model_dir} "
                                f"(versions: {self.versions})")


def discover_models(models_dir: Path) -> list[ModelInfo]:
    """Models exported under models_dir/<model>/<version>/ (export/contract.py), read from manifests
    without importing TensorFlow."""
    out: list[ModelInfo] = []
    for name in contract.model_names(models_dir):
        d = Path(models_dir) / name
        found = contract.version_dirs(d)
        if not found:
            continue
        n_features, sigs = DEFAULT_N_FEATURES, {}
        if contract.manifest_path(found[-1].path).exists():
            m = contract.read_manifest(found[-1].path)
            n_features = int(m.get("n_features", 0))  # 0: a model of the user's, described by its signature
            sigs = m.get("signatures", {})
        out.append(ModelInfo(name, found, n_features, sigs, d))
    return out


def make_inputs(batch_size: int, n_features: int, seed: int = 0) -> np.ndarray:
    # Values on the scale of the (standardised) diabetes features; the scaling is inside the graph,
    # so any finite floats are valid inputs.
    rng = np.random.default_rng(seed + 1000 * batch_size)
    return rng.normal(0.0, 0.05, size=(batch_size, n_features)).astype(np.float32)


def build_predict_request(model: str, x: np.ndarray, signature: str = DEFAULT_SIGNATURE,
                          input_name: str = "inputs", version: int | None = None):
    """PredictRequest with one float32 TensorProto (tensor_content = raw little-endian bytes, which is
    what tf.make_tensor_proto produces for numeric arrays)."""
    return predict_request(model, signature, {input_name: ("DT_FLOAT", x)}, version)


def build_rest_body(x: np.ndarray, signature: str = DEFAULT_SIGNATURE) -> bytes:
    body: dict = {"instances": x.tolist()}
    if signature and signature != DEFAULT_SIGNATURE:
        body["signature_name"] = signature
    return json.dumps(body, separators=(",", ":")).encode()


def rest_predict_path(model: str, version: int | None = None) -> str:
    return rest_path(model, "predict", version)


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


def build_payload(model: str, batch_size: int, n_features: int, *, signature: str = DEFAULT_SIGNATURE,
                  version: int | None = None, seed: int = 0, codec_reps: int | None = None) -> Payload:
    x = make_inputs(batch_size, n_features, seed)
    reps = codec_reps or max(3, min(200, 20000 // max(batch_size, 1)))
    g_ms = per_call_ms(lambda: build_predict_request(model, x, signature, version=version).SerializeToString(), reps)
    r_ms = per_call_ms(lambda: build_rest_body(x, signature), reps)
    return Payload(model, batch_size, n_features, signature,
                   build_predict_request(model, x, signature, version=version).SerializeToString(),
                   build_rest_body(x, signature), rest_predict_path(model, version), g_ms, r_ms)


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
            tensor_to_array(t)

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
