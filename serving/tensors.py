"""Tensors in and out: TensorProto and TF Serving's REST JSON <-> numpy, validated against the signature.

Everything a client sends is checked *before* memory is allocated from it: a TensorProto's declared shape
is compared with the number of values it actually carries and with the signature, and the element count is
capped, so a request claiming shape [10**12, 10] costs nothing. Messages name the input, the signature and
the problem, like TF Serving's (tensorflow_serving/util/json_tensor.cc, servables/tensorflow/predict_util.cc).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from export import tensor_proto
from export.tensor_proto import shape_str
from serving.errors import invalid_argument, unimplemented



def dtype_name(enum: int) -> str:
    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"<unknown dtype {enum}>"


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: its dtype and shape (-1 = any size; None = unknown rank)."""

    name: str
    dtype_enum: int
    shape: tuple[int, ...] | None

    @property
    def is_string(self) -> bool:
        return self.dtype_enum == types_pb2.DT_STRING

    @property
    def np_dtype(self) -> np.dtype:
        if dtype_name(self.dtype_enum) not in tensor_proto.NUMPY_DTYPES:
            raise unimplemented(f"tensor '{self.name}' has dtype {dtype_name(self.dtype_enum)}, "
                                "which this server does not convert (numeric, bool and string tensors only)")
        return tensor_proto.NUMPY_DTYPES[dtype_name(self.dtype_enum)]


@dataclass(frozen=True)
class SignatureSpec:
    """A signature's inputs and outputs, its method name, and whether requests are checked against the
    declared shapes. `strict_shapes` is True for TF2 functions, whose call refuses any other shape anyway, so
    checking first gives the same answer before anything runs; False for TF1 graphs, which (like TF Serving's
    Session::Run) take any shape the graph's ops accept: x declared [-1,1] may be sent as [3]."""

    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str = "tensorflow/serving/predict"
    strict_shapes: bool = True


def signature_spec(name: str, signature_def: Any, strict_shapes: bool = True) -> SignatureSpec:
    """SignatureSpec from a tensorflow.SignatureDef proto."""
    def specs(infos: Any) -> dict[str, TensorSpec]:
        return {k: TensorSpec(k, v.dtype, tensor_proto.shape_of(v.tensor_shape)) for k, v in infos.items()}

    return SignatureSpec(name, specs(signature_def.inputs), specs(signature_def.outputs),
                         signature_def.method_name, strict_shapes)


# --------------------------------------------------------------------------------------------------------
# Checks shared by gRPC and REST
# --------------------------------------------------------------------------------------------------------

def check_input_names(sent: set[str] | list[str], sig: SignatureSpec) -> None:
    sent_set, expected = set(sent), set(sig.inputs)
    if not sent_set:
        raise invalid_argument(f"request has no inputs; signature '{sig.name}' expects: {', '.join(sorted(expected))}")
    if sent_set != expected:
        extra, missing = sorted(sent_set - expected), sorted(expected - sent_set)
        raise invalid_argument(
            f"input names do not match signature '{sig.name}': "
            f"sent {{{', '.join(sorted(sent_set))}}}, expected {{{', '.join(sorted(expected))}}}. "
            f"Sent extra: {{{', '.join(extra)}}}. Missing but required: {{{', '.join(missing)}}}."
        )


def check_shape(name: str, shape: tuple[int, ...], spec: TensorSpec, sig_name: str) -> None:
    """Compare a concrete shape with the signature's (rank and every fixed dimension); refuse empty batches."""
    if spec.shape is not None:
        ok = len(shape) == len(spec.shape) and all(e < 0 or e == d for d, e in zip(shape, spec.shape))
        if not ok:
            raise invalid_argument(
                f"input '{name}' has shape {shape_str(shape)} but signature '{sig_name}' expects "
                f"{shape_str(spec.shape)} (-1 = any size)"
            )
    if shape and shape[0] == 0:
        raise invalid_argument(f"input '{name}' has an empty batch (dimension 0 is 0): send at least one row")


