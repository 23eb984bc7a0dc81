"""The oracle: a signature's answer from TensorFlow's v1 Session loader (serving/execution/session_bundle.py), the
inputs it is asked on, and the comparison of a server's answer with it.

Inputs are built from the signature alone, seeded: numbers of the declared dtype and shape (a free
dimension 0 is the batch: 1 and 3 rows; other free dimensions and unknown ranks get 2), words from a small
vocabulary for strings, and for a string input that the graph feeds to ParseExample, serialized tf.Examples
carrying the features that op asks for (required dense ones always, ones with defaults on a coin flip,
var-len and sparse ones with 1-3 values; the int64 values of one example are distinct, so index features
stay valid). Where a dense feature is required, one more case sends an empty example: the Session refuses
it, and so must the server, with the graph's message.

Agreement: integers, bools and strings exactly; floats within 1e-6 relative (|a-b| <= 1e-6 * max(|a|,|b|));
a Session error must come back as INVALID_ARGUMENT whose message contains the graph's own message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.execution.runners import _first_line

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta")
FREE_DIM = 2  # what a free non-batch dimension, or an unknown rank's extra dimension, is given
BATCHES = (1, 3)
RELATIVE_TOLERANCE = 1e-6
CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"
_PARSE_OPS = ("ParseExample", "ParseExampleV2")
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


@dataclass
class Sample:
    label: str  # "batch 1", "batch 3", "scalar", "empty example"
    inputs: dict[str, np.ndarray]
    examples: list[bytes] | None = None  # the serialized tf.Examples, when the one input is parsed as such


@dataclass
class Outcome:
    """One answer: outputs, or an error (its status name and message)."""

    outputs: dict[str, np.ndarray] | None = None
    code: str = "OK"
    message: str = ""


@dataclass
class Verdict:
    api: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    problem: str | None = None  # None = agrees with the oracle
    errored: bool = False  # both sides refused the input (as they should)


@dataclass
class FeatureSpec:
    key: str
    dtype: Any  # tf.DType
    shape: list[int] | None = None  # dense: its shape; sparse/var-len: None
    required: bool = True


@dataclass
class ExampleSpec:
    features: list[FeatureSpec] = field(default_factory=list)

    @property
    def has_required(self) -> bool:
        return any(f.shape is not None and f.required for f in self.features)


def oracle_outcome(bundle: Any, signature: str, sample: Sample) -> Outcome:
    try:
        return Outcome(bundle.run(signature, sample.inputs))
    except Exception as exc:  # the graph refused the input: that is an answer too
        return Outcome(None, status_name(exc), _first_line(exc))


def status_name(exc: Exception) -> str:
    """TensorFlow's error class as its status code name: FailedPreconditionError -> FAILED_PRECONDITION
    (Python's own ValueError/TypeError from a feed are the caller's bad argument)."""
    name = type(exc).__name__
    if not name.endswith("Error") or name in ("ValueError", "TypeError"):
        return "INVALID_ARGUMENT"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name[:-len("Error")]).upper()


def inference_method(signature_def: Any) -> str | None:
    """The Classify or Regress API a signature can answer (TF Serving's shape test, any method name)."""
    from tensorflow.core.framework import types_pb2

    inputs, outputs = signature_def.inputs, set(signature_def.outputs)
    if set(inputs) != {"inputs"} or inputs["inputs"].dtype != types_pb2.DT_STRING:
        return None
    if outputs == {"outputs"}:
        return REGRESS
    return CLASSIFY if outputs and outputs <= {"classes", "scores"} else None


# ------------------------------------------------------------------------------------------ inputs
def example_spec(bundle: Any, tensor_name: str) -> ExampleSpec | None:
    """The features the ParseExample op reading `tensor_name` (directly or through Identity) asks for; for
    a TF2 signature, whose graph is a call of a function, the one ParseExample op of the function library."""
    graph = bundle.graph
    pending, seen, called = [graph.get_tensor_by_name(tensor_name)], set(), []
    while pending:
        tensor = pending.pop()
        for op in tensor.consumers():
            if op.name in seen:
                continue
            seen.add(op.name)
            if op.type in _CALL_OPS:
                called.append(op.get_attr("f").name)
            if op.type in _PARSE_OPS and op.inputs[0].name == tensor.name:
                return _parse_op_spec(bundle, op)
            if op.type == "Identity":
                pending.extend(op.outputs)
    return _library_spec(graph, called) if called else None


def _library_spec(graph: Any, called: list[str]) -> ExampleSpec | None:
    """The ParseExampleV2 node of the functions `called` (and those they call), its keys read from the
    function's constants; None unless there is exactly one (which one runs is not known from here)."""
    import tensorflow as tf

    library = {f.signature.name: f for f in graph.as_graph_def().library.function}
    reachable, pending = set(), list(called)
    while pending:
        name = pending.pop()
        if name in reachable or name not in library:
            continue
        reachable.add(name)
        pending += [n.attr["f"].func.name for n in library[name].node_def if n.op in _CALL_OPS]
    found = [(library[f], n) for f in reachable for n in library[f].node_def if n.op == "ParseExampleV2"]
    if len(found) != 1:
        return None
    function, node = found[0]
    consts = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in function.node_def if n.op == "Const"}
    key = lambda ref: consts.get(ref.split(":")[0])  # noqa: E731 ("name:output:0" inside a function)
    sparse_keys, dense_keys = key(node.input[2]), key(node.input[3])
    if sparse_keys is None or dense_keys is None:
        return None
    n_dense = len(node.attr["Tdense"].list.type)
    defaults = [key(ref) for ref in node.input[5:5 + n_dense]]
    spec = ExampleSpec([FeatureSpec(_text(k), tf.as_dtype(t)) for k, t in
                        zip(sparse_keys, node.attr["sparse_types"].list.type)])
    for k, t, shape, default in zip(dense_keys, node.attr["Tdense"].list.type, node.attr["dense_shapes"].list.shape,
                                    defaults):
        spec.features.append(FeatureSpec(_text(k), tf.as_dtype(t), tf.TensorShape(shape).as_list(),
                                         default is None or default.size == 0))
    return spec


