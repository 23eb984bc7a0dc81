"""Import TF Serving's official protos without paying for a full `import tensorflow`.

`tensorflow_serving.apis.*_pb2` import `tensorflow.core.framework.*_pb2`, and importing any
`tensorflow.` submodule first runs tensorflow/__init__.py: ~10 s of CPU and ~500 MB per process.
Load-generator processes (gRPC/REST clients, Locust master + workers, the no-op server) never run
TensorFlow, so we briefly register a bare namespace module for `tensorflow` whose __path__ is the
real package directory, import only the generated protobuf modules, and then remove the stand-in so
a later real `import tensorflow` (in-process benchmarks) runs its normal __init__ unharmed.
Set BENCH_FULL_TF_IMPORT=1 to disable the shortcut.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from types import ModuleType

_MODULES = {
    "predict_pb2": "tensorflow_serving.apis.predict_pb2",
    "prediction_service_pb2_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "model_service_pb2_grpc": "tensorflow_serving.apis.model_service_pb2_grpc",
    "get_model_status_pb2": "tensorflow_serving.apis.get_model_status_pb2",
    "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
    "classification_pb2": "tensorflow_serving.apis.classification_pb2",
    "regression_pb2": "tensorflow_serving.apis.regression_pb2",
    "example_pb2": "tensorflow.core.example.example_pb2",
    "tensor_pb2": "tensorflow.core.framework.tensor_pb2",
    "types_pb2": "tensorflow.core.framework.types_pb2",
    "tensor_shape_pb2": "tensorflow.core.framework.tensor_shape_pb2",
}

_loaded: dict[str, ModuleType] = {}


def _import_all() -> None:
    for key, name in _MODULES.items():
        _loaded[key] = importlib.import_module(name)


def load() -> dict[str, ModuleType]:
    if _loaded:
        return _loaded
    if "tensorflow" in sys.modules or os.environ.get("BENCH_FULL_TF_IMPORT") == "1":
        _import_all()
        return _loaded
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tensorflow is not installed; the TF Serving protos need its core protos")
    stub = types.ModuleType("tensorflow")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["tensorflow"] = stub
    try:
        _import_all()
    finally:
        if sys.modules.get("tensorflow") is stub:
            del sys.modules["tensorflow"]
    return _loaded


def get(name: str) -> ModuleType:
    return load()[name]


def with_model_spec(req, model: str, signature: str = "", version: int | None = None):
    """Fill a request's model_spec (name, signature and version when given); returns the request."""
    req.model_spec.name = model
    if signature:
        req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    return req
