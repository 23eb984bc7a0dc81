"""The one TensorProto codec (export/tensor_proto.py): every dtype the contract lists round-trips exactly in both
encodings, outputs use the typed fields TF Serving sends, and a proto whose values do not fill its shape is refused."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.requests import protos
from export import tensor_proto
from export.contract import TENSOR_DTYPES


def _tensor():
    return protos.get("tensor_pb2").TensorProto()


def _exact_values(dtype: str) -> np.ndarray:
    """Values that test the edges of each dtype: extremes, negative zero / fractions, non-ASCII bytes."""
    if dtype == "DT_STRING":
        return np.array([[b"", b"a"], [b"\x00\xff", "é".encode()], [b"x" * 40, b"\n"]], dtype=object)
    np_dtype = tensor_proto.NUMPY_DTYPES[dtype]
    if np_dtype.kind == "b":
        return np.array([[True, False], [False, True], [True, True]])
    if np_dtype.kind == "f":
        info = np.finfo(np_dtype)
        return np.array([[0.0, -0.0], [info.max, info.min], [info.tiny, 1 / 3]], dtype=np_dtype)
    info = np.iinfo(np_dtype)
    return np.array([[0, 1], [info.max, info.min], [info.max - 1, 7]], dtype=np_dtype)


@pytest.mark.parametrize("typed_fields", [False, True], ids=["tensor_content", "typed_fields"])
@pytest.mark.parametrize("dtype", sorted(TENSOR_DTYPES))
def test_every_dtype_round_trips_exactly(dtype, typed_fields):
    x = _exact_values(dtype)
    proto = protos.get("tensor_pb2").TensorProto.FromString(
        tensor_proto.fill_tensor_proto(_tensor(), x, dtype, typed_fields=typed_fields).SerializeToString())
    assert tensor_proto.dtype_name_of(proto) == dtype
    assert [d.size for d in proto.tensor_shape.dim] == [3, 2]
    y = tensor_proto.to_ndarray(proto)
    assert y.dtype == x.dtype and y.shape == x.shape
    if dtype == "DT_STRING":
        assert y.tolist() == x.tolist() and proto.string_val and not proto.tensor_content
    else:
        np.testing.assert_array_equal(y.view(np.uint8), x.view(np.uint8))  # bit for bit: -0.0, extremes
        assert bool(proto.tensor_content) != typed_fields


def test_outputs_use_the_field_tf_serving_fills():
    proto = tensor_proto.fill_tensor_proto(_tensor(), np.array([1.5, 2.5], np.float32), typed_fields=True)
    assert list(proto.float_val) == [1.5, 2.5] and not proto.tensor_content
    half = tensor_proto.fill_tensor_proto(_tensor(), np.array([1.0], np.float16), typed_fields=True)
    assert list(half.half_val) == [np.float16(1.0).view(np.uint16)]  # the raw 16-bit pattern, as TensorFlow
    ints = tensor_proto.fill_tensor_proto(_tensor(), np.array([-3], np.int8), typed_fields=True)
    assert list(ints.int_val) == [-3]


def test_one_value_fills_the_shape_and_a_wrong_count_is_refused():
    proto = _tensor()
    proto.dtype = protos.get("types_pb2").DT_INT32
    for d in (2, 3):
        proto.tensor_shape.dim.add().size = d
    proto.int_val.append(7)
    np.testing.assert_array_equal(tensor_proto.to_ndarray(proto), np.full((2, 3), 7, np.int32))
    proto.int_val.append(8)
    with pytest.raises(ValueError, match=r"declares shape \[2,3\] \(6 elements\) but carries 2 values in int_val"):
        tensor_proto.to_ndarray(proto)
    proto.tensor_content = b"\x00" * 5
    with pytest.raises(ValueError, match="tensor_content has 5 bytes but shape .* needs 24"):
        tensor_proto.to_ndarray(proto)


def test_signature_tensors_and_unknown_dtypes():
    sig_map = protos.get("get_model_metadata_pb2").SignatureDefMap()
    infos = sig_map.signature_def["s"].inputs
    infos["x"].dtype = protos.get("types_pb2").DT_HALF
    infos["x"].tensor_shape.dim.add().size = -1
    infos["r"].dtype = protos.get("types_pb2").DT_STRING
    infos["r"].tensor_shape.unknown_rank = True
    assert {k: (tensor_proto.dtype_name_of(i), tensor_proto.shape_of(i.tensor_shape)) for k, i in infos.items()} == {
        "x": ("DT_HALF", (-1,)), "r": ("DT_STRING", None)}
    with pytest.raises(ValueError, match="complex64"):
        tensor_proto.fill_tensor_proto(_tensor(), np.zeros(2, np.complex64))
    proto = _tensor()
    proto.dtype = protos.get("types_pb2").DT_COMPLEX64
    with pytest.raises(ValueError, match="DT_COMPLEX64"):
        tensor_proto.to_ndarray(proto)
