"""The three ways a loaded version runs a signature: graph, xla, eager.

All three expose `run(signature_name, {input: ndarray}) -> {output: ndarray}` and read the signature
definitions (names, dtypes, shapes) from the SavedModel's MetaGraphDef, so validation and metadata are the
same whatever the mode.

graph  The restored signature ConcreteFunction, called through its flat entry point. Measured on this
       machine (benchmarks/commands/graph_call.py, numbers in its output): `signatures[name](**kw)` ~310 us,
       `ConcreteFunction._call_flat` ~210 us, the AtomicFunction's `call_flat` ~120 us, tf.function wrapping
       ~500 us per batch-1 call; the v1 Session loader (what TF Serving's C++ does) cannot restore Keras 3
       resource variables from Python. The server goes one level below call_flat, to the eager execute of
       the function itself (see _FlatCall), and runs with 1 intra-op + 1 inter-op thread on 2 cores
       (serving.server.tf_thread_counts). Other routes tried and not kept (PERFORMANCE.md): a frozen graph
       (variables folded to constants) in a v1 Session, ~370-490 us; SINGLE_THREADED_EXECUTOR, no better.
       The flat entry point uses private attributes, so at load it is checked against the public call on a
       probe input and the public call is used if anything differs.
xla    The same signature function inside tf.function(jit_compile=True), called the same fast way; XLA
       compiles once per distinct input shape (warmup covers the common ones).
eager  The Keras model rebuilt from assets.extra/model.keras (export.contract.load_keras_model) and called as a
       plain Python function in eager mode: each signature runs the model method its model class declares for
       it (export/endpoints.py: serving_default -> model(x, training=False), reconstruct -> model.reconstruct).
       A version without a Keras file, or whose signatures its class does not declare, is refused.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from serving.errors import ServingError, failed_precondition, internal, invalid_argument, not_found
from serving.tensors import SignatureSpec, signature_spec

log = logging.getLogger("serving.runners")

DEFAULT_SIGNATURE = "serving_default"
INIT_OP_SIGNATURE = "__saved_model_init_op"
SERVE_TAG = "serve"


def read_signature_defs(version_dir: Path) -> dict[str, Any]:
    """SignatureDef protos of the 'serve' MetaGraph, straight from saved_model.pb (what TF Serving reports)."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = Path(version_dir) / "saved_model.pb"
    if not pb.is_file():
        raise not_found(f"SavedModel not found: no saved_model.pb in {version_dir}")
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError; keep the message whatever the type
        raise invalid_argument(f"{pb} is not a valid SavedModel proto (truncated or corrupt?): {exc}") from None
    for meta in saved.meta_graphs:
        if SERVE_TAG in meta.meta_info_def.tags:
            return dict(meta.signature_def)
    raise invalid_argument(f"{pb} has no MetaGraph tagged '{SERVE_TAG}'")


def serving_signatures(signature_defs: dict[str, Any]) -> dict[str, SignatureSpec]:
    return {k: signature_spec(k, v) for k, v in signature_defs.items() if k != INIT_OP_SIGNATURE}


