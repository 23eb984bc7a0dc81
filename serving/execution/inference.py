"""Classify, Regress and MultiInference over a loaded version, with TF Serving's checks and wording
(servables/tensorflow: classifier.cc, regressor.cc, multi_inference.cc, util.cc).

A request's `tensorflow.serving.Input` becomes one DT_STRING tensor of serialized tf.Example protos (with a
context, its bytes are prepended to every example's, which protobuf parses as a merge: the example's own
features win), fed to the signature's single input `inputs`. The outputs become a ClassificationResult
(`classes` [batch, n] strings and/or `scores` [batch, n] floats) or a RegressionResult (`outputs` [batch] or
[batch, 1] floats).

Which signatures qualify: TF Serving (--enable_signature_method_name_check off, its default) accepts any
signature shaped like a classify/regress one, which is how native TF2 models serve them (tf.saved_model.save
writes method_name tensorflow/serving/predict for every signature). So here a signature whose method_name is
the API's is checked for that shape; one of another method is served only when it has that shape, and is
otherwise refused with TF Serving's method-name message ("Expected classification signature method_name to
be tensorflow/serving/classify. Was: ...").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from export.contract import CLASSIFY_METHOD_NAME, DEFAULT_SIGNATURE, REGRESS_METHOD_NAME
from serving.errors import invalid_argument, unimplemented
from serving.lifecycle.model_manager import ServableVersion
from serving.tensors import SignatureSpec, dtype_name

INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"
_KIND_WORD = {CLASSIFY_METHOD_NAME: "classification", REGRESS_METHOD_NAME: "regression"}


@dataclass(frozen=True)
class InferenceTask:
    """One classify or regress evaluation: the API's method name and the signature that answers it."""

    method: str
    sig: SignatureSpec

    @property
    def input_name(self) -> str:
        return INPUTS


def _signature_text(sv: ServableVersion, name: str) -> str:
    return str(sv.runner.signature_defs[name]).strip().replace("\n", " ")


def _shape_problem(method: str, sig: SignatureSpec, sv: ServableVersion) -> str | None:
    """What keeps `sig` from being a classify/regress signature (PreProcessClassification/Regression)."""
    if len(sig.inputs) != 1:
        return "Expected one input Tensor."
    classify = method == CLASSIFY_METHOD_NAME
    if classify and len(sig.outputs) not in (1, 2):
        return f"Expected one or two output Tensors, found {len(sig.outputs)}"
    if not classify and len(sig.outputs) != 1:
        return "Expected one output Tensor."
    word = _KIND_WORD[method]
    if INPUTS not in sig.inputs:
        return f"No {word} inputs found in SignatureDef: {_signature_text(sv, sig.name)}"
    if classify and CLASSES not in sig.outputs and SCORES not in sig.outputs:
        return ('Expected classification signature outputs to contain at least one of "classes" or "scores". '
                f"Signature was: {_signature_text(sv, sig.name)}")
    if not classify and OUTPUTS not in sig.outputs:
        return f"No regression outputs found in SignatureDef: {_signature_text(sv, sig.name)}"
    if not sig.inputs[INPUTS].is_string:
        return (f"input '{INPUTS}' of signature '{sig.name}' is {dtype_name(sig.inputs[INPUTS].dtype_enum)}; "
                f"{word} feeds it serialized tf.Example protos (DT_STRING)")
    return None


def resolve_task(sv: ServableVersion, method: str, signature_name: str,
                 not_found: str = "No signature was found with the name: ") -> InferenceTask:
    key = signature_name or DEFAULT_SIGNATURE
    sig = sv.runner.signatures.get(key)
    if sig is None:
        raise invalid_argument(f"{not_found}{key}")
    problem = _shape_problem(method, sig, sv)
    if problem and sig.method_name != method:
        raise invalid_argument(f"Expected {_KIND_WORD[method]} signature method_name to be {method}. "
                               f"Was: {sig.method_name}")
    if problem:
        raise invalid_argument(problem)
    return InferenceTask(method, sig)


