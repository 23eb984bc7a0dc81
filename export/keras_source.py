"""A model brought by the user: its ``.keras`` file or SavedModel, the endpoints read from its own inputs, and
the samples it is checked and warmed up on.

Everything here fails with :class:`ExportError`, one line naming the cause and what to do, before anything is
written: a file that is not a Keras archive, a custom class nobody registered, a model with no input shape, an
input dtype TF Serving cannot carry, samples that do not fit the inputs.
"""
from __future__ import annotations

import importlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from export.contract import DEFAULT_SIGNATURE, SAVED_MODEL_FILE, TENSOR_DTYPES
from export.endpoints import DICT, LIST, MODEL_CALL, SINGLE, Endpoint, TensorDecl
from export.pipeline import ExportError

SAMPLE_BATCH_SIZES: tuple[int, ...] = (1, 8)  # warmup and verification batches, from samples or seeded
UNKNOWN_DIM = 4  # a seeded input's size for a non-batch dimension the model leaves open
# Keras dtype names of the tensors TF Serving's APIs carry (contract.TENSOR_DTYPES; strings are 'string' here).
CARRIED_DTYPES = sorted({np_name for np_name, _ in TENSOR_DTYPES.values()} - {"object"} | {"string"})
_UNREGISTERED = re.compile(r"Could not locate (?:class|function) '([^']+)'")
_REGISTERED_NAME = re.compile(r"'registered_name': '([^']+)'")