def batch_size_of(inputs: dict[str, np.ndarray]) -> int:
    """Rows in a request whose inputs all share dimension 0 (what batching and the REST row format need)."""
    sizes = {name: (arr.shape[0] if arr.ndim else None) for name, arr in inputs.items()}
    distinct = set(sizes.values())
    if None in distinct:
        raise invalid_argument("batching needs every input to have a batch dimension; scalar inputs: "
                               + ", ".join(n for n, s in sizes.items() if s is None))
    if len(distinct) != 1:
        raise invalid_argument("inputs disagree on dimension 0 (batch size): "
                               + ", ".join(f"{n}={s}" for n, s in sorted(sizes.items())))
    return distinct.pop()


# --------------------------------------------------------------------------------------------------------
# TensorProto <-> numpy
# --------------------------------------------------------------------------------------------------------

def tensor_proto_to_ndarray(proto: tensor_pb2.TensorProto, spec: TensorSpec, sig_name: str,
                            max_elements: int, strict_shapes: bool = True) -> np.ndarray:
    """Decode one request TensorProto, refusing anything that does not match its own shape, the signature's
    dtype, or (`strict_shapes`) the signature's shape.

    Never calls tf.make_ndarray on untrusted input: that would allocate prod(shape) elements (broadcasting a
    single value) before noticing anything is wrong.
    """
    name = spec.name
    if proto.dtype != spec.dtype_enum:
        raise invalid_argument(
            f"input '{name}' has dtype {dtype_name(proto.dtype)} but signature '{sig_name}' expects "
            f"{dtype_name(spec.dtype_enum)}"
        )
    if dtype_name(proto.dtype) not in tensor_proto.NUMPY_DTYPES:
        raise unimplemented(f"input '{name}': dtype {dtype_name(proto.dtype)} is not supported by this server")
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"input '{name}' has unknown rank: the TensorProto must give its shape")
    dims = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in dims):
        raise invalid_argument(f"input '{name}' declares a negative dimension in shape {shape_str(dims)}")
    count = math.prod(dims)  # Python ints: no overflow, whatever the client claims
    if count > max_elements:
        raise invalid_argument(
            f"input '{name}' declares shape {shape_str(dims)} = {count} elements, more than the server's "
            f"limit of {max_elements} (--max-tensor-elements)"
        )
    if strict_shapes:
        check_shape(name, dims, spec, sig_name)
    try:
        return tensor_proto.decode_values(proto, dtype_name(proto.dtype), dims, f"input '{name}'")
    except ValueError as exc:
        raise invalid_argument(str(exc)) from None


def fill_tensor_proto(proto: tensor_pb2.TensorProto, array: np.ndarray) -> tensor_pb2.TensorProto:
    """Write an output as TF Serving does: values in the dtype's typed field, not tensor_content."""
    try:
        return tensor_proto.fill_tensor_proto(proto, array, typed_fields=True)
    except ValueError:
        raise unimplemented(f"output dtype {np.asarray(array).dtype} cannot be encoded by this server") from None


def ndarray_to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    return fill_tensor_proto(tensor_pb2.TensorProto(), array)


# --------------------------------------------------------------------------------------------------------
# REST JSON (g3doc/api_rest.md)
# --------------------------------------------------------------------------------------------------------

ROW, COLUMNAR = "row", "columnar"


def parse_json_body(body: bytes) -> dict[str, Any]:
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        # Python's json accepts NaN / Infinity / -Infinity, as TF Serving's REST API does.
        doc = json.loads(body)
    except RecursionError:  # e.g. "[" * 100000: a client error, never a 500
        raise invalid_argument("JSON Parse error: nesting too deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid_argument(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_preview(doc)} Is not object")
    return doc


def signature_name_of(doc: dict[str, Any]) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument("'signature_name' key must be a string value")
    return name


