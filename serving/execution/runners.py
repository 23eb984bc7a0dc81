"""The three ways a loaded version runs a signature: graph, xla, eager.

All three expose `run(signature_name, {input: ndarray}) -> {output: ndarray}` and read the signature
definitions (names, dtypes, shapes, method names) from the SavedModel's MetaGraphDef, so validation and
metadata are the same whatever the mode.

Any SavedModel in TF Serving's layout loads in graph and xla modes: TF2 ones (tf.saved_model.save of a
tf.Module or a Keras model, Keras ExportArchive) and TF1 ones (SavedModelBuilder over a graph + session,
e.g. signatures that parse serialized tf.Example strings). tf.saved_model.load restores a TF1 SavedModel as
pruned functions, one per signature, fed at the signature's input tensors. Measured on a TF1 half-plus-two
whose regress signature parses tf.Example strings (benchmarks/targets/tfs_models.py): both it and the v1 route
(tf.compat.v1.saved_model.loader.load into a Session + Session.make_callable) answer [3, 3] for two
examples with x=2; a batch-1 call costs 69 us through the flat call below and 151 us through make_callable;
and Python's Session refuses x of shape [3] fed to the [None,1] tensor x ("Cannot feed value of shape"),
which TF Serving's C++ Session::Run and the pruned function both accept. So TF1 models load the TF2 way,
and a TF1 signature takes any shape its graph accepts (SignatureSpec.strict_shapes). A TF1 model the TF2
loader cannot build is served through a v1 Session instead (serving/execution/session_bundle.py; both paths' cost
per call in docs/performance.md, "TF1 signatures").

graph  Executor "session" (the server's default, --graph-executor): each signature run through a v1 Session
       (serving/execution/session_bundle.py: TF's v1 loader, the route tensorflow_model_server takes, with the
       inter-op work on the calling thread) wherever the version loads into one and the Session answers a probe
       input as the signature function does; GraphRunner says which per signature. Executor "function", and
       any version or signature the Session cannot run (Keras 3 resource variables saved without an
       ExportArchive may not restore in a Session): the restored signature ConcreteFunction, called through its
       flat entry point. Measured on this machine (benchmarks/commands/graph_call.py, numbers in its output):
       `signatures[name](**kw)` ~310 us, `ConcreteFunction._call_flat` ~210 us, the AtomicFunction's `call_flat`
       ~120 us, tf.function wrapping ~500 us per batch-1 call. The function path goes one level below
       call_flat, to the eager execute of the function itself (see _FlatCall), and runs with 1 intra-op + 1
       inter-op thread on 2 cores (serving.cli.server.tf_thread_counts). Other routes tried and not kept
       (docs/performance.md): a frozen graph (variables folded to constants) in a v1 Session, ~370-490 us;
       SINGLE_THREADED_EXECUTOR, no better. The flat entry point uses private attributes, so at load it is
       checked against the public call on a probe input and the public call is used if anything differs.
xla    The same signature function inside tf.function(jit_compile=True), called the same fast way; XLA
       compiles once per distinct input shape (warmup covers the common ones).
eager  The Keras model rebuilt from assets.extra/model.keras (export.keras_source.load_keras_file; custom classes
       registered by the server's --import modules) and called as a plain Python function in eager mode: each
       signature runs the model method it was exported from (the manifest's endpoints, export/endpoints.py:
       serving_default -> model(x, training=False), reconstruct -> model.reconstruct). A version without a
       Keras file, or with signatures no endpoint computes, is refused.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from export.contract import SAVED_MODEL_FILE
from serving.errors import ServingError, failed_precondition, internal, invalid_argument, not_found
from serving.tensors import SignatureSpec, signature_spec

log = logging.getLogger("serving.runners")

INIT_OP_SIGNATURE = "__saved_model_init_op"
SERVE_TAG = "serve"


def read_serve_meta_graph(version_dir: Path) -> Any:
    """The 'serve' MetaGraphDef, straight from saved_model.pb (its signature defs are what TF Serving reports)."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = Path(version_dir) / SAVED_MODEL_FILE
    if not pb.is_file():
        raise not_found(f"SavedModel not found: no saved_model.pb in {version_dir}")
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError; keep the message whatever the type
        raise invalid_argument(f"{pb} is not a valid SavedModel proto (truncated or corrupt?): {exc}") from None
    for meta in saved.meta_graphs:
        if SERVE_TAG in meta.meta_info_def.tags:
            return meta
    raise invalid_argument(f"{pb} has no MetaGraph tagged '{SERVE_TAG}'")


