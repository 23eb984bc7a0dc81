"""Serving endpoints, declared once per model class: what each SavedModel signature is and which model method
computes it.

A model class lists its endpoints in ``ENDPOINTS`` (export/models.py). Everything that needs to know a
signature reads that declaration: export traces each endpoint into a signature (export/signatures.py) and
writes its tensor names, dtypes and shapes into the manifest, verification compares each signature with the
method it was traced from (export/verify.py), and the embedded server's eager mode calls that method for that
signature (serving/execution/runners.py, EagerRunner). Adding a served signature is one more ``Endpoint`` on the class.

Nothing here imports TensorFlow: the server reads declarations without paying for an export.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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


@dataclass(frozen=True)
class Endpoint:
    """One serving signature: its name, SignatureDef method name, the model method behind it, its tensors.

    ``method`` is the attribute of the model that computes the signature (MODEL_CALL for the model itself). It
    returns either one tensor (the endpoint then has exactly one output) or a dict holding every output.
    """

    signature: str
    method: str
    outputs: tuple[TensorDecl, ...]
    input: TensorDecl = INPUTS
    method_name: str = PREDICT_METHOD_NAME

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def expected(self, n_features: int) -> SignatureInfo:
        return SignatureInfo({self.input.name: self.input.info(n_features)},
                             {t.name: t.info(n_features) for t in self.outputs})

    def bind(self, model: Any) -> Callable[[Any], dict[str, Any]]:
        """The endpoint as a function of ``model``: one input tensor in, {output name: tensor} out."""
        if self.method == MODEL_CALL:
            target: Callable[[Any], Any] = lambda x: model(x, training=False)  # noqa: E731
        else:
            target = getattr(model, self.method, None)
            if not callable(target):
                raise TypeError(f"{type(model).__name__} has no method {self.method!r} "
                                f"(declared for signature {self.signature!r})")
        names = self.output_names

        def call(inputs: Any) -> dict[str, Any]:
            result = target(inputs)
            if isinstance(result, dict):
                missing = [k for k in names if k not in result]
                if missing:
                    raise KeyError(f"{self.signature}: {self.method} returned no {missing} (keys: {sorted(result)})")
                return {k: result[k] for k in names}
            if len(names) == 1:
                return {names[0]: result}
            raise TypeError(f"{self.signature}: {self.method} returned {type(result).__name__}, "
                            f"expected a dict with {list(names)}")

        return call


# The endpoint every model serves: the prediction, one value per row.
PREDICT = Endpoint(DEFAULT_SIGNATURE, MODEL_CALL, (TensorDecl("predictions", (None, 1)),))


def endpoints_of(model: Any) -> tuple[Endpoint, ...]:
    """The endpoints a model (instance or class) declares; TypeError when it declares none."""
    declared = getattr(model, "ENDPOINTS", None)
    if not declared:
        name = model.__name__ if isinstance(model, type) else type(model).__name__
        raise TypeError(f"{name} declares no serving endpoints (an ENDPOINTS tuple of export.endpoints.Endpoint)")
    return tuple(declared)


def expected_signatures(model: Any, n_features: int) -> dict[str, SignatureInfo]:
    """What the export promises, per signature: written to the manifest and checked by verify."""
    return {ep.signature: ep.expected(n_features) for ep in endpoints_of(model)}
