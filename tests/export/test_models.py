"""The subclassed models: structure, Keras serialisation, add_loss and custom build."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from export.data import load_dataset
from export.models import MODEL_NAMES, RECONSTRUCTION_WEIGHT, ReconstructingRegressor, ResidualRegressor, build_model
from export.train import ScaledMeanSquaredError


@pytest.fixture(scope="module")
def data():
    return load_dataset("diabetes")


def _build(name, data):
    return build_model(
        name,
        data.n_features,
        feature_mean=data.x_train.mean(0),
        feature_std=data.x_train.std(0),
        target_mean=float(data.y_train.mean()),
        target_std=float(data.y_train.std()),
    )


def test_diabetes_is_real_and_split_reproducibly(data):
    assert data.n_features == 10 and len(data.x_train) + len(data.x_val) == 442
    again = load_dataset("diabetes")
    np.testing.assert_array_equal(data.x_val, again.x_val)
    other = load_dataset("diabetes", seed=1)
    assert not np.array_equal(data.x_val, other.x_val)


def test_synthetic_width():
    assert load_dataset("synthetic", features=33).n_features == 33


def test_residual_block1_weights_are_shared_across_its_three_applications(data):
    model = _build("residual_regressor", data)
    assert isinstance(model, ResidualRegressor)
    # hidden1 (2) + block1 (2 dense x 2) + block2 (2 dense x 2) + out (2): block1 counted once
    assert len(model.trainable_weights) == 2 + 4 + 4 + 2
    # Changing block1's weights changes the output through all three applications (not only one)
    x = data.x_val[:4]
    before = np.asarray(model(x))
    for w in model.block1.trainable_weights:
        w.assign(w * 0.0)
    after_zero = np.asarray(model(x))
    assert not np.allclose(before, after_zero)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_keras_file_round_trip(name, data, tmp_path):
    model = _build(name, data)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.models.load_model(path, compile=False)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    np.testing.assert_array_equal(np.asarray(restored(data.x_val)), np.asarray(model(data.x_val)))


def test_reconstruction_head_is_built_for_the_input_width(data):
    model = _build("reconstructing_regressor", data)
    assert isinstance(model, ReconstructingRegressor)
    assert model.reconstruct_layer is not None and model.reconstruct_layer.units == data.n_features
    wide = build_model("reconstructing_regressor", 17)
    assert wide.reconstruct_layer.units == 17


def test_add_loss_is_part_of_the_training_loss(data):
    model = _build("reconstructing_regressor", data)
    loss_fn = ScaledMeanSquaredError(float(data.y_train.std()))
    model.compile(optimizer="adam", loss=loss_fn)
    x, y = data.x_val, data.y_val
    total = model.evaluate(x, y, batch_size=len(x), verbose=0)
    preds = model(x, training=False)
    reconstruction_part = float(sum(float(v) for v in model.losses))
    supervised = float(np.mean(loss_fn(y, preds)))
    assert reconstruction_part > 0
    # the reconstruction term equals its definition: weight * mean squared error in standardised units
    rec = model.reconstruct(x)
    assert reconstruction_part == pytest.approx(RECONSTRUCTION_WEIGHT * float(np.mean(rec["reconstruction_error"])), rel=1e-5)
    assert total == pytest.approx(supervised + reconstruction_part, rel=1e-4)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", 3)
