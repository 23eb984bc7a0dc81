"""In-process checks of the server's building blocks (no TF model, no sockets): fast and precise.

tensor validation, the batch scheduler (padding, splitting, full queue) and the model manager's version
policy / refusal / refcounting, each driven directly.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from export import tensor_proto as codec
from export.contract import TENSOR_DTYPES

from serving.execution.batching import SharedBatchScheduler
from serving.errors import ServingError, http_status_for
from serving.lifecycle.model_manager import ModelManager, ModelSource, ServableVersion
from serving.metrics import ServingMetrics
from tests.server_fixture import tensor_proto
from serving.tensors import (
    ROW,
    SignatureSpec,
    TensorSpec,
    format_predict_outputs,
    ndarray_to_tensor_proto,
    parse_json_body,
    parse_predict_inputs,
    tensor_proto_to_ndarray,
)

SPEC = TensorSpec("inputs", types_pb2.DT_FLOAT, (-1, 3))
SIG = SignatureSpec("serving_default", {"inputs": SPEC}, {"predictions": TensorSpec("predictions", types_pb2.DT_FLOAT, (-1, 1))})


# ------------------------------------------------------------------------------------------------ errors
def test_http_mapping_is_tf_servings() -> None:
    expected = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "NOT_FOUND": 404,
                "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
                "INTERNAL": 500, "CANCELLED": 499}
    assert {k: http_status_for(getattr(grpc.StatusCode, k)) for k in expected} == expected


# ------------------------------------------------------------------------------------------------ tensors
def test_tensor_roundtrip_and_broadcast() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(tensor_proto_to_ndarray(ndarray_to_tensor_proto(x), SPEC, "s", 100), x)
    np.testing.assert_array_equal(tensor_proto_to_ndarray(tensor_proto([2, 3], values=x.ravel()), SPEC, "s", 100), x)
    np.testing.assert_array_equal(tensor_proto_to_ndarray(tensor_proto([2, 3], values=[7.0]), SPEC, "s", 100), np.full((2, 3), 7.0))


@pytest.mark.parametrize("dtype", sorted(TENSOR_DTYPES))
def test_the_server_reads_what_clients_send_and_sends_typed_fields(dtype: str) -> None:
    """Requests encoded by export.tensor_proto as the load generators encode them (tensor_content) decode to the
    same values; outputs go out in the typed fields TF Serving fills, never tensor_content."""
    x = (np.array([[b"a", b"\xff"]], dtype=object) if dtype == "DT_STRING"
         else np.array([[1, 0]]).astype(codec.NUMPY_DTYPES[dtype]))
    request = codec.fill_tensor_proto(tensor_pb2.TensorProto(), x, dtype)
    spec = TensorSpec("inputs", types_pb2.DataType.Value(dtype), (-1, 2))
    decoded = tensor_proto_to_ndarray(request, spec, "s", 100)
    assert decoded.dtype == x.dtype and decoded.tolist() == x.tolist()
    out = ndarray_to_tensor_proto(decoded)
    assert not out.tensor_content and codec.to_ndarray(out).tolist() == x.tolist()


@pytest.mark.parametrize("proto, fragment", [
    (tensor_proto([2, 3], content=b"\0" * 12), "tensor_content has 12 bytes"),
    (tensor_proto([2, 3], values=[1.0, 2.0]), "carries 2 values"),
    (tensor_proto([10**15, 3], values=[1.0]), "more than the server's limit"),
    (tensor_proto([2, -3], values=[1.0]), "negative dimension"),
    (tensor_proto([2, 4], values=[1.0]), "expects [-1,3]"),
    (tensor_proto([2, 3], values=[1.0], dtype=types_pb2.DT_DOUBLE), "DT_DOUBLE"),
    (tensor_proto([0, 3]), "empty batch"),
])
def test_tensor_validation_refuses_before_allocating(proto, fragment) -> None:
    with pytest.raises(ServingError) as err:
        tensor_proto_to_ndarray(proto, SPEC, "s", 1000)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.value.message


def test_json_nan_infinity_and_formats() -> None:
    doc = parse_json_body(b'{"instances": [[NaN, Infinity, -Infinity], [1, 2, 3]]}')
    arrays, fmt = parse_predict_inputs(doc, SIG, 1000)
    assert fmt == ROW and arrays["inputs"].dtype == np.float32 and np.isnan(arrays["inputs"][0, 0])
    out = format_predict_outputs({"a": np.ones((2, 1)), "b": np.zeros((2,))}, ROW)
    assert out == {"predictions": [{"a": [1.0], "b": 0.0}, {"a": [1.0], "b": 0.0}]}
    with pytest.raises(ServingError, match="inconsistent batch size"):
        format_predict_outputs({"a": np.ones((2, 1)), "b": np.zeros((3,))}, ROW)
    with pytest.raises(ServingError, match="true/false|not of expected type"):
        parse_predict_inputs({"instances": [[True, False, True]]}, SIG, 1000)
    with pytest.raises(ServingError, match="true/false"):  # mixed with numbers numpy would read 1.0
        parse_predict_inputs({"instances": [[True, 0.5, 0.5]]}, SIG, 1000)
    with pytest.raises(ServingError, match="nesting too deep"):
        parse_json_body(b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}")


# ------------------------------------------------------------------------------------------------ batching
@dataclass
class _Settings:
    max_batch_size: int = 8
    batch_timeout_micros: int = 0
    num_batch_threads: int = 1
    max_enqueued_batches: int = 2
    allowed_batch_sizes: tuple = ()
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 8
    thread_pool_name: str = "batch_threads"


def _double(inputs):
    time.sleep(0.01)
    return {"y": inputs["x"] * 2}


def test_padding_to_allowed_sizes_and_rows_back() -> None:
    seen = []

    def process(inputs):
        seen.append(len(inputs["x"]))
        return _double(inputs)

    # 3 rows never fill a batch of 8: the batch waits its whole timeout, long enough for both submissions on a busy machine
    sched = SharedBatchScheduler(_Settings(allowed_batch_sizes=(4, 8), batch_timeout_micros=500_000), ServingMetrics())
    queue = sched.add_queue(process, "m", "m")
    xs = [np.full((n, 2), float(i)) for i, n in enumerate((1, 2))]
    futures = [queue.submit({"x": x}, len(x), None) for x in xs]
    for x, f in zip(xs, futures):
        np.testing.assert_array_equal(f.result(5)["y"], x * 2)
    assert seen == [4]  # 3 rows merged, padded to 4
    sched.stop()


def test_large_batch_splitting_and_oversize_error() -> None:
    sched = SharedBatchScheduler(_Settings(enable_large_batch_splitting=True, max_execution_batch_size=4,
                                           max_enqueued_batches=10))
    queue = sched.add_queue(_double, "m", "m")
    x = np.arange(22, dtype=np.float64).reshape(11, 2)
    np.testing.assert_array_equal(queue.run({"x": x}, 11, None)["y"], x * 2)
    sched.stop()
    plain = SharedBatchScheduler(_Settings())
    with pytest.raises(ServingError, match="Task size 9 is larger than maximum input batch size 8"):
        plain.add_queue(_double, "m", "m").submit({"x": np.zeros((9, 2))}, 9, None)
    plain.stop()


def test_full_queue_is_refused_immediately() -> None:
    gate = threading.Event()

    def slow(inputs):
        gate.wait(5)
        return {"y": inputs["x"]}

    sched = SharedBatchScheduler(_Settings(max_batch_size=2, max_enqueued_batches=1))
    queue = sched.add_queue(slow, "m", "m")
    first = queue.submit({"x": np.zeros((2, 1))}, 2, None)  # taken by the (only) batch thread
    time.sleep(0.1)
    second = queue.submit({"x": np.zeros((2, 1))}, 2, None)  # fills the one allowed queued batch
    with pytest.raises(ServingError) as err:
        queue.submit({"x": np.zeros((1, 1))}, 1, None)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    gate.set()
    assert first.result(5) and second.result(5)
    sched.stop()


# ------------------------------------------------------------------------------------------------ model manager
class _Runner:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _make_versions(base: Path, *versions: int) -> None:
    for v in versions:
        (base / str(v)).mkdir(parents=True, exist_ok=True)
        (base / str(v) / "saved_model.pb").write_bytes(b"ok" if v != 99 else b"bad")


def _loader(name: str, version: int, path: Path) -> ServableVersion:
    if (path / "saved_model.pb").read_bytes() == b"bad":
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "corrupt")
    return ServableVersion(name, version, _Runner())


def test_policy_labels_refusal_and_refcounted_unload(tmp_path: Path) -> None:
    base = tmp_path / "m"
    _make_versions(base, 1, 2, 3)
    src = ModelSource("m", base, policy="latest", num_versions=2, labels={"stable": 2})
    manager = ModelManager([src], _loader, poll_seconds=0)
    with pytest.raises(ServingError) as err:  # configured but still loading: retryable, not "no such model"
        with manager.acquire("m"):
            pass
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    manager.start()
    assert [s.version for s in manager.status("m") if s.state == "AVAILABLE"] == [3, 2]
    with manager.acquire("m", label="stable") as sv:
        assert sv.version == 2
    with pytest.raises(ServingError) as err:
        with manager.acquire("m", version=1):
            pass
    assert err.value.code == grpc.StatusCode.NOT_FOUND

    # a request holds v2 while v4 arrives: v2 leaves the policy but is closed only after the request ends
    with manager.acquire("m", version=2) as held:
        _make_versions(base, 4)
        manager.sync()  # first sight: settle
        manager.sync()  # unchanged: load v4, unload v2
        assert {s.version: s.state for s in manager.status("m")}[2] == "END"
        assert not held.runner.closed
    assert held.runner.closed

    # a corrupt newer version is refused; 4 and 3 keep serving; not retried until its files change
    _make_versions(base, 99)
    manager.sync()
    manager.sync()
    st = {s.version: s for s in manager.status("m")}
    assert st[99].state == "END" and st[99].error is not None and "corrupt" in st[99].error.message
    with manager.acquire("m") as sv:
        assert sv.version == 4
    manager.stop()