def _parse_op_spec(bundle: Any, op: Any) -> ExampleSpec:
    import tensorflow as tf

    dense_types, sparse_types = op.get_attr("Tdense"), op.get_attr("sparse_types")
    dense_shapes = [tf.TensorShape(s).as_list() for s in op.get_attr("dense_shapes")]
    if op.type == "ParseExampleV2":
        sparse_keys, dense_keys = bundle.session.run([op.inputs[2], op.inputs[3]])
        defaults = op.inputs[5:5 + len(dense_types)]
    else:
        n_sparse, n_dense = op.get_attr("Nsparse"), op.get_attr("Ndense")
        keys = bundle.session.run(list(op.inputs[2:2 + n_sparse + n_dense]))
        sparse_keys, dense_keys = keys[:n_sparse], keys[n_sparse:]
        defaults = op.inputs[2 + n_sparse + n_dense:]
    spec = ExampleSpec()
    for key, dtype in zip(sparse_keys, sparse_types):
        spec.features.append(FeatureSpec(_text(key), tf.as_dtype(dtype)))
    for key, dtype, shape, default in zip(dense_keys, dense_types, dense_shapes, defaults):
        required = default.shape.num_elements() == 0
        spec.features.append(FeatureSpec(_text(key), tf.as_dtype(dtype), shape, required))
    return spec


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(np.asarray(key).item().decode())


def _feature_values(feature: FeatureSpec, rng: np.random.Generator, length: int) -> list:
    count = length if feature.shape is None else int(np.prod([d if d >= 0 else FREE_DIM for d in feature.shape]))
    if feature.dtype.name == "string":
        return [rng.choice(WORDS).encode() for _ in range(count)]
    if feature.dtype.name == "int64":
        return [int(v) for v in rng.permutation(10)[:count]] if count <= 10 else rng.integers(0, 10, count).tolist()
    return [float(v) for v in rng.standard_normal(count).astype(np.float32)]


def make_example(spec: ExampleSpec, rng: np.random.Generator) -> bytes:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    length = int(rng.integers(1, 4))  # var-len and sparse features of one example share a length
    for feature in spec.features:
        if feature.shape is not None and not feature.required and rng.random() < 0.5:
            continue  # left out: the default applies
        values = _feature_values(feature, rng, length)
        kind = {"string": "bytes_list", "int64": "int64_list"}.get(feature.dtype.name, "float_list")
        getattr(example.features.feature[feature.key], kind).value.extend(values)
    return example.SerializeToString()


def _graph_shape(bundle: Any, info: Any) -> list[int | None] | None:
    """The fed tensor's shape as the Session's graph has it (None = unknown rank). Not the TensorInfo's: old
    producers left that empty, which reads as a scalar, while their placeholders take any shape."""
    return bundle.graph.get_tensor_by_name(info.name).shape.as_list() if \
        bundle.graph.get_tensor_by_name(info.name).shape.rank is not None else None


def _concrete_shape(dims: list[int | None] | None, batch: int) -> tuple[int, ...]:
    if dims is None:
        return (batch, FREE_DIM)
    return tuple((batch if i == 0 else FREE_DIM) if d is None else d for i, d in enumerate(dims))


def _is_batched(dims: list[int | None] | None) -> bool:
    return dims is None or (len(dims) > 0 and dims[0] is None)


