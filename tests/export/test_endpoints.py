"""export/endpoints.py: each model declares its serving endpoints once; export traces exactly those."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.contract import DEFAULT_SIGNATURE, PREDICT_METHOD_NAME
from export.endpoints import (FEATURES, MODEL_CALL, PREDICT, Endpoint, TensorDecl, TensorInfo, endpoints_of,
                              expected_signatures)


class _Plain:
    """A stand-in model without TensorFlow: enough to check how a declaration maps signatures to methods."""

    ENDPOINTS = (
        PREDICT,
        Endpoint("pair", "pair", (TensorDecl("low", (None,)), TensorDecl("high", (None,)))),
        Endpoint("alias", "scaled", (TensorDecl("scaled", (None, FEATURES)),)),
    )

    def __call__(self, x, training=None):
        assert training is False  # served endpoints always call the model for inference
        return x.sum(axis=1, keepdims=True)

    def pair(self, x):
        return {"high": x.max(axis=1), "low": x.min(axis=1), "ignored": x}

    def scaled(self, x):
        return 2 * x


def test_signature_maps_to_the_declared_method_not_a_same_named_one() -> None:
    model, x = _Plain(), np.array([[1.0, 5.0], [3.0, 2.0]])
    by_name = {ep.signature: ep for ep in endpoints_of(model)}
    assert list(by_name) == [DEFAULT_SIGNATURE, "pair", "alias"]
    np.testing.assert_array_equal(by_name[DEFAULT_SIGNATURE].bind(model)({"inputs": x})["predictions"], [[6.0], [5.0]])
    pair = by_name["pair"].bind(model)({"inputs": x})
    assert list(pair) == ["low", "high"]  # the declared outputs, in declared order, nothing else
    np.testing.assert_array_equal(pair["high"], [5.0, 3.0])
    np.testing.assert_array_equal(by_name["alias"].bind(model)({"inputs": x})["scaled"], 2 * x)


def test_expected_signatures_resolve_the_input_width() -> None:
    sigs = expected_signatures(endpoints_of(_Plain), 7)
    assert sigs[DEFAULT_SIGNATURE].inputs == {"inputs": TensorInfo("float32", [None, 7])}
    assert sigs[DEFAULT_SIGNATURE].outputs == {"predictions": TensorInfo("float32", [None, 1])}
    assert sigs["alias"].outputs == {"scaled": TensorInfo("float32", [None, 7])}
    assert all(ep.method_name == PREDICT_METHOD_NAME for ep in _Plain.ENDPOINTS)


def test_declaration_mistakes_are_named() -> None:
    with pytest.raises(TypeError, match="declares no serving endpoints"):
        endpoints_of(object())
    with pytest.raises(TypeError, match="no method 'missing'"):
        Endpoint("s", "missing", (TensorDecl("y", (None,)),)).bind(_Plain())
    x = np.ones((1, 2))
    with pytest.raises(KeyError, match="nope"):
        Endpoint("s", "pair", (TensorDecl("nope", (None,)),)).bind(_Plain())({"inputs": x})
    with pytest.raises(TypeError, match="expected a dict"):
        Endpoint("s", MODEL_CALL, (TensorDecl("a", (None,)), TensorDecl("b", (None,)))).bind(_Plain())({"inputs": x})


def test_every_project_model_declares_the_default_signature_once() -> None:
    from export.models import MODEL_CLASSES, ReconstructingRegressor

    for cls in MODEL_CLASSES.values():
        names = [ep.signature for ep in endpoints_of(cls)]
        assert names[0] == DEFAULT_SIGNATURE and len(set(names)) == len(names), cls.__name__
    assert [ep.signature for ep in endpoints_of(ReconstructingRegressor)] == [DEFAULT_SIGNATURE, "reconstruct"]


def test_export_traces_exactly_the_declared_endpoints(tmp_path: Path) -> None:
    """A new signature is one more Endpoint on the class: export writes it with the declared tensor names."""
    import tensorflow as tf

    from export.models import ResidualRegressor, build_model
    from export.signatures import write_saved_model

    class WithHalf(ResidualRegressor):
        ENDPOINTS = (PREDICT, Endpoint("half", "half", (TensorDecl("halved", (None, 1)),)))

        def half(self, inputs):
            return self(inputs, training=False) / 2.0

    base = build_model("residual_regressor", 4)
    model = WithHalf(output_dim=1, name="with_half")
    model(np.zeros((1, 4), np.float32))
    model.set_weights(base.get_weights())
    write_saved_model(model, 4, tmp_path / "sm")

    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert set(loaded.signatures) == {DEFAULT_SIGNATURE, "half"}
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    half = loaded.signatures["half"](inputs=tf.constant(x))
    assert set(half) == {"halved"}
    full = loaded.signatures[DEFAULT_SIGNATURE](inputs=tf.constant(x))["predictions"].numpy()
    np.testing.assert_allclose(half["halved"].numpy(), full / 2.0, rtol=1e-6)
    _, inputs = loaded.signatures["half"].structured_input_signature
    assert list(inputs) == ["inputs"] and inputs["inputs"].shape.as_list() == [None, 4]
