"""Serving endpoints, declared once per model class: what each SavedModel signature is and which model method
computes it.

A project model class lists its endpoints in ``ENDPOINTS`` (export/models.py); a Keras model brought by the
user gets them from its own inputs (export/keras_source.py). Export traces each endpoint into a signature
(export/signatures.py) and records the endpoints with their tensor names, dtypes and shapes in the manifest;
verification compares each signature with the method it was traced from (export/verify.py), and the embedded
server's eager mode calls that method for that signature (serving/execution/runners.py, EagerRunner). Adding
a served signature is one more ``Endpoint`` on the class.

Nothing here imports TensorFlow: the server reads declarations without paying for an export.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping

from export.contract import DEFAULT_SIGNATURE, PREDICT_METHOD_NAME

MODEL_CALL = "__call__"  # the model itself, called for inference: model(x, training=False)
FEATURES = "n_features"  # stands for the model's input width in a declared shape


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the manifest records it: dtype name and shape (None = any size)."""

    dtype: str
    shape: list[int | None]


@dataclass(frozen=True)
class SignatureInfo:
    """A signature as the manifest records it (what export promises and verify checks)."""

    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


@dataclass(frozen=True)
class TensorDecl:
    """One named tensor of an endpoint. In ``shape``, None is any size (the batch) and FEATURES the input width."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str = "float32"

    def info(self, n_features: int) -> TensorInfo:
        return TensorInfo(self.dtype, [n_features if d == FEATURES else d for d in self.shape])


INPUTS = TensorDecl("inputs", (None, FEATURES))  # raw feature values, one row per example

# How a model method takes its inputs: one tensor, a list in input order, or a dict by input name (what a Keras
# functional model built from a tensor, a list or a dict of keras.Input expects).
SINGLE, LIST, DICT = "single", "list", "dict"


@dataclass(frozen=True)
class Endpoint:
    """One serving signature: its name, SignatureDef method name, the model method behind it, its tensors.

    ``method`` is the attribute of the model that computes the signature (MODEL_CALL for the model itself). It
    takes the inputs as ``structure`` says and returns one tensor, a list of tensors (named by ``outputs`` in
    order) or a dict holding every output. A model traced from its own inputs (export/keras_source.py) learns
    its outputs from the trace: an endpoint with no outputs yet names them with :func:`name_outputs`.
    """

    signature: str
    method: str
    outputs: tuple[TensorDecl, ...]
    inputs: tuple[TensorDecl, ...] = (INPUTS,)
    method_name: str = PREDICT_METHOD_NAME
    structure: str = SINGLE

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def expected(self, n_features: int = 0) -> SignatureInfo:
        return SignatureInfo({t.name: t.info(n_features) for t in self.inputs},
                             {t.name: t.info(n_features) for t in self.outputs})

    def pack(self, inputs: Mapping[str, Any]) -> Any:
        """The method's argument from {input name: tensor}."""
        if self.structure == SINGLE:
            return inputs[self.inputs[0].name]
        if self.structure == LIST:
            return [inputs[n] for n in self.input_names]
        return {n: inputs[n] for n in self.input_names}

    def bind(self, model: Any) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        """The endpoint as a function of ``model``: {input name: tensor} in, {output name: tensor} out."""
        if self.method == MODEL_CALL:
            target: Callable[[Any], Any] = lambda x: model(x, training=False)  # noqa: E731
        else:
            target = getattr(model, self.method, None)
            if not callable(target):
                raise TypeError(f"{type(model).__name__} has no method {self.method!r} "
                                f"(declared for signature {self.signature!r})")
        return lambda inputs: name_outputs(self, target(self.pack(inputs)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Endpoint":
        """Inverse of :meth:`to_dict` (the manifest's JSON turns tuples into lists)."""
        tensors = lambda ts: tuple(TensorDecl(t["name"], tuple(t["shape"]), t["dtype"]) for t in ts)  # noqa: E731
        return cls(d["signature"], d["method"], tensors(d["outputs"]), tensors(d["inputs"]), d["method_name"],
                   d.get("structure", SINGLE))


def name_outputs(endpoint: Endpoint, result: Any) -> dict[str, Any]:
    """A method's result as {output name: tensor}: the declared outputs, or, before they are known, the names
    Keras' own export gives (dict keys; output_0, output_1, ... for one tensor or a list)."""
    names = endpoint.output_names
    if isinstance(result, Mapping):
        missing = [k for k in names if k not in result]
        if missing:
            raise KeyError(f"{endpoint.signature}: {endpoint.method} returned no {missing} (keys: {sorted(result)})")
        return {k: result[k] for k in names or sorted(result)}
    results = list(result) if isinstance(result, (list, tuple)) else [result]
    if not names:
        return {f"output_{i}": r for i, r in enumerate(results)}
    if len(results) == len(names) and (len(names) == 1 or isinstance(result, (list, tuple))):
        return dict(zip(names, results))
    raise TypeError(f"{endpoint.signature}: {endpoint.method} returned {type(result).__name__}, "
                    f"expected a dict with {list(names)}")


# The endpoint every model serves: the prediction, one value per row.
PREDICT = Endpoint(DEFAULT_SIGNATURE, MODEL_CALL, (TensorDecl("predictions", (None, 1)),))


def endpoints_of(model: Any) -> tuple[Endpoint, ...]:
    """The endpoints a model (instance or class) declares; TypeError when it declares none."""
    declared = getattr(model, "ENDPOINTS", None)
    if not declared:
        name = model.__name__ if isinstance(model, type) else type(model).__name__
        raise TypeError(f"{name} declares no serving endpoints (an ENDPOINTS tuple of export.endpoints.Endpoint)")
    return tuple(declared)


def expected_signatures(endpoints: Iterable[Endpoint], n_features: int = 0) -> dict[str, SignatureInfo]:
    """What the export promises, per signature: written to the manifest and checked by verify."""
    return {ep.signature: ep.expected(n_features) for ep in endpoints}


def version_endpoints(manifest: Mapping[str, Any], model: Any) -> tuple[Endpoint, ...]:
    """The endpoints an exported version was traced from: recorded in its manifest, else (versions exported
    before the manifest kept them) declared by the model's class."""
    if manifest.get("endpoints"):
        return tuple(Endpoint.from_dict(d) for d in manifest["endpoints"])
    return endpoints_of(model)
