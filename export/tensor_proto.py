"""TensorProto <-> numpy, the one codec the server and the load generators share.

Works on the message it is given (its descriptor names the DataType enum), so it imports neither TensorFlow
nor the protos: the server passes TensorFlow's TensorProto, the clients the one benchmarks/requests/protos.py
loads. Two encodings, both TF Serving's: requests carry numbers as raw little-endian `tensor_content` (what
`tf.make_tensor_proto` writes, and one bytes copy instead of a Python list), outputs carry them in the
dtype's typed field (`float_val`, `int_val`, ...; Tensor::AsProtoField, what TF Serving's predict_util.cc
sends), so clients reading `float_val` see what TF Serving sends. Strings are always `string_val`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from export.contract import TENSOR_DTYPES

STRING = "DT_STRING"
HALF = "DT_HALF"
NUMPY_DTYPES: dict[str, np.dtype] = {name: np.dtype(np_name) for name, (np_name, _) in TENSOR_DTYPES.items()}
_NUMPY_TO_NAME: dict[np.dtype, str] = {np_dtype: name for name, np_dtype in NUMPY_DTYPES.items()}


def _dtype_enum(proto: Any):
    return proto.DESCRIPTOR.fields_by_name["dtype"].enum_type


def dtype_name_of(proto: Any) -> str:
    """The DataType name a TensorProto (or TensorInfo) declares, e.g. DT_FLOAT."""
    value = _dtype_enum(proto).values_by_number.get(proto.dtype)
    return value.name if value is not None else f"<unknown dtype {proto.dtype}>"


def shape_of(shape_proto: Any) -> tuple[int, ...] | None:
    """A TensorShapeProto's dims (-1 = any size), or None for unknown rank."""
    return None if shape_proto.unknown_rank else tuple(int(d.size) for d in shape_proto.dim)


def fill_tensor_proto(proto: Any, array: np.ndarray, dtype: str | None = None, *, typed_fields: bool = False) -> Any:
    """Write `array` into `proto` in place: numbers as tensor_content (requests) or, with `typed_fields`, in the
    dtype's value field (outputs, as TF Serving sends them); strings (bytes or str elements) in string_val."""
    array = np.asarray(array)
    dtype = dtype or _NUMPY_TO_NAME.get(array.dtype)
    if dtype is None:  # object arrays are strings; complex, datetime, ... have no encoding here
        raise ValueError(f"dtype {array.dtype} has no TensorProto encoding here")
    proto.dtype = _dtype_enum(proto).values_by_name[dtype].number
    dims = proto.tensor_shape.dim
    for d in array.shape:
        dims.add(size=int(d))
    flat = array.reshape(-1)
    if dtype == STRING:
        proto.string_val.extend(as_bytes(v) for v in flat)
    elif not typed_fields:
        proto.tensor_content = np.ascontiguousarray(flat, dtype=NUMPY_DTYPES[dtype].newbyteorder("<")).tobytes()
    else:
        flat = flat.astype(NUMPY_DTYPES[dtype], copy=False)
        getattr(proto, TENSOR_DTYPES[dtype][1]).extend((flat.view(np.uint16) if dtype == HALF else flat).tolist())
    return proto


def decode_values(proto: Any, dtype: str, dims: tuple[int, ...], what: str = "tensor") -> np.ndarray:
    """The values of a TensorProto already checked to declare `dtype` and `dims`: from tensor_content, the typed
    field, or one typed value filling the whole shape (TensorFlow's rule). ValueError when they do not fit."""
    count = math.prod(dims)
    np_dtype = NUMPY_DTYPES[dtype]
    if dtype == STRING:
        values, field = list(proto.string_val), "string_val"
    elif proto.tensor_content:
        if len(proto.tensor_content) != count * np_dtype.itemsize:
            raise ValueError(f"{what}: tensor_content has {len(proto.tensor_content)} bytes but shape "
                             f"{shape_str(dims)} of {dtype} needs {count * np_dtype.itemsize}")
        return np.frombuffer(proto.tensor_content, dtype=np_dtype.newbyteorder("<")).reshape(dims)
    else:
        field = TENSOR_DTYPES[dtype][1]
        raw = getattr(proto, field)
        values = np.asarray(raw, dtype=np.uint16).view(np.float16) if dtype == HALF else np.asarray(raw, np_dtype)
    if len(values) == count:
        return np.asarray(values, dtype=np_dtype).reshape(dims)
    if len(values) == 1 and count > 0:
        return np.full(dims, values[0], dtype=np_dtype)
    raise ValueError(f"{what} declares shape {shape_str(dims)} ({count} elements) but carries {len(values)} values "
                     f"in {field}")


def to_ndarray(proto: Any) -> np.ndarray:
    """A trusted TensorProto (a server's answer, a request we built) -> numpy."""
    dtype = dtype_name_of(proto)
    if dtype not in NUMPY_DTYPES:
        raise ValueError(f"cannot decode a tensor of dtype {dtype}")
    return decode_values(proto, dtype, tuple(int(d.size) for d in proto.tensor_shape.dim))


def as_bytes(value: Any) -> bytes:
    """A string element as the bytes string_val (and tf.Example's bytes_list) carry."""
    return value if isinstance(value, bytes) else str(value).encode()


def shape_str(shape: tuple[int, ...] | list[int] | None) -> str:
    return "[?]" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"