def _values(info: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    import tensorflow as tf

    dtype = tf.as_dtype(info.dtype)
    if dtype == tf.string:
        words = [" ".join(rng.choice(WORDS, int(rng.integers(1, 3)))).encode() for _ in range(int(np.prod(shape)))]
        out = np.empty(len(words), dtype=object)
        out[:] = words
        return out.reshape(shape)
    if dtype == tf.bool:
        return rng.random(shape) < 0.5
    if dtype.is_integer:
        return rng.integers(0, 10, shape).astype(dtype.as_numpy_dtype)
    return rng.standard_normal(shape).astype(dtype.as_numpy_dtype)


def build_samples(bundle: Any, signature: str, rng: np.random.Generator, repeats: int = 1) -> list[Sample]:
    """`repeats` seeded samples per batch size (one when no input has a batch dimension), plus the empty
    example case where the signature parses tf.Examples with a required feature."""
    from tensorflow.core.framework import types_pb2

    sig = bundle.signature_defs[signature]
    shapes = {k: _graph_shape(bundle, info) for k, info in sig.inputs.items()}
    batched = any(_is_batched(dims) for dims in shapes.values())
    only = next(iter(sig.inputs.values())) if len(sig.inputs) == 1 else None
    parsed = example_spec(bundle, only.name) if only is not None and only.dtype == types_pb2.DT_STRING else None
    samples = []
    for batch in (BATCHES if batched else (1,)):
        for _ in range(repeats):
            label = f"batch {batch}" if batched else "unbatched"
            if parsed is not None:
                name = next(iter(sig.inputs))
                examples = [make_example(parsed, rng) for _ in range(batch)]
                arr = np.empty(batch, dtype=object)
                arr[:] = examples
                samples.append(Sample(label, {name: arr}, examples))
                continue
            samples.append(Sample(label, {k: _values(info, _concrete_shape(shapes[k], batch), rng)
                                          for k, info in sig.inputs.items()}))
    if parsed is not None and parsed.has_required:
        name = next(iter(sig.inputs))
        samples.append(Sample("empty example", {name: np.array([b""], dtype=object)}, [b""]))
    return samples


# ------------------------------------------------------------------------------------------ comparing
def _differences(expected: np.ndarray, got: np.ndarray) -> tuple[float, float, bool]:
    """(max abs, max rel, agree?) for one output."""
    if expected.dtype == object or expected.dtype.kind in "biuSU":
        same = expected.shape == got.shape and bool(np.array_equal(expected, got))
        return 0.0, 0.0, same
    a, b = expected.astype(np.float64), got.astype(np.float64)
    if a.shape != b.shape:
        return float("inf"), float("inf"), False
    diff = np.abs(a - b)
    scale = np.maximum(np.abs(a), np.abs(b))
    rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    both_nan = np.isnan(a) & np.isnan(b)
    diff, rel = np.where(both_nan, 0.0, diff), np.where(both_nan, 0.0, rel)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float(rel.max()) if rel.size else 0.0
    return max_abs, max_rel, bool(np.all((rel <= RELATIVE_TOLERANCE) | both_nan))


def compare(api: str, expected: Outcome, got: Outcome, flatten: bool = False) -> Verdict:
    """The server's answer `got` against the oracle's `expected`. `flatten`: classify/regress results are
    compared as flat values (a [n,1] output is reported as n regressions)."""
    if expected.outputs is None:
        if got.code != expected.code:
            return Verdict(api, problem=f"the Session refused it ({expected.code}: {expected.message}) but the "
                                        f"server answered {got.code} {got.message[:200]}")
        if expected.message not in got.message:
            return Verdict(api, problem=f"{got.code} without the graph's message: expected "
                                        f"{expected.message!r} in {got.message[:300]!r}")
        return Verdict(api, errored=True)
    if got.outputs is None:
        return Verdict(api, problem=f"the Session answered but the server said {got.code}: {got.message[:300]}")
    if set(got.outputs) != set(expected.outputs):
        return Verdict(api, problem=f"outputs {sorted(got.outputs)}, the Session's {sorted(expected.outputs)}")
    verdict = Verdict(api)
    for name, want in expected.outputs.items():
        have = got.outputs[name]
        if flatten:
            want, have = want.ravel(), have.ravel()
        if want.dtype == object and have.dtype == object:
            have = np.asarray(have, dtype=object)
        max_abs, max_rel, same = _differences(want, have)
        verdict.max_abs, verdict.max_rel = max(verdict.max_abs, max_abs), max(verdict.max_rel, max_rel)
        if not same and verdict.problem is None:
            verdict.problem = (f"output {name!r}: server {have.dtype}{list(have.shape)} {_preview(have)} vs "
                               f"Session {want.dtype}{list(want.shape)} {_preview(want)}")
    return verdict


def _preview(arr: np.ndarray) -> str:
    text = np.array2string(arr.ravel()[:6], threshold=6, max_line_width=120)
    return text if arr.size <= 6 else text + "..."
