"""Trace a Keras model into named SavedModel signatures with Keras' own ExportArchive.

Each endpoint the model class declares (export/endpoints.py) becomes one signature, traced with an explicit
``input_signature`` so every tensor has a stable name: ``inputs`` in, the declared output names out (Keras'
defaults would be ``args_0`` / ``output_0``). Custom gradients are saved so that a restored model can still be
differentiated (softplus_regressor's hand-written gradient).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from export.endpoints import endpoints_of


def write_saved_model(model: keras.Model, n_features: int, path: Path) -> None:
    """Write ``model`` as a SavedModel at ``path`` (which must not exist yet), one signature per endpoint."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for endpoint in endpoints_of(model):
        tensor = endpoint.input.info(n_features)
        spec = [tf.TensorSpec(tensor.shape, tf.as_dtype(tensor.dtype), name=endpoint.input.name)]
        archive.add_endpoint(name=endpoint.signature, fn=endpoint.bind(model), input_signature=spec)
    archive.write_out(
        str(path),
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=True),
        verbose=False,
    )
