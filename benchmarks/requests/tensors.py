"""Requests for any model, built from its signature: every input with its dtype and shape.

A served signature (signature.py) says each input's dtype and shape, -1 for a free size. The first free
dimension is the batch (the request's row count); others come from `--shape NAME:d1,d2,...`
(perf_analyzer's spelling: the dimensions after the batch). Values are seeded random per dtype (floats in
[0, 1), integers within --int-range, booleans, strings of --string-length) or come from --input-data
(input_data.py). The same numpy arrays become a PredictRequest (export/tensor_proto.py: numeric ->
tensor_content, strings -> string_val) and a REST body in TF Serving's columnar form
({"inputs": {name: value}}, bytes as {"b64": ...}), so gRPC and REST carry identical tensors.
Classify/Regress signatures take serialized tf.Examples instead: each input array becomes one feature
(examples.py).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.requests import protos
from benchmarks.requests.signature import ServedSignature, TensorInfo
from export import tensor_proto
from export.contract import DEFAULT_SIGNATURE
from export.tensor_proto import NUMPY_DTYPES, STRING
_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)


@dataclass(frozen=True)
class InputOptions:
    """How to fill a signature's inputs (the --signature/--shape/--input-data/... flags)."""

    signature: str = DEFAULT_SIGNATURE
    method: str = "auto"  # auto (the signature's own) | predict | classify | regress
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # input -> dims after the batch
    input_data: Path | None = None
    string_length: int = 16
    int_range: tuple[int, int] = (0, 100)  # [low, high) for integer inputs (ids within a vocabulary)
    features: dict[str, tuple[str, int]] = field(default_factory=dict)  # tf.Example feature -> (dtype, length)
    seed: int = 0

    def is_default(self) -> bool:
        return self == InputOptions(seed=self.seed)


def parse_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    """`NAME:d1,d2,...` -> (NAME, dims); ValueError naming what is wrong."""
    name, sep, dims = spec.rpartition(":")
    try:
        values = tuple(int(d) for d in dims.split(",") if d.strip())
    except ValueError:
        values = ()
    if not sep or not name or not values or any(v < 0 for v in values):
        raise ValueError(f"--shape {spec!r}: expected NAME:d1,d2,... with non-negative integer dimensions")
    return name, values


def parse_int_range(spec: str) -> tuple[int, int]:
    lo, sep, hi = spec.partition(",")
    try:
        low, high = int(lo), int(hi)
    except ValueError:
        low = high = 0
    if not sep or high <= low:
        raise ValueError(f"--int-range {spec!r}: expected LOW,HIGH with LOW < HIGH (ids drawn from [LOW, HIGH))")
    return low, high


FEATURE_KINDS = {"float": "DT_FLOAT", "int64": "DT_INT64", "bytes": STRING}


def parse_feature(spec: str) -> tuple[str, tuple[str, int]]:
    """`NAME:float|int64|bytes[:LENGTH]` -> (NAME, (DataType name, LENGTH)): one tf.Example feature."""
    name, _, rest = spec.partition(":")
    kind, _, length = rest.partition(":")
    if not name or kind not in FEATURE_KINDS or (length and not length.isdigit()) or length == "0":
        raise ValueError(f"--feature {spec!r}: expected NAME:float|int64|bytes[:LENGTH], LENGTH >= 1")
    return name, (FEATURE_KINDS[kind], int(length or 1))


def check_shape_names(sig: ServedSignature, shapes: dict[str, tuple[int, ...]]) -> None:
    unknown = sorted(set(shapes) - set(sig.inputs))
    if unknown:
        raise ValueError(f"--shape names input {', '.join(repr(u) for u in unknown)}, which signature "
                         f"'{sig.name}' of '{sig.model}' does not have (inputs: {', '.join(sorted(sig.inputs))})")