def is_tf1_meta_graph(meta: Any) -> bool:
    """TF1 SavedModels (SavedModelBuilder) carry no object graph; TF2 ones always do."""
    return not meta.object_graph_def.nodes


def serving_signatures(signature_defs: dict[str, Any], strict_shapes: bool = True) -> dict[str, SignatureSpec]:
    return {k: signature_spec(k, v, strict_shapes) for k, v in signature_defs.items() if k != INIT_OP_SIGNATURE}


def as_output(value: Any) -> np.ndarray:
    """A scalar string tensor comes out of numpy() / Session.run as bytes, not an array: make it the 0-d
    object array every other string output is."""
    return np.array(value, dtype=object) if isinstance(value, bytes) else np.asarray(value)


def _probe_inputs(spec: SignatureSpec, rows: int = 2) -> dict[str, np.ndarray]:
    """Inputs to compare the fast call with the public one: random numbers, empty strings (an empty string
    is also an empty serialized tf.Example)."""
    rng = np.random.default_rng(0)
    out = {}
    for name, t in spec.inputs.items():
        shape = tuple(rows if d < 0 else d for d in (t.shape if t.shape is not None else (rows,)))
        if t.is_string:
            out[name] = np.full(shape, b"", dtype=object)
        else:
            out[name] = rng.standard_normal(shape).astype(t.np_dtype)
    return out


def _same_answer(fast: Callable[[Any], Any], public: Callable[[Any], Any], probe: dict[str, np.ndarray]) -> bool:
    """Do both calls give the same outputs on the probe, or fail it with the same error? (A signature that
    parses tf.Example strings may refuse any probe; the same refusal from both shows they run the same
    function with the same arguments.)"""
    outcomes = []
    for call in (fast, public):
        try:
            outcomes.append(("ok", call(probe)))
        except Exception as exc:  # compared below, never swallowed silently: a mismatch disables the fast path
            outcomes.append(("error", (type(exc).__name__, _first_line(exc))))
    (kind_a, a), (kind_b, b) = outcomes
    if kind_a != kind_b:
        return False
    if kind_a == "error":
        return a == b
    return set(a) == set(b) and all(_arrays_equal(a[k], b[k]) for k in b)


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == object or a.dtype.kind == "b":
        return bool(np.array_equal(a, b))
    return bool(np.allclose(a, b, atol=1e-6, equal_nan=True))


