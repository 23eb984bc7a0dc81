"""Classify / Regress requests: rows as tf.Example protos, for signatures of those methods.

A classify or regress signature takes serialized tf.Examples (one DT_STRING input); the features the
model parses are inside its graph, not in the metadata, so they come from --input-data or from
`--feature NAME:float|int64|bytes[:LENGTH]` (seeded random values). Features are column arrays
[batch, length]: float -> float_list, integers and booleans -> int64_list, bytes -> bytes_list. gRPC
gets a ClassificationRequest/RegressionRequest with `input.example_list`; REST gets TF Serving's
`{"examples": [{feature: value}, ...]}` with bytes as {"b64": ...}.
"""
from __future__ import annotations

import json

import numpy as np

from benchmarks.requests import protos
from benchmarks.requests.signature import ServedSignature
from benchmarks.requests.tensors import InputOptions, json_value, random_array
from export.tensor_proto import as_bytes


def random_features(batch: int, opts: InputOptions) -> dict[str, np.ndarray]:
    if not opts.features:
        raise ValueError("a classify/regress signature takes tf.Examples whose features the metadata does not "
                         "name: pass --feature NAME:float|int64|bytes[:LENGTH] (repeat) or --input-data FILE")
    rng = np.random.default_rng(opts.seed + 1000 * batch)
    return {name: random_array(dtype, (batch, length), rng, opts) for name, (dtype, length) in sorted(opts.features.items())}


def _rows(features: dict[str, np.ndarray]) -> int:
    sizes = {len(a) for a in features.values()}
    if len(sizes) != 1:
        raise ValueError(f"every feature needs the same number of rows, got {sorted(sizes)}")
    return sizes.pop()


def fill_example(example, row: dict[str, np.ndarray]) -> None:
    for name, values in row.items():
        flat = np.asarray(values).reshape(-1)
        feature = example.features.feature[name]
        if flat.dtype == object or flat.dtype.kind in "SU":
            feature.bytes_list.value.extend(as_bytes(v) for v in flat)
        elif flat.dtype.kind == "f":
            feature.float_list.value.extend(flat.astype(np.float32).tolist())
        else:
            feature.int64_list.value.extend(flat.astype(np.int64).tolist())


def example_request_bytes(sig: ServedSignature, method: str, features: dict[str, np.ndarray],
                          version: int | None = None) -> bytes:
    cls = (protos.get("classification_pb2").ClassificationRequest if method == "classify"
           else protos.get("regression_pb2").RegressionRequest)
    req = protos.with_model_spec(cls(), sig.model, sig.name, version)
    for i in range(_rows(features)):
        fill_example(req.input.example_list.examples.add(), {k: v[i] for k, v in features.items()})
    return req.SerializeToString()


def example_rest_body(sig: ServedSignature, features: dict[str, np.ndarray]) -> bytes:
    columns = {name: json_value(np.asarray(a)) for name, a in features.items()}
    examples = [{name: col[i] for name, col in columns.items()} for i in range(_rows(features))]
    return json.dumps({"signature_name": sig.name, "examples": examples}, separators=(",", ":")).encode()