def import_modules(modules: Iterable[str], flag: str = "--import") -> None:
    """Import the modules that register the user's custom objects with Keras (their decorators run on import)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # an ImportError or the module's own failure: one line either way
            raise ExportError(f"{flag} {module}: {type(exc).__name__}: {exc}") from None


def load_keras_file(path: Path) -> Any:
    """The model in a ``.keras`` archive (the project's classes registered), or ExportError naming the cause."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    is_archive = path.suffix == ".keras" and zipfile.is_zipfile(path)
    if is_archive:
        with zipfile.ZipFile(path) as archive:
            is_archive = "config.json" in archive.namelist()
    if not is_archive:
        raise ExportError(f"{path} is not a Keras archive (a .keras file written by model.save)")
    import keras

    from export import models  # noqa: F401  (registers the project's own classes)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:
        text = str(exc)
        missing = _UNREGISTERED.search(text)
        if missing:
            registered = _REGISTERED_NAME.search(text)
            also = f" (registered as '{registered.group(1)}')" if registered else ""
            raise ExportError(f"{path}: custom class '{missing.group(1)}'{also} is not registered with Keras: pass "
                              "--import MODULE, the module that defines it") from None
        raise ExportError(f"{path}: Keras cannot load it: {type(exc).__name__}: {text.splitlines()[0]}") from None


def check_dtype(name: str, dtype: str) -> None:
    if dtype not in CARRIED_DTYPES:
        raise ExportError(f"input '{name}' has dtype {dtype}, which TF Serving's APIs cannot carry "
                          f"(use one of {', '.join(CARRIED_DTYPES)})")


def model_inputs(model: Any) -> tuple[str, tuple[TensorDecl, ...]]:
    """How the model takes its inputs (SINGLE / LIST / DICT) and each one, named, with a None batch dimension:
    Keras' own reading (the one ``model.export`` uses) of a functional model's keras.Input structure or of the
    shapes a subclassed model was built with."""
    from keras.src.export.export_utils import get_input_signature

    try:
        signature = list(get_input_signature(model))
    except ValueError:  # a subclassed model rebuilt from a file has its build shape but was never called
        signature = [_built_spec(model, (model.get_build_config() or {}).get("input_shape") if model.built else None)]
    if len(signature) != 1:
        raise ExportError(f"{type(model).__name__}.call takes {len(signature)} positional inputs; export takes "
                          "one (a tensor, a list or a dict of tensors)")
    struct = signature[0]
    if isinstance(struct, Mapping):
        structure, named = DICT, list(struct.items())
    elif isinstance(struct, (list, tuple)):
        structure, named = LIST, [(s.name or f"input_{i}", s) for i, s in enumerate(struct)]
    else:
        structure, named = SINGLE, [(struct.name or "inputs", struct)]
    inputs = tuple(TensorDecl(str(name), (None, *tuple(spec.shape)[1:]), str(spec.dtype)) for name, spec in named)
    for decl in inputs:
        check_dtype(decl.name, decl.dtype)
    return structure, inputs


def _built_spec(model: Any, shape: Any) -> Any:
    """Input specs from the shape a subclassed model was built with (its .keras build_config)."""
    import keras

    if isinstance(shape, Mapping):
        return {k: _built_spec(model, v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and all(isinstance(d, (list, tuple)) for d in shape):
        return [_built_spec(model, v) for v in shape]
    if not isinstance(shape, (list, tuple)) or not all(d is None or isinstance(d, int) for d in shape):
        raise ExportError(f"{type(model).__name__} has no defined input shape: call it once on a batch (or "
                          "model.build(shape)) before model.save, or build it from keras.Input")
    return keras.InputSpec(shape=(None, *shape[1:]), dtype=model.input_dtype)


def model_endpoints(model: Any, signatures: Mapping[str, str]) -> tuple[Endpoint, ...]:
    """serving_default calls the model; each --signature NAME=METHOD calls that method on the same inputs.
    Outputs are left to the trace (export/signatures.py)."""
    structure, inputs = model_inputs(model)
    endpoints = [Endpoint(DEFAULT_SIGNATURE, MODEL_CALL, (), inputs, structure=structure)]
    for signature, method in signatures.items():
        if not callable(getattr(model, method, None)):
            raise ExportError(f"--signature {signature}={method}: {type(model).__name__} has no method '{method}'")
        endpoints.append(Endpoint(signature, method, (), inputs, structure=structure))
    return tuple(endpoints)


def seeded_batches(inputs: Iterable[TensorDecl], seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Inputs made up from the specs, one dict per SAMPLE_BATCH_SIZES: floats ~ N(0, 1), integers 0 or 1 (valid
    for any embedding or lookup), random booleans, empty strings."""
    rng, batches = np.random.default_rng(seed), []
    for batch in SAMPLE_BATCH_SIZES:
        values = {}
        for decl in inputs:
            shape = (batch, *(UNKNOWN_DIM if d is None else d for d in decl.shape[1:]))
            if decl.dtype == "string":
                values[decl.name] = np.full(shape, b"", dtype=object)
            elif decl.dtype == "bool":
                values[decl.name] = rng.random(shape) < 0.5
            elif np.issubdtype(np.dtype(decl.dtype), np.integer):
                values[decl.name] = rng.integers(0, 2, shape).astype(decl.dtype)
            else:
                values[decl.name] = rng.standard_normal(shape).astype(decl.dtype)
        batches.append(values)
    return batches


def sample_batches(path: Path, inputs: tuple[TensorDecl, ...]) -> list[dict[str, np.ndarray]]:
    """The user's samples (``.npz`` one array per input, ``.npy`` one input, or a TF Serving REST predict body),
    checked against the inputs and cycled to each of SAMPLE_BATCH_SIZES."""
    samples = _read_samples(Path(path), inputs)
    where = f"--sample-data {path}"
    if sorted(samples) != sorted(d.name for d in inputs):
        raise ExportError(f"{where}: holds inputs {sorted(samples)}, the model takes {sorted(d.name for d in inputs)}")
    for decl in inputs:
        got = samples[decl.name].shape
        if len(got) != len(decl.shape) or any(w is not None and g != w for g, w in zip(got[1:], decl.shape[1:])):
            raise ExportError(f"{where}: input '{decl.name}' has shape {list(got)}, the model takes "
                              f"{list(decl.shape)} (None = any size)")
    rows = {len(a) for a in samples.values()}
    if len(rows) != 1 or 0 in rows:
        raise ExportError(f"{where}: every input needs the same number of rows (at least one), got {sorted(rows)}")
    return [{k: np.take(a, np.arange(n) % len(a), axis=0) for k, a in samples.items()} for n in SAMPLE_BATCH_SIZES]


def _read_samples(path: Path, inputs: tuple[TensorDecl, ...]) -> dict[str, np.ndarray]:
    where = f"--sample-data {path}"
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        if path.suffix == ".npy":
            if len(inputs) != 1:
                raise ExportError(f"{where}: one array, the model takes {len(inputs)} inputs (use an .npz)")
            return {inputs[0].name: np.load(path, allow_pickle=False)}
        if path.suffix == ".json":
            return _rest_json_samples(json.loads(path.read_text()), inputs)
    except ExportError:
        raise
    except Exception as exc:  # unreadable file, bad JSON, a body TF Serving would refuse: one line
        raise ExportError(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    raise ExportError(f"{where}: expected .npz (one array per input), .npy (one input) or .json (a TF Serving "
                      "REST predict body)")


def _rest_json_samples(doc: Any, inputs: tuple[TensorDecl, ...]) -> dict[str, np.ndarray]:
    """A REST predict body ("instances" rows or "inputs" columns) read with the embedded server's own parser,
    so a body that server would refuse is refused here with the same words."""
    from tensorflow.core.framework import types_pb2

    from serving.tensors import SignatureSpec, TensorSpec, parse_predict_inputs

    enum = {np_name: name for name, (np_name, _) in TENSOR_DTYPES.items()} | {"string": "DT_STRING"}
    specs = {d.name: TensorSpec(d.name, types_pb2.DataType.Value(enum[d.dtype]), None) for d in inputs}
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object with 'instances' or 'inputs'")
    arrays, _ = parse_predict_inputs(doc, SignatureSpec(DEFAULT_SIGNATURE, specs, {}, strict_shapes=False),
                                     max_elements=1 << 26)
    return arrays


def saved_model_endpoints(path: Path) -> tuple[Endpoint, ...]:
    """The signatures of an existing SavedModel ('serve' tag) as endpoints with no model method behind them."""
    if not (Path(path) / SAVED_MODEL_FILE).is_file():
        raise ExportError(f"{path} is not a SavedModel directory (no {SAVED_MODEL_FILE} in it)")
    import tensorflow as tf
    from tensorflow.python.tools.saved_model_utils import get_meta_graph_def  # what saved_model_cli reads

    try:
        defs = get_meta_graph_def(str(path), "serve").signature_def
    except Exception as exc:  # a corrupt proto or no 'serve' MetaGraph
        raise ExportError(f"{path}: cannot read its 'serve' signatures: {str(exc).splitlines()[0]}") from None

    def decls(infos: Any) -> tuple[TensorDecl, ...]:
        if any(v.tensor_shape.unknown_rank for v in infos.values()):
            raise ExportError(f"{path}: a signature tensor of unknown rank ({sorted(infos)}); export needs ranks")
        return tuple(TensorDecl(k, tuple(None if d.size < 0 else int(d.size) for d in v.tensor_shape.dim),
                                tf.as_dtype(v.dtype).name) for k, v in sorted(infos.items()))

    endpoints = tuple(Endpoint(name, "", decls(d.outputs), decls(d.inputs), d.method_name)
                      for name, d in sorted(defs.items()) if not name.startswith("__"))
    if not endpoints:
        raise ExportError(f"{path}: the SavedModel has no serving signatures")
    for endpoint in endpoints:
        for decl in endpoint.inputs:
            check_dtype(decl.name, decl.dtype)
    return endpoints
