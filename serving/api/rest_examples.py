"""REST :classify / :regress bodies <-> tensorflow.serving.Input and results, as TF Serving reads and writes them.

Request (util/json_tensor.cc, FillClassifyRegressRequestFromJson): {"signature_name": opt, "context": {feature:
value|list} (opt), "examples": [{feature: value|list}, ...]}. Each feature becomes a tf.Example feature by the
JSON type of its values: whole numbers and true/false -> int64_list, decimals -> float_list, strings and
{"b64": ...} -> bytes_list; one feature's values must share one kind. With a context the examples go to
`example_list_with_context` (the context is prepended to every example), otherwise to `example_list`.
Response: {"results": [[[label, score], ...], ...]} for classify, {"results": [value, ...]} for regress.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.errors import invalid_argument
from serving.tensors import decode_b64

CONTEXT_KEY, EXAMPLES_KEY, RESULTS_KEY = "context", "examples", "results"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_KIND_NAMES = {"int64_list": "int64", "float_list": "float", "bytes_list": "bytes"}


def _json_type(value: Any) -> str:
    return {type(None): "NULL", bool: "BOOL", dict: "OBJECT", list: "ARRAY", str: "STRING"}.get(
        type(value), "NUMBER")


def _value_kind(value: Any, feature: str) -> tuple[str, Any]:
    """One JSON value -> (tf.Example list kind, value to append)."""
    if isinstance(value, bool):
        return "int64_list", int(value)
    if isinstance(value, str):
        return "bytes_list", value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"}:
        return "bytes_list", decode_b64(value, f"Feature: {feature}")
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise invalid_argument(f"Feature: {feature}: cannot convert {value} to float without loss of precision")
        return "float_list", value
    if isinstance(value, int):
        if value > _INT64_MAX:
            raise invalid_argument(f"Feature: {feature} has uint64 element. Only int64 is supported.")
        if value < _INT64_MIN:
            raise invalid_argument(f"Feature: {feature} has an integer below the int64 range: {value}")
        return "int64_list", value
    raise invalid_argument(f"Feature: {feature} has element with unexpected JSON type: {_json_type(value)}")


def _fill_feature(feature: feature_pb2.Feature, name: str, content: Any) -> None:
    values = content if isinstance(content, list) else [content]
    kind = None
    collected = []
    for value in values:
        value_kind, converted = _value_kind(value, name)
        if kind is not None and value_kind != kind:
            raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}")
        kind = value_kind
        collected.append(converted)
    if kind is not None:
        getattr(feature, kind).value.extend(collected)


def example_from_json(obj: Any, example: example_pb2.Example) -> None:
    if not isinstance(obj, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(obj)}")
    for name, content in obj.items():
        _fill_feature(example.features.feature[name], name, content)


def input_from_json(doc: dict[str, Any], verb: str) -> input_pb2.Input:
    """The tensorflow.serving.Input a classify/regress body stands for."""
    request_input = input_pb2.Input()
    has_context = CONTEXT_KEY in doc
    if has_context:
        example_from_json(doc[CONTEXT_KEY], request_input.example_list_with_context.context)
    if EXAMPLES_KEY not in doc:
        raise invalid_argument(f"When method is {verb}, key '{EXAMPLES_KEY}' is expected and was not found")
    examples = doc[EXAMPLES_KEY]
    if not isinstance(examples, list):
        raise invalid_argument(f"Expecting '{EXAMPLES_KEY}' value to be an list/array")
    if not examples:
        raise invalid_argument(f"'{EXAMPLES_KEY}' value is an empty array")
    target = request_input.example_list_with_context if has_context else request_input.example_list
    for obj in examples:
        example_from_json(obj, target.examples.add())
    return request_input


def classification_json(result: classification_pb2.ClassificationResult) -> dict[str, Any]:
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    return {RESULTS_KEY: [[[c.label, c.score] for c in item.classes] for item in result.classifications]}


def regression_json(result: regression_pb2.RegressionResult) -> dict[str, Any]:
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return {RESULTS_KEY: [r.value for r in result.regressions]}
