"""The user's subclassed Keras models, made correct and serialisable.

Every class is registered with Keras (``get_config``) so that a trained model round-trips through a
``.keras`` file: the embedded server's *eager* mode rebuilds the model from that file with the very
weights the SavedModel carries.

Inputs are raw feature values. Each regressor standardises its inputs and de-standardises its output
inside ``call`` so that scaling is part of every exported graph and clients never need to know it.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from export.catalog import MODEL_NAMES  # re-exported
from export.endpoints import FEATURES, PREDICT, Endpoint, TensorDecl

PACKAGE = "tfserve_bench"

# Weight of the reconstruction loss that ReconstructingRegressor adds through add_loss.
RECONSTRUCTION_WEIGHT = 0.05


# ----------------------------------------------------------------------------------------------------
# Numerically stable softplus with a hand-written gradient
# ----------------------------------------------------------------------------------------------------
@tf.custom_gradient
def stable_softplus(z: tf.Tensor) -> tuple[tf.Tensor, Any]:
    """softplus(z) = log(1 + exp(z)), finite with a finite gradient for any finite float32 z.

    The textbook ``log(exp(z) + 1)`` overflows to inf for z >~ 89 in float32 and its autodiff gradient is
    NaN at z = 100 (inf / inf). Rewriting it as ``max(z, 0) + log1p(exp(-|z|))`` only ever exponentiates a
    non-positive number, so neither the value nor the derivative can overflow.
    """
    z = tf.convert_to_tensor(z)
    exp_neg_abs = tf.exp(-tf.abs(z))  # in (0, 1]: cannot overflow
    value = tf.maximum(z, 0.0) + tf.math.log1p(exp_neg_abs)

    def grad(upstream: tf.Tensor) -> tf.Tensor:
        # d softplus / dz = sigmoid(z), written so that exp() again only sees -|z|:
        #   z >= 0: 1 / (1 + e^-z)      z < 0: e^z / (1 + e^z) = e^-|z| / (1 + e^-|z|)
        sigmoid = tf.where(z >= 0, 1.0 / (1.0 + exp_neg_abs), exp_neg_abs / (1.0 + exp_neg_abs))
        return upstream * sigmoid

    # Return the function itself: calling grad(...) here is a common transcription bug.
    return value, grad


def naive_softplus(z: tf.Tensor) -> tf.Tensor:
    """The textbook softplus, kept only so tests can show what goes wrong with it."""
    return tf.math.log(tf.exp(z) + 1.0)


# ----------------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------------
def _as_list(values: Sequence[float] | np.ndarray | None) -> list[float] | None:
    """Plain floats, so the values survive get_config / a .keras file as JSON."""
    if values is None:
        return None
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


class _ScaledRegressor(keras.Model):
    """Base for the regressors: raw features in, raw target out; scaling lives in the graph."""

    ENDPOINTS: tuple[Endpoint, ...] = (PREDICT,)  # the signatures this model serves (export/endpoints.py)

    def __init__(
        self,
        output_dim: int = 1,
        feature_mean: Sequence[float] | None = None,
        feature_std: Sequence[float] | None = None,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.feature_mean = _as_list(feature_mean)
        self.feature_std = _as_list(feature_std)
        if (self.feature_mean is None) != (self.feature_std is None):
            raise ValueError("feature_mean and feature_std must be given together")
        if self.feature_std is not None and min(self.feature_std) <= 0:
            raise ValueError("feature_std must be positive")
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)

    def standardize(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = tf.cast(inputs, self.compute_dtype)
        if self.feature_mean is None:
            return inputs
        return (inputs - tf.constant(self.feature_mean, self.compute_dtype)) / tf.constant(
            self.feature_std, self.compute_dtype
        )

    def unstandardize_target(self, y_scaled: tf.Tensor) -> tf.Tensor:
        return y_scaled * self.target_std + self.target_mean

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            feature_mean=self.feature_mean,
            feature_std=self.feature_std,
            target_mean=self.target_mean,
            target_std=self.target_std,
        )
        return config


# ----------------------------------------------------------------------------------------------------
# Residual regressor
# ----------------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(keras.layers.Layer):
    """``n_layers`` Dense(elu, he_normal) layers whose output is added back to the block's input."""

    def __init__(self, n_layers: int, n_neurons: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_layers = int(n_layers)
        self.n_neurons = int(n_neurons)
        self.hidden = [
            keras.layers.Dense(self.n_neurons, activation="elu", kernel_initializer="he_normal")
            for _ in range(self.n_layers)
        ]

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        z = inputs
        for layer in self.hidden:
            z = layer(z)
        return inputs + z  # the skip connection

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_layers": self.n_layers, "n_neurons": self.n_neurons}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualRegressor(_ScaledRegressor):
    """Dense(30) -> block1 applied 3 times (one set of weights) -> block2 -> Dense(output_dim)."""

    BLOCK1_REPEATS = 3

    def __init__(self, output_dim: int = 1, **kwargs: Any) -> None:
        super().__init__(output_dim=output_dim, **kwargs)
        self.hidden1 = keras.layers.Dense(30, activation="elu", kernel_initializer="he_normal")
        self.block1 = ResidualBlock(2, 30)
        self.block2 = ResidualBlock(2, 30)
        self.out = keras.layers.Dense(self.output_dim)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        z = self.hidden1(self.standardize(inputs))
        for _ in range(self.BLOCK1_REPEATS):  # the same layer object: weights are shared
            z = self.block1(z)
        z = self.block2(z)
        return self.unstandardize_target(self.out(z))


# ----------------------------------------------------------------------------------------------------
# Reconstructing regressor (add_loss + custom build)
# ----------------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=PACKAGE)
class ReconstructingRegressor(_ScaledRegressor):
    """5 x Dense(30, selu) -> Dense(output_dim), plus an auxiliary reconstruction of the input.

    ``build`` creates the reconstruction head because its width (the number of input features) is only
    known once the input shape is. ``call`` adds ``RECONSTRUCTION_WEIGHT * mean squared reconstruction
    error`` (in standardised feature units) through ``add_loss``: a regulariser that Keras adds to the
    training loss.
    """

    ENDPOINTS = (
        PREDICT,
        Endpoint("reconstruct", "reconstruct", (TensorDecl("reconstruction", (None, FEATURES)),
                                                TensorDecl("reconstruction_error", (None,)))),
    )

    def __init__(self, output_dim: int = 1, **kwargs: Any) -> None:
        super().__init__(output_dim=output_dim, **kwargs)
        self.hidden = [
            keras.layers.Dense(30, activation="selu", kernel_initializer="lecun_normal") for _ in range(5)
        ]
        self.out = keras.layers.Dense(self.output_dim)
        self.reconstruct_layer: keras.layers.Dense | None = None

    def build(self, batch_input_shape: tuple[int | None, ...]) -> None:
        n_inputs = int(batch_input_shape[-1])
        self.reconstruct_layer = keras.layers.Dense(n_inputs)
        # Build every sub-layer now so that all weights exist before the first call (and before a
        # .keras file is loaded into this model).
        shape: tuple[int | None, ...] = (None, n_inputs)
        for layer in self.hidden:
            layer.build(shape)
            shape = (None, 30)
        self.out.build(shape)
        self.reconstruct_layer.build(shape)
        super().build(batch_input_shape)

    def _hidden_and_reconstruction(self, inputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        x = self.standardize(inputs)
        z = x
        for layer in self.hidden:
            z = layer(z)
        assert self.reconstruct_layer is not None
        return x, z, self.reconstruct_layer(z)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x, z, reconstruction = self._hidden_and_reconstruction(inputs)
        self.add_loss(RECONSTRUCTION_WEIGHT * tf.reduce_mean(tf.square(reconstruction - x)))
        return self.unstandardize_target(self.out(z))

    def reconstruct(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Reconstruction in raw feature units and the per-row error (mean square, standardised units)."""
        x, _, reconstruction = self._hidden_and_reconstruction(inputs)
        raw = reconstruction
        if self.feature_mean is not None:
            raw = reconstruction * tf.constant(self.feature_std, self.compute_dtype) + tf.constant(
                self.feature_mean, self.compute_dtype
            )
        return {
            "reconstruction": raw,
            "reconstruction_error": tf.reduce_mean(tf.square(reconstruction - x), axis=-1),
        }


# ----------------------------------------------------------------------------------------------------
# Softplus regressor (custom gradient)
# ----------------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=PACKAGE)
class StableSoftplus(keras.layers.Layer):
    """Activation layer around :func:`stable_softplus` (a Layer so it serialises by name)."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return stable_softplus(inputs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftplusRegressor(_ScaledRegressor):
    """A small MLP whose activation is the stable softplus with its hand-written gradient."""

    def __init__(self, output_dim: int = 1, n_hidden: int = 2, n_neurons: int = 32, **kwargs: Any) -> None:
        super().__init__(output_dim=output_dim, **kwargs)
        self.n_hidden = int(n_hidden)
        self.n_neurons = int(n_neurons)
        self.hidden = [keras.layers.Dense(self.n_neurons, kernel_initializer="he_normal") for _ in range(self.n_hidden)]
        self.activation = StableSoftplus()
        self.out = keras.layers.Dense(self.output_dim)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        z = self.standardize(inputs)
        for layer in self.hidden:
            z = self.activation(layer(z))
        return self.unstandardize_target(self.out(z))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_hidden": self.n_hidden, "n_neurons": self.n_neurons}


MODEL_CLASSES: dict[str, type[_ScaledRegressor]] = {
    "residual_regressor": ResidualRegressor,
    "reconstructing_regressor": ReconstructingRegressor,
    "softplus_regressor": SoftplusRegressor,
}


def build_model(
    name: str,
    n_features: int,
    feature_mean: Sequence[float] | None = None,
    feature_std: Sequence[float] | None = None,
    target_mean: float = 0.0,
    target_std: float = 1.0,
) -> _ScaledRegressor:
    """Create model ``name`` and build it for ``n_features`` inputs (weights exist on return)."""
    if name not in MODEL_CLASSES:
        raise ValueError(f"unknown model {name!r} (choose from {', '.join(MODEL_NAMES)})")
    model = MODEL_CLASSES[name](
        output_dim=1,
        feature_mean=feature_mean,
        feature_std=feature_std,
        target_mean=target_mean,
        target_std=target_std,
        name=name,
    )
    # Keras needs one call to build a subclassed model (and ExportArchive needs a called model).
    model(np.zeros((1, n_features), dtype=np.float32))
    return model

