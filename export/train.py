"""Seeded, short training with a report: the numbers every export carries in its manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from export.data import Dataset
from export.models import PACKAGE, ReconstructingRegressor, build_model


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledMeanSquaredError(keras.losses.Loss):
    """MSE measured in target standard deviations.

    The models predict in raw target units (diabetes targets are ~25..346). Dividing by the target's
    variance keeps the loss near 1 so that the reconstruction regulariser, added through ``add_loss`` in
    standardised units, has a weight that means something.
    """

    def __init__(self, target_std: float = 1.0, name: str = "scaled_mse", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.target_std = float(target_std)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        diff = (tf.cast(y_true, y_pred.dtype) - y_pred) / self.target_std
        return tf.reduce_mean(tf.square(diff), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_std": self.target_std}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 42


@dataclass(frozen=True)
class TrainReport:
    epochs: int  # epochs run (early stopping may end before TrainConfig.epochs)
    train_loss: float  # total training loss of the kept (best-validation) epoch (includes add_loss terms)
    val_loss: float  # same definition, on the validation split
    val_mae: float  # raw target units
    val_rmse: float  # raw target units
    reconstruction_loss: float | None  # the add_loss part on validation data (reconstructing_regressor)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _EpochProgress(keras.callbacks.Callback):
    """One tqdm bar per model, with the latest losses; Keras' own per-step bars are too chatty here."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        self.bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.3f}", val=f"{logs.get('val_loss', float('nan')):.3f}")
        self.bar.update(1)


def train_model(name: str, data: Dataset, config: TrainConfig = TrainConfig()) -> tuple[keras.Model, TrainReport]:
    """Build ``name`` with the data's scaling folded in, train it, and report."""
    keras.utils.set_random_seed(config.seed)
    feature_std = data.x_train.std(axis=0)
    feature_std[feature_std == 0] = 1.0  # a constant feature must not divide by zero
    target_std = float(data.y_train.std()) or 1.0
    model = build_model(
        name,
        data.n_features,
        feature_mean=data.x_train.mean(axis=0),
        feature_std=feature_std,
        target_mean=float(data.y_train.mean()),
        target_std=target_std,
    )
    model.compile(
        # Clipping keeps the first epochs of the residual stack (one block applied three times) from
        # blowing up on a few hundred rows.
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=1.0),
        loss=ScaledMeanSquaredError(target_std),
        metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
    )
    with tqdm(total=config.epochs, desc=f"train {name}", unit="epoch", leave=True) as bar:
        history = model.fit(
            data.x_train,
            data.y_train,
            validation_data=(data.x_val, data.y_val),
            epochs=config.epochs,
            batch_size=config.batch_size,
            shuffle=True,
            verbose=0,
            # A few hundred rows overfit quickly: keep the weights of the best validation epoch.
            callbacks=[
                _EpochProgress(bar),
                keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True),
            ],
        )
    best = int(np.argmin(history.history["val_loss"]))  # the epoch whose weights were kept
    predictions = model(data.x_val, training=False)
    reconstruction_loss = None
    if isinstance(model, ReconstructingRegressor):
        reconstruction_loss = float(sum(float(loss) for loss in model.losses))
    errors = np.asarray(predictions) - data.y_val
    report = TrainReport(
        epochs=len(history.history["loss"]),
        train_loss=float(history.history["loss"][best]),
        val_loss=float(history.history["val_loss"][best]),
        val_mae=float(np.abs(errors).mean()),
        val_rmse=float(np.sqrt((errors**2).mean())),
        reconstruction_loss=reconstruction_loss,
    )
    return model, report
