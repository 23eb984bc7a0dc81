"""Trace a Keras model into named SavedModel signatures with Keras' own ExportArchive.

Signatures are traced with an explicit ``input_signature`` so every tensor has a stable name: ``inputs``
in, ``predictions`` out (Keras' defaults would be ``args_0`` / ``output_0``). Custom gradients are saved
so that a restored model can still be differentiated (softplus_regressor's hand-written gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from export.models import ReconstructingRegressor

SERVING_SIGNATURE = "serving_default"
RECONSTRUCT_SIGNATURE = "reconstruct"
INPUT_NAME = "inputs"
OUTPUT_NAME = "predictions"


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: list[int | None]


@dataclass(frozen=True)
class SignatureInfo:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


def expected_signatures(model: keras.Model, n_features: int) -> dict[str, SignatureInfo]:
    """What the export promises, per signature: used for the manifest and checked by verify."""
    inputs = {INPUT_NAME: TensorInfo("float32", [None, n_features])}
    signatures = {SERVING_SIGNATURE: SignatureInfo(inputs, {OUTPUT_NAME: TensorInfo("float32", [None, 1])})}
    if isinstance(model, ReconstructingRegressor):
        signatures[RECONSTRUCT_SIGNATURE] = SignatureInfo(
            inputs,
            {
                "reconstruction": TensorInfo("float32", [None, n_features]),
                "reconstruction_error": TensorInfo("float32", [None]),
            },
        )
    return signatures


def write_saved_model(model: keras.Model, n_features: int, path: Path) -> None:
    """Write ``model`` as a SavedModel at ``path`` (which must not exist yet)."""
    spec = [tf.TensorSpec([None, n_features], tf.float32, name=INPUT_NAME)]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SERVING_SIGNATURE,
        fn=lambda inputs: {OUTPUT_NAME: model(inputs, training=False)},
        input_signature=spec,
    )
    if isinstance(model, ReconstructingRegressor):
        archive.add_endpoint(name=RECONSTRUCT_SIGNATURE, fn=model.reconstruct, input_signature=spec)
    archive.write_out(
        str(path),
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=True),
        verbose=False,
    )