def examples_tensor(request_input: Any) -> np.ndarray:
    """The serialized tf.Example protos of a tensorflow.serving.Input, as a [n] object array of bytes."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        context = with_context.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in with_context.examples]
    else:
        serialized = []
    if not serialized:
        raise invalid_argument("Input is empty.")
    out = np.empty(len(serialized), dtype=object)
    out[:] = serialized
    return out


def _matrix(outputs: dict[str, np.ndarray], name: str, dtype: int, n: int) -> np.ndarray | None:
    """A classify output checked as PostProcessClassificationResult does: [batch, classes] of `dtype`."""
    if name not in outputs:
        return None
    arr = outputs[name]
    if arr.ndim != 2:
        raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {list(arr.shape)}")
    want = np.float32 if dtype == types_pb2.DT_FLOAT else object
    if arr.dtype != want:
        raise invalid_argument(f"Expected {name} Tensor of {dtype_name(dtype)}. Got: {arr.dtype}")
    if arr.shape[0] != n:
        raise invalid_argument(f"Expected {name} output batch size of {n}. Got: {arr.shape[0]}")
    return arr


def fill_classification(outputs: dict[str, np.ndarray], n: int, result: Any) -> None:
    classes = _matrix(outputs, CLASSES, types_pb2.DT_STRING, n)
    scores = _matrix(outputs, SCORES, types_pb2.DT_FLOAT, n)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument("Tensors class and score should match in dim_size(1). "
                               f"Got {classes.shape[1]} vs. {scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    labels = classes.tolist() if classes is not None else None
    values = scores.tolist() if scores is not None else None
    for i in range(n):
        row = result.classifications.add()
        for c in range(width):
            entry = row.classes.add()
            if labels is not None:
                # Class.label is a proto string: bytes that are not UTF-8 get U+FFFD (C++ would copy them raw).
                entry.label = labels[i][c].decode("utf-8", "replace")
            if values is not None:
                entry.score = values[i][c]


def fill_regression(outputs: dict[str, np.ndarray], n: int, result: Any) -> None:
    arr = outputs[OUTPUTS]
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
        raise invalid_argument("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                               f"but got {list(arr.shape)}")
    if arr.shape[0] != n:
        raise invalid_argument(f"Input batch size did not match output batch size: {n} vs. {arr.shape[0]}")
    if arr.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {arr.dtype}")
    for value in arr.ravel().tolist():
        result.regressions.add(value=value)


def fill_result(task: InferenceTask, outputs: dict[str, np.ndarray], n: int, result: Any) -> None:
    """ClassificationResult or RegressionResult from the signature's outputs."""
    (fill_classification if task.method == CLASSIFY_METHOD_NAME else fill_regression)(outputs, n, result)


def fill_model_spec(model_spec: Any, name: str, signature_name: str, version: int) -> None:
    """As TF Serving's MakeModelSpec: an empty signature name is reported as serving_default."""
    model_spec.name = name
    model_spec.signature_name = signature_name or DEFAULT_SIGNATURE
    model_spec.version.value = version


def multi_inference_tasks(sv: ServableVersion, request: Any) -> list[InferenceTask]:
    """The tasks of a MultiInferenceRequest, checked as TensorFlowMultiInferenceRunner::Infer does (`sv` is
    the version the first task's model spec names). The same examples feed every task's signature (as TF
    Serving feeds one tensor to each signature's input)."""
    if not request.tasks:
        raise invalid_argument("MultiInferenceRequest has no tasks")
    seen: set[str] = set()
    tasks = []
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if task.model_spec.name != request.tasks[0].model_spec.name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        key = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        if task.method_name not in _KIND_WORD:
            raise unimplemented(f"Unsupported signature method_name: {task.method_name}")
        tasks.append(resolve_task(sv, task.method_name, key, "Requested signature not found in model graph: "))
    return tasks