def _preview(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def json_value_to_ndarray(value: Any, spec: TensorSpec, sig_name: str, max_elements: int, what: str,
                          may_hold_bools: bool = True) -> np.ndarray:
    """One (nested-list) JSON value -> numpy array of the signature dtype, with TF Serving's type rules.

    numpy does the heavy lifting (fast for big bodies); its inferred dtype tells us whether the JSON was all
    numbers: strings, null, objects, mixed nesting ("ragged") all end up non-numeric or raise.
    """
    target = spec.np_dtype
    if spec.is_string:
        return json_strings_to_ndarray(value, max_elements, what)
    try:
        arr = np.array(value)
    except (ValueError, OverflowError) as exc:
        raise invalid_argument(f"{what}: ragged or inconsistent nested lists ({exc}); every row must have the same shape") from None
    if arr.size > max_elements:
        raise invalid_argument(f"{what}: {arr.size} elements exceed the server's limit of {max_elements}")
    kind = arr.dtype.kind
    if target.kind == "b":
        if kind != "b":
            raise invalid_argument(f"{what}: JSON values must be true/false for {dtype_name(spec.dtype_enum)}")
    elif kind == "b" or kind not in "iuf":
        if kind == "O":
            raise invalid_argument(f"{what}: ragged nested lists or non-numeric values (null/objects) "
                                   f"where {dtype_name(spec.dtype_enum)} numbers are expected")
        raise invalid_argument(f"{what}: JSON value {_preview(value)} is not of expected type: "
                               f"{dtype_name(spec.dtype_enum)} (numbers only)")
    elif may_hold_bools and _holds_bool(arr, value):
        # numpy silently reads true/false as 1/0 when they are mixed with numbers; TF Serving refuses them.
        raise invalid_argument(f"{what}: JSON value true/false is not of expected type: {dtype_name(spec.dtype_enum)}")
    elif target.kind in "iu" and kind == "f":
        raise invalid_argument(f"{what}: decimal numbers where integers ({dtype_name(spec.dtype_enum)}) are expected")
    if target.kind == "f" and kind == "f" and target.itemsize < arr.dtype.itemsize:
        finite = np.isfinite(arr)
        if np.any(np.abs(arr[finite]) > np.finfo(target).max):
            raise invalid_argument(f"{what}: a value is out of range for {dtype_name(spec.dtype_enum)} "
                                   "(cannot convert without loss of precision)")
    if target.kind in "iu":
        info = np.iinfo(target)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise invalid_argument(f"{what}: a value is out of range for {dtype_name(spec.dtype_enum)}")
    return arr.astype(target, copy=False)


def decode_b64(obj: dict[str, Any], what: str) -> bytes:
    """REST's binary form {"b64": "<base64>"} -> bytes."""
    if set(obj) != {"b64"} or not isinstance(obj["b64"], str):
        raise invalid_argument(f"{what}: JSON object {_preview(obj)} is not of the form {{\"b64\": \"<base64>\"}}")
    try:
        return base64.b64decode(obj["b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_argument(f"{what}: Unable to base64 decode: {exc}") from None


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def json_strings_to_ndarray(value: Any, max_elements: int, what: str) -> np.ndarray:
    """Nested JSON lists of strings / {"b64": ...} -> an object array of bytes, rows checked to be regular.

    Walks the value once, counting elements as it goes, so a huge or ragged body is refused early."""
    flat: list[bytes] = []

    def walk(v: Any) -> tuple[int, ...]:
        if isinstance(v, list):
            shapes = {walk(item) for item in v}
            if len(shapes) > 1:
                raise invalid_argument(f"{what}: ragged or inconsistent nested lists; "
                                       "every row must have the same shape")
            return (len(v),) + (shapes.pop() if shapes else ())
        if isinstance(v, str):
            flat.append(v.encode("utf-8"))
        elif _is_b64(v):
            flat.append(decode_b64(v, what))
        else:
            raise invalid_argument(f"{what}: JSON value {_preview(v)} is not of expected type: DT_STRING "
                                   "(strings or {\"b64\": ...} objects)")
        if len(flat) > max_elements:
            raise invalid_argument(f"{what}: more than the server's limit of {max_elements} elements")
        return ()

    try:
        shape = walk(value)
    except RecursionError:
        raise invalid_argument(f"{what}: nesting too deep") from None
    arr = np.empty(len(flat), dtype=object)
    arr[:] = flat
    return arr.reshape(shape)


def _holds_bool(arr: np.ndarray, value: Any) -> bool:
    if arr.ndim == 0:
        return isinstance(value, bool)
    return any(isinstance(v, bool) for v in np.array(value, dtype=object).ravel())


def parse_predict_inputs(doc: dict[str, Any], sig: SignatureSpec, max_elements: int,
                         may_hold_bools: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """The inputs of a REST predict body in row ("instances") or columnar ("inputs") format, and which format.

    `may_hold_bools=False` (the raw body has no true/false token) skips the per-element bool scan."""
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument("Not formatted correctly: expecting only one of 'inputs' or 'instances' keys to exist")
    if not has_instances and not has_inputs:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    names = list(sig.inputs)
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument("Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument("No values in 'instances' array")
        first_is_obj = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if len(names) > 1 and not first_is_obj:
            raise invalid_argument("instances is a plain list, but expecting list of objects as multiple input "
                                   f"tensors required as per signature '{sig.name}': {', '.join(sorted(names))}")
        if first_is_obj:
            columns: dict[str, list[Any]] = {n: [] for n in names}
            for i, item in enumerate(instances):
                if not isinstance(item, dict):
                    raise invalid_argument(f"Expecting object but got {type(item).__name__} at item {i} of 'instances'")
                if set(item) != set(names):
                    check_input_names(list(item), sig)  # raises with the extra/missing breakdown
                for n in names:
                    columns[n].append(item[n])
            raw = columns
        else:
            if any(isinstance(item, dict) and not _is_b64(item) for item in instances):
                raise invalid_argument("Expecting value/list but got object in 'instances' list")
            raw = {names[0]: instances}
        fmt = ROW
    else:
        value = doc["inputs"]
        if isinstance(value, dict) and not _is_b64(value):
            check_input_names(list(value), sig)
            raw = value
        else:
            if len(names) > 1:
                raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple input "
                                       f"tensors required as per signature '{sig.name}': {', '.join(sorted(names))}")
            raw = {names[0]: value}
        fmt = COLUMNAR
    arrays: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        spec = sig.inputs[name]
        arr = json_value_to_ndarray(value, spec, sig.name, max_elements, f"input '{name}'", may_hold_bools)
        if sig.strict_shapes:
            check_shape(name, arr.shape, spec, sig.name)
        arrays[name] = arr
    return arrays, fmt


BYTES_SUFFIX = "_bytes"  # TF Serving writes DT_STRING outputs named *_bytes as {"b64": ...} (json_tensor.cc)


def _to_json_value(arr: np.ndarray, name: str) -> Any:
    if arr.dtype != object:
        return arr.tolist()
    as_b64 = name.endswith(BYTES_SUFFIX)

    def one(v: bytes) -> Any:
        if not as_b64:
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                pass  # TF Serving would write invalid JSON here; a b64 object keeps the body parseable
        return {"b64": base64.b64encode(v).decode("ascii")}

    return np.frompyfunc(one, 1, 1)(arr).tolist() if arr.ndim else one(arr.item())


def format_predict_outputs(outputs: dict[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """TF Serving's response shapes: {"predictions": ...} for rows, {"outputs": ...} for columnar; a single
    output drops its name, several become per-row objects (row) or a name -> tensor object (columnar)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            return {"outputs": _to_json_value(outputs[names[0]], names[0])}
        return {"outputs": {n: _to_json_value(outputs[n], n) for n in names}}
    batch = None
    for n in names:
        arr = outputs[n]
        if arr.ndim == 0:
            raise invalid_argument(f"Tensor name: {n} has no shape information")
        if batch is not None and arr.shape[0] != batch:
            raise invalid_argument(f"Tensor name: {n} has inconsistent batch size: {arr.shape[0]} expecting: {batch}")
        batch = arr.shape[0]
    if len(names) == 1:
        return {"predictions": _to_json_value(outputs[names[0]], names[0])}
    lists = {n: _to_json_value(outputs[n], n) for n in names}
    return {"predictions": [{n: lists[n][i] for n in names} for i in range(batch or 0)]}