class _FlatCall:
    """Call a ConcreteFunction the way its AtomicFunction does, minus the Python layers in between.

    AtomicFunction.call_flat ends in `pywrap_tfe.TFE_Py_Execute(ctx, device, function_name, inputs, attrs,
    n_outputs)`: the function is executed as one eager op named after it. We make that call directly with
    everything resolved at load time (argument order, captured variable handles, the call attributes, the
    output order) and build the input tensors with the EagerTensor constructor that tf.convert_to_tensor
    ends in. Measured (benchmarks/commands/graph_call.py): ~60-80 us less CPU per batch-1 call than call_flat with
    convert_to_tensor, which is a third of the model call for the exported models.

    Falls back to the public keyword call when the private attributes are missing (another TF version) or
    when the fast path disagrees with it on a probe input.
    """

    def __init__(self, concrete: Any, spec: SignatureSpec, label: str) -> None:
        import tensorflow as tf

        self._tf = tf
        self._concrete = concrete
        self._spec = spec
        self._fast: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
        try:
            keywords = list(concrete._arg_keywords)
            atomic = concrete._inference_function
            captured = list(concrete.captured_inputs)
            out_names = sorted(concrete.structured_outputs)  # nest.flatten orders dict keys by sorted key
            dtypes = [tf.as_dtype(spec.inputs[k].dtype_enum) for k in keywords]
            if set(keywords) != set(spec.inputs):
                raise ValueError(f"argument names {keywords} differ from signature inputs {sorted(spec.inputs)}")

            from tensorflow.python import pywrap_tfe
            from tensorflow.python.eager import context, core
            from tensorflow.python.framework import ops

            ctx = context.context()
            ctx.ensure_initialized()
            handle, device = ctx._handle, ctx.device_name
            fn_name = atomic.name.decode() if isinstance(atomic.name, bytes) else str(atomic.name)
            n_out = len(atomic.function_type.flat_outputs)
            if n_out != len(out_names):
                raise ValueError(f"{n_out} flat outputs but {len(out_names)} named outputs")
            # Context.call_function's attrs (executor_type, config_proto), fixed after the threads are set.
            attrs = tuple(x for kv in ctx.function_call_options.as_attrs().items() for x in kv)
            np_dtypes = [spec.inputs[k].np_dtype for k in keywords]
            enums = [d.as_datatype_enum for d in dtypes]
            EagerTensor, execute, status_to_exception = ops.EagerTensor, pywrap_tfe.TFE_Py_Execute, core._status_to_exception
            not_ok = core._NotOkStatusException
            arg_plan = list(zip(keywords, np_dtypes, enums))

            def fast(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                args = [EagerTensor(np.asarray(inputs[k], dtype=nd), device, e) for k, nd, e in arg_plan]
                try:
                    outs = execute(handle, device, fn_name, args + captured, attrs, n_out)
                except not_ok as exc:  # what execute.execute does: the matching tf.errors class
                    raise status_to_exception(exc) from None
                return {n: as_output(o.numpy()) for n, o in zip(out_names, outs)}

            if not _same_answer(fast, self._public, _probe_inputs(spec)):
                raise ValueError("fast path output differs from the public signature call")
            self._fast = fast
        except Exception as exc:  # any surprise: keep the always-correct public call
            log.warning("%s: using the public signature call (flat call unavailable: %s)", label, exc)

    def _public(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        kwargs = {k: tf.convert_to_tensor(v, dtype=tf.as_dtype(self._spec.inputs[k].dtype_enum)) for k, v in inputs.items()}
        return {k: as_output(v.numpy()) for k, v in self._concrete(**kwargs).items()}

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._fast(inputs) if self._fast is not None else self._public(inputs)


class Runner:
    """Base: signature specs + run(); subclasses fill `_calls` (signature name -> callable)."""

    mode = "base"

    def __init__(self, version_dir: Path, label: str) -> None:
        self.version_dir = Path(version_dir)
        self.label = label
        meta = read_serve_meta_graph(self.version_dir)
        self.signature_defs = dict(meta.signature_def)
        self.is_tf1 = is_tf1_meta_graph(meta)
        self.signatures = serving_signatures(self.signature_defs, strict_shapes=not self.is_tf1)
        if not self.signatures:
            raise invalid_argument(f"{self.version_dir}: the SavedModel has no serving signatures")
        self._calls: dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = {}

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        call = self._calls.get(signature)
        if call is None:
            raise invalid_argument(f'Serving signature name: "{signature}" not found in signature def')
        try:
            return call(inputs)
        except ServingError:
            raise
        except Exception as exc:
            # TF raises InvalidArgumentError for shape/dtype problems it detects itself; report, never crash.
            import tensorflow as tf

            if isinstance(exc, (tf.errors.InvalidArgumentError, ValueError, TypeError)):
                raise invalid_argument(f"{signature}: {type(exc).__name__}: {_first_line(exc)}") from None
            raise internal(f"{signature}: model execution failed: {type(exc).__name__}: {_first_line(exc)}") from None

    def close(self) -> None:
        self._calls.clear()


# Where TensorFlow says which node/function failed: "[[{{node x}}]]", "[Op:f]", "{{function_node f}}".
_NODE_SUFFIX = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]|\s*\[Op:[^\]]*\]|\{\{function_node [^}]*\}\}\s*")


