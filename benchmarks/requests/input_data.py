"""--input-data FILE: request data given by the user, in a format they already have.

Accepted (the format is recognised by its top-level key):
  * a TF Serving REST predict body: {"instances": [...]} (rows; a dict per row for several inputs) or
    {"inputs": ...} (columns: a dict of named inputs, or one value for a single-input signature);
  * a TF Serving REST classify/regress body: {"examples": [{feature: value}, ...], "context": {...}};
  * perf_analyzer's input-data JSON: {"data": [{input: [flat values] | {"content": [...], "shape": [...]}
    | {"b64": "..."}}, ...]}, one entry per row (perf_analyzer's entries carry no batch dimension).
Binary values are {"b64": "..."} everywhere, as in TF Serving's REST API. The file's rows are repeated
(cycled) to fill each batch size, so one small file serves every --batch-sizes point. Anything that does
not fit the signature is a ValueError naming the file and the problem (the CLI exits 2 with it).
"""
from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import numpy as np

from benchmarks.requests.signature import ServedSignature, TensorInfo
from export.tensor_proto import NUMPY_DTYPES, STRING


def load_document(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--input-data {path}: cannot read it ({e})") from None
    except ValueError as e:
        raise ValueError(f"--input-data {path}: not valid JSON ({e})") from None
    keys = ("instances", "inputs", "examples", "data")
    if not isinstance(doc, dict) or not any(k in doc for k in keys):
        raise ValueError(f"--input-data {path}: expected a JSON object with one of {', '.join(keys)} "
                         "(a TF Serving REST body or perf_analyzer's input-data JSON)")
    return doc


def _b64(value: dict, where: str) -> bytes:
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise ValueError(f"{where}: a binary value must be {{\"b64\": \"<base64>\"}}") from None


def to_array(value, dtype: str, where: str) -> np.ndarray:
    """A JSON value -> numpy of the signature's dtype (bytes object arrays for DT_STRING)."""
    if dtype == STRING:
        def leaf(v):
            if isinstance(v, dict):
                return _b64(v, where)
            if isinstance(v, str):
                return v.encode()
            raise ValueError(f"{where}: expected strings or {{\"b64\": ...}}, got {type(v).__name__}")
        arr = np.asarray(value, dtype=object)
        return np.vectorize(leaf, otypes=[object])(arr) if arr.size else arr
    if dtype not in NUMPY_DTYPES:
        raise ValueError(f"{where}: dtype {dtype} is not supported")
    try:
        return np.asarray(value, dtype=NUMPY_DTYPES[dtype])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: not a rectangular array of {dtype} ({e})") from None


def _check_names(given: set[str], sig: ServedSignature, where: str) -> None:
    extra, missing = sorted(given - set(sig.inputs)), sorted(set(sig.inputs) - given)
    if extra or missing:
        raise ValueError(f"{where}: inputs do not match signature '{sig.name}' of '{sig.model}' "
                         f"(unknown: {extra or 'none'}, missing: {missing or 'none'}; "
                         f"it takes {sorted(sig.inputs)})")


def _single(sig: ServedSignature, where: str) -> str:
    if len(sig.inputs) != 1:
        raise ValueError(f"{where}: signature '{sig.name}' has {len(sig.inputs)} inputs; name them "
                         f"({sorted(sig.inputs)})")
    return next(iter(sig.inputs))


def _perf_analyzer_entry(value, info: TensorInfo, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    if isinstance(value, dict) and "content" in value:
        shape = tuple(value.get("shape", shape or ()))
        value = value["content"]
    elif isinstance(value, dict):
        value = [value]  # a lone {"b64": ...}
    arr = to_array(value, info.dtype, where)
    if shape is None and info.shape is not None:
        shape = tuple(info.shape[1:]) if info.shape and info.shape[0] == -1 else tuple(info.shape)
    if shape is not None and -1 not in shape:
        try:
            arr = arr.reshape(shape)
        except ValueError:
            raise ValueError(f"{where}: {arr.size} values do not fill shape {list(shape)}") from None
    return arr


def predict_tensors(doc: dict, sig: ServedSignature, shapes: dict[str, tuple[int, ...]],
                    where: str) -> dict[str, np.ndarray]:
    """The file's tensors for a predict signature, each with the rows as its first dimension."""
    if "instances" in doc:
        rows = doc["instances"]
        if not isinstance(rows, list) or not rows:
            raise ValueError(f"{where}: 'instances' must be a non-empty list of rows")
        if all(isinstance(r, dict) and "b64" not in r for r in rows):
            _check_names(set().union(*rows), sig, where)
            return {n: to_array([r.get(n) for r in rows], i.dtype, f"{where}: input '{n}'") for n, i in sig.inputs.items()}
        name = _single(sig, where)
        return {name: to_array(rows, sig.inputs[name].dtype, f"{where}: input '{name}'")}
    if "inputs" in doc:
        cols = doc["inputs"]
        if not isinstance(cols, dict) or "b64" in cols:
            cols = {_single(sig, where): cols}
        _check_names(set(cols), sig, where)
        return {n: to_array(v, sig.inputs[n].dtype, f"{where}: input '{n}'") for n, v in cols.items()}
    if "data" in doc:
        entries = doc["data"]
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise ValueError(f"{where}: 'data' must be a non-empty list of {{input: value}} objects")
        _check_names(set().union(*entries), sig, where)
        out = {}
        for n, info in sig.inputs.items():
            per_row = [_perf_analyzer_entry(e.get(n), info, shapes.get(n), f"{where}: data[{i}].{n}")
                       for i, e in enumerate(entries)]
            try:
                out[n] = np.stack(per_row)
            except ValueError:
                raise ValueError(f"{where}: input '{n}' has rows of different shapes "
                                 f"({sorted({r.shape for r in per_row})})") from None
        return out
    raise ValueError(f"{where}: a predict signature needs 'instances', 'inputs' or 'data' (found {sorted(doc)})")


def example_features(doc: dict, where: str) -> dict[str, np.ndarray]:
    """A classify/regress body's examples as feature columns [rows, values] (context merged into each)."""
    rows = doc.get("examples")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{where}: a classify/regress signature needs 'examples': a non-empty list of objects")
    context = doc.get("context", {})
    rows = [{**context, **r} for r in rows]
    names = set().union(*rows)
    out = {}
    for name in sorted(names):
        column = [r.get(name) for r in rows]
        if any(v is None for v in column):
            raise ValueError(f"{where}: feature '{name}' is missing from some examples")
        column = [v if isinstance(v, list) else [v] for v in column]
        flat = [x for v in column for x in v]
        is_bytes = all(isinstance(x, (str, dict)) for x in flat)
        is_float = any(isinstance(x, float) for x in flat)
        dtype = STRING if is_bytes else "DT_FLOAT" if is_float else "DT_INT64"
        out[name] = to_array(column, dtype, f"{where}: feature '{name}'")
    return out


def take_rows(tensors: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """`batch` rows from each tensor, cycling through the rows the file has."""
    out = {}
    for name, arr in tensors.items():
        if arr.ndim == 0:
            raise ValueError(f"input '{name}' has no row dimension in --input-data")
        out[name] = arr[np.arange(batch) % len(arr)]
    return out