def concrete_shape(info: TensorInfo, batch: int, given: tuple[int, ...] | None) -> tuple[int, ...]:
    """The request shape of one input: the batch first (when the signature's first dim is -1), then
    --shape's dims or the signature's fixed ones."""
    shape = info.shape
    if shape is None:  # unknown rank: only --shape can say
        if given is None:
            raise ValueError(f"input '{info.name}' has unknown rank; pass --shape {info.name}:d1,d2,...")
        return (batch, *given)
    batched = bool(shape) and shape[0] == -1
    rest = shape[1:] if batched else shape
    if given is not None:
        if len(given) != len(rest) or any(s not in (-1, g) for s, g in zip(rest, given)):
            raise ValueError(f"--shape {info.name}:{','.join(map(str, given))} does not fit the signature's "
                             f"shape {list(shape)} (give the dimensions after the batch)")
        rest = given
    elif any(d == -1 for d in rest):
        raise ValueError(f"input '{info.name}' has shape {list(shape)}: pass --shape "
                         f"{info.name}:{','.join('N' if d == -1 else str(d) for d in rest)} for its free dimensions")
    return ((batch,) if batched else ()) + tuple(rest)


def random_array(dtype: str, shape: tuple[int, ...], rng: np.random.Generator, opts: InputOptions) -> np.ndarray:
    if dtype == STRING:
        letters = rng.choice(_ALPHABET, size=(*shape, opts.string_length))
        flat = [row.tobytes() for row in letters.reshape(-1, opts.string_length)]
        return np.array(flat, dtype=object).reshape(shape)
    if dtype not in NUMPY_DTYPES:
        raise ValueError(f"cannot generate data for dtype {dtype}; pass --input-data FILE")
    np_dtype = NUMPY_DTYPES[dtype]
    if np_dtype.kind == "f":
        return rng.random(shape).astype(np_dtype)
    if np_dtype.kind == "b":
        return rng.random(shape) < 0.5
    info = np.iinfo(np_dtype)
    low, high = max(opts.int_range[0], info.min), min(opts.int_range[1], info.max + 1)
    return rng.integers(low, high, size=shape).astype(np_dtype)


def random_inputs(sig: ServedSignature, batch: int, opts: InputOptions) -> dict[str, np.ndarray]:
    check_shape_names(sig, opts.shapes)
    rng = np.random.default_rng(opts.seed + 1000 * batch)
    return {name: random_array(info.dtype, concrete_shape(info, batch, opts.shapes.get(name)), rng, opts)
            for name, info in sorted(sig.inputs.items())}


def predict_request(model: str, signature: str, tensors: dict[str, np.ndarray], version: int | None = None,
                    dtypes: dict[str, str] | None = None):
    """A PredictRequest carrying each named input (its DataType from `dtypes`, else from the array's dtype)."""
    req = protos.with_model_spec(protos.get("predict_pb2").PredictRequest(), model, signature, version)
    for name, array in tensors.items():
        tensor_proto.fill_tensor_proto(req.inputs[name], array, (dtypes or {}).get(name))
    return req


def predict_request_bytes(sig: ServedSignature, tensors: dict[str, np.ndarray]) -> bytes:
    dtypes = {name: info.dtype for name, info in sig.inputs.items()}
    return predict_request(sig.model, sig.name, tensors, dtypes=dtypes).SerializeToString()


def json_value(array: np.ndarray):
    """numpy -> JSON-ready nested lists; bytes as {"b64": ...} (TF Serving's REST rule for binary data)."""
    if array.dtype == object:
        return np.vectorize(lambda b: {"b64": base64.b64encode(tensor_proto.as_bytes(b)).decode()},
                            otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def predict_rest_body(sig: ServedSignature, tensors: dict[str, np.ndarray]) -> bytes:
    body = {"signature_name": sig.name, "inputs": {name: json_value(a) for name, a in tensors.items()}}
    return json.dumps(body, separators=(",", ":")).encode()


def rest_path(model: str, method: str, version: int | None = None) -> str:
    return f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "") + f":{method}"