def _first_line(exc: Exception) -> str:
    """The graph's own words: TensorFlow's runtime errors open with "Graph execution error:" and the Python
    stack where the op was defined; the message proper is the unindented text after it."""
    lines = [line for line in _NODE_SUFFIX.sub("", str(exc)).splitlines() if line.strip()]
    kept = [line.strip() for line in lines if not line[0].isspace()
            and not line.startswith(("Graph execution error", "Detected at node", "Node: ", "Original stack trace",
                                     "<stack traces unavailable>"))]
    return " ".join(kept) if kept else (lines[0].strip() if lines else type(exc).__name__)


class GraphRunner(Runner):
    """Each signature through a v1 Session (executor "session", TF Serving's route) where the version loads into
    one and the Session answers a probe input as the signature function does; otherwise, or with executor
    "function", through the TF2 signature function (_FlatCall).

    Why the Session: with TF's inter-op work on the calling thread (session_bundle.session_config) a batch-1 call
    of the exported models costs less than the eager function execute, most of all after an idle gap, which is
    what a served stream sees (docs/performance.md, "Graph execution: v1 Session or TF2 function"). Keras 3 models
    saved by tf.saved_model.save without an ExportArchive may not restore in a Session: those keep the function.
    When every signature runs in the Session, the TF2 objects are released so the version is held once.
    """

    mode = "graph"

    def __init__(self, version_dir: Path, label: str, executor: str = "session") -> None:
        super().__init__(version_dir, label)
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(self.version_dir), tags=[SERVE_TAG])
        self._bundle: Any = None
        functions = {name: _FlatCall(self._loaded.signatures[name], spec, f"{label} {name}")
                     for name, spec in self.signatures.items()}
        self._calls.update(functions)
        # signature -> "session" | "function": what each call runs through
        self.executors: dict[str, str] = dict.fromkeys(functions, "function")
        if executor == "session":
            self._use_session(functions)

    def _use_session(self, functions: dict[str, "_FlatCall"]) -> None:
        from serving.execution.session_bundle import SessionBundle

        try:
            bundle = SessionBundle(self.version_dir)
        except Exception as exc:  # e.g. Keras 3 resource variables a v1 Session cannot restore
            log.info("%s: signature function (the version does not load into a v1 Session: %s: %s)", self.label,
                     type(exc).__name__, _first_line(exc)[:200])
            return
        for name, spec in self.signatures.items():
            try:
                call = bundle.callable(name)
                probe = _probe_inputs(spec)
                if not _same_answer(call, functions[name], probe):
                    call(probe)  # the Session's own error, when it has one, says more than "differs"
                    raise ValueError("its answer to a probe input differs from the signature function's")
            except Exception as exc:  # e.g. Keras 3 variables the Session did not restore: keep the function
                log.info("%s %s: signature function (v1 Session: %s: %s)", self.label, name, type(exc).__name__,
                         _first_line(exc)[:200])
                continue
            self._calls[name], self.executors[name] = call, "session"
        if "session" not in self.executors.values():
            bundle.close()
            return
        self._bundle = bundle
        if "function" not in self.executors.values():
            self._loaded = None  # no call left on the TF2 objects: hold the version once
        log.info("%s: %s", self.label, ", ".join(f"{k} via {v}" for k, v in sorted(self.executors.items())))

    def close(self) -> None:
        super().close()
        self._loaded = None
        if self._bundle is not None:
            self._bundle.close()
            self._bundle = None