def _probe_inputs(spec: SignatureSpec, rows: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name, t in spec.inputs.items():
        shape = tuple(rows if d < 0 else d for d in (t.shape or (rows,)))
        out[name] = rng.standard_normal(shape).astype(t.np_dtype)
    return out


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
            dtypes = [tf.as_dtype(spec.inputs[k].np_dtype) for k in keywords]
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
                return {n: o.numpy() for n, o in zip(out_names, outs)}

            probe = _probe_inputs(spec)
            got, want = fast(probe), self._public(probe)
            if set(got) != set(want) or any(not np.allclose(got[k], want[k], atol=1e-6, equal_nan=True) for k in want):
                raise ValueError("fast path output differs from the public signature call")
            self._fast = fast
        except Exception as exc:  # any surprise: keep the always-correct public call
            log.warning("%s: using the public signature call (flat call unavailable: %s)", label, exc)

    def _public(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        kwargs = {k: tf.convert_to_tensor(v, dtype=tf.as_dtype(self._spec.inputs[k].np_dtype)) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in self._concrete(**kwargs).items()}

    @property
    def is_fast(self) -> bool:
        return self._fast is not None

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._fast(inputs) if self._fast is not None else self._public(inputs)


class Runner:
    """Base: signature specs + run(); subclasses fill `_calls` (signature name -> callable)."""

    mode = "base"

    def __init__(self, version_dir: Path, label: str) -> None:
        self.version_dir = Path(version_dir)
        self.label = label
        self.signature_defs = read_signature_defs(self.version_dir)
        self.signatures = serving_signatures(self.signature_defs)
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


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class GraphRunner(Runner):
    mode = "graph"

    def __init__(self, version_dir: Path, label: str) -> None:
        super().__init__(version_dir, label)
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(self.version_dir), tags=[SERVE_TAG])
        self.flat_calls: dict[str, _FlatCall] = {}
        for name, spec in self.signatures.items():
            call = _FlatCall(self._loaded.signatures[name], spec, f"{label} {name}")
            self.flat_calls[name] = call
            self._calls[name] = call

    def close(self) -> None:
        super().close()
        self.flat_calls.clear()
        self._loaded = None


class XlaRunner(Runner):
    mode = "xla"

    def __init__(self, version_dir: Path, label: str) -> None:
        super().__init__(version_dir, label)
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(self.version_dir), tags=[SERVE_TAG])
        for name, spec in self.signatures.items():
            sig_fn = self._loaded.signatures[name]
            jitted = tf.function(lambda _f=sig_fn, **kw: _f(**kw), jit_compile=True)
            specs = {k: tf.TensorSpec([None if d < 0 else d for d in (t.shape or ())] if t.shape is not None else None,
                                      tf.as_dtype(t.np_dtype), name=k) for k, t in spec.inputs.items()}
            concrete = jitted.get_concrete_function(**specs)
            self._calls[name] = _FlatCall(concrete, spec, f"{label} {name} (xla)")

    def close(self) -> None:
        super().close()
        self._loaded = None


class EagerRunner(Runner):
    mode = "eager"

    def __init__(self, version_dir: Path, label: str) -> None:
        from export.contract import KERAS_FILE, keras_path, load_keras_model
        from export.endpoints import endpoints_of

        if not keras_path(version_dir).is_file():
            raise failed_precondition(f"eager mode needs the Keras model file {KERAS_FILE} and {version_dir} has "
                                      "none (serve this model in graph or xla mode)")
        super().__init__(version_dir, label)
        import tensorflow as tf

        self._tf = tf
        self._model = load_keras_model(self.version_dir)
        try:
            declared = {ep.signature: ep for ep in endpoints_of(self._model)}
        except TypeError as exc:
            raise failed_precondition(f"eager mode: {exc}") from None
        for name, spec in self.signatures.items():
            if name not in declared:
                raise failed_precondition(f"eager mode: signature '{name}' is not among the endpoints "
                                          f"{type(self._model).__name__} declares ({', '.join(sorted(declared))})")
            self._calls[name] = self._make_call(declared[name], spec)

    def _make_call(self, endpoint: Any, spec: SignatureSpec) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """The declared model method of one signature, checked against the SignatureDef's tensor names."""
        if set(spec.inputs) != {endpoint.input.name} or set(spec.outputs) != set(endpoint.output_names):
            raise failed_precondition(
                f"eager mode: signature '{spec.name}' has inputs {sorted(spec.inputs)} and outputs "
                f"{sorted(spec.outputs)}, its declaration {[endpoint.input.name]} and {sorted(endpoint.output_names)}")
        tf, in_name = self._tf, endpoint.input.name
        dtype = tf.as_dtype(spec.inputs[in_name].np_dtype)
        try:
            target = endpoint.bind(self._model)
        except TypeError as exc:
            raise failed_precondition(f"eager mode: {exc}") from None

        def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = target(tf.convert_to_tensor(inputs[in_name], dtype=dtype))
            return {k: np.asarray(v) for k, v in result.items()}

        return call

    def close(self) -> None:
        super().close()
        self._model = None


RUNNERS: dict[str, type[Runner]] = {"graph": GraphRunner, "xla": XlaRunner, "eager": EagerRunner}


def load_runner(mode: str, version_dir: Path, label: str) -> Runner:
    if mode not in RUNNERS:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(RUNNERS)}")
    return RUNNERS[mode](version_dir, label)