class XlaRunner(Runner):
    """Each signature inside tf.function(jit_compile=True); a signature XLA cannot compile (string ops such as
    tf.Example parsing have no XLA kernels) runs as in graph mode, with a warning, so the version still loads."""

    mode = "xla"

    def __init__(self, version_dir: Path, label: str) -> None:
        super().__init__(version_dir, label)
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(self.version_dir), tags=[SERVE_TAG])
        for name, spec in self.signatures.items():
            sig_fn = self._loaded.signatures[name]
            if any(t.is_string for t in spec.inputs.values()):  # XLA has no string tensors at all
                log.info("%s %s: string inputs, not compiled with XLA; running it as in graph mode", label, name)
                self._calls[name] = _FlatCall(sig_fn, spec, f"{label} {name}")
                continue
            try:
                call = self._jit_call(tf, sig_fn, spec, f"{label} {name} (xla)")
                call(_probe_inputs(spec))
            except Exception as exc:
                log.warning("%s %s: not compiled with XLA (%s: %s); running it as in graph mode", label, name,
                            type(exc).__name__, _first_line(exc))
                call = _FlatCall(sig_fn, spec, f"{label} {name}")
            self._calls[name] = call

    @staticmethod
    def _jit_call(tf: Any, sig_fn: Any, spec: SignatureSpec, label: str) -> _FlatCall:
        jitted = tf.function(lambda _f=sig_fn, **kw: _f(**kw), jit_compile=True)
        # A TF1 signature keeps its relaxed shapes: any rank (XLA compiles once per shape it sees).
        specs = {k: tf.TensorSpec(None if t.shape is None or not spec.strict_shapes else
                                  [None if d < 0 else d for d in t.shape], tf.as_dtype(t.dtype_enum), name=k)
                 for k, t in spec.inputs.items()}
        return _FlatCall(jitted.get_concrete_function(**specs), spec, label)

    def close(self) -> None:
        super().close()
        self._loaded = None


class EagerRunner(Runner):
    mode = "eager"

    def __init__(self, version_dir: Path, label: str) -> None:
        from export.contract import KERAS_FILE, keras_path, manifest_path, read_manifest
        from export.endpoints import version_endpoints
        from export.keras_source import load_keras_file
        from export.pipeline import ExportError

        if not keras_path(version_dir).is_file():
            raise failed_precondition(f"eager mode needs the Keras model file {KERAS_FILE} and {version_dir} has "
                                      "none (serve this model in graph or xla mode)")
        super().__init__(version_dir, label)
        import tensorflow as tf

        self._tf = tf
        try:  # custom classes come from the server's --import modules
            self._model = load_keras_file(keras_path(self.version_dir))
        except ExportError as exc:
            raise failed_precondition(f"eager mode: {exc}") from None
        manifest = read_manifest(self.version_dir) if manifest_path(self.version_dir).is_file() else {}
        try:
            declared = {ep.signature: ep for ep in version_endpoints(manifest, self._model)}
        except TypeError as exc:
            raise failed_precondition(f"eager mode: {exc}") from None
        for name, spec in self.signatures.items():
            if name not in declared:
                raise failed_precondition(f"eager mode: signature '{name}' is not among the endpoints "
                                          f"{type(self._model).__name__} was exported with ({', '.join(sorted(declared))})")
            self._calls[name] = self._make_call(declared[name], spec)

    def _make_call(self, endpoint: Any, spec: SignatureSpec) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """The model method of one signature, checked against the SignatureDef's tensor names."""
        if set(spec.inputs) != set(endpoint.input_names) or set(spec.outputs) != set(endpoint.output_names):
            raise failed_precondition(
                f"eager mode: signature '{spec.name}' has inputs {sorted(spec.inputs)} and outputs "
                f"{sorted(spec.outputs)}, its endpoint {sorted(endpoint.input_names)} and {sorted(endpoint.output_names)}")
        tf = self._tf
        dtypes = {name: tf.as_dtype(t.dtype_enum) for name, t in spec.inputs.items()}
        try:
            target = endpoint.bind(self._model)
        except TypeError as exc:
            raise failed_precondition(f"eager mode: {exc}") from None

        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = target({k: tf.convert_to_tensor(v, dtype=dtypes[k]) for k, v in inputs.items()})
            return {k: np.asarray(v) for k, v in result.items()}

        return call

    def close(self) -> None:
        super().close()
        self._model = None


RUNNERS: dict[str, type[Runner]] = {"graph": GraphRunner, "xla": XlaRunner, "eager": EagerRunner}


def load_runner(mode: str, version_dir: Path, label: str, graph_executor: str = "session") -> Runner:
    if mode not in RUNNERS:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(RUNNERS)}")
    try:
        if mode == "graph":
            return GraphRunner(version_dir, label, graph_executor)
        return RUNNERS[mode](version_dir, label)
    except ServingError:
        raise
    except Exception as exc:  # TF2's loader could not build a signature: TF1 models load as a Session does
        if mode == "eager":
            raise
        from serving.execution.session_bundle import load_tf1_fallback

        return load_tf1_fallback(version_dir, label, exc)
