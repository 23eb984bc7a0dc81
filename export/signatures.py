"""Trace a Keras model into named SavedModel signatures with Keras' own ExportArchive.

Each endpoint (export/endpoints.py) becomes one signature, traced with an explicit ``input_signature`` of named
TensorSpecs so every tensor has a stable name: the endpoint's input names in, its output names out (Keras'
defaults would be ``args_0`` / ``output_0``). Custom gradients are saved so that a restored model can still be
differentiated (softplus_regressor's hand-written gradient).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import keras
import tensorflow as tf

from export.endpoints import Endpoint, TensorDecl, endpoints_of


def write_saved_model(model: keras.Model, n_features: int, path: Path,
                      endpoints: Sequence[Endpoint] | None = None) -> tuple[Endpoint, ...]:
    """Write ``model`` as a SavedModel at ``path`` (which must not exist yet), one signature per endpoint
    (default: those its class declares). Returns the endpoints with their outputs as traced."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    traced = []
    for endpoint in endpoints if endpoints is not None else endpoints_of(model):
        specs = [tf.TensorSpec(info.shape, tf.as_dtype(info.dtype), name=name)
                 for name, info in endpoint.expected(n_features).inputs.items()]
        fn = archive.add_endpoint(name=endpoint.signature, fn=_positional(endpoint, model), input_signature=specs)
        outputs = fn.get_concrete_function().structured_outputs  # the trace the archive saves, not a second one
        traced.append(endpoint if endpoint.outputs else replace(endpoint, outputs=tuple(
            TensorDecl(k, tuple(v.shape.as_list()), v.dtype.name) for k, v in outputs.items())))
    archive.write_out(
        str(path),
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=True),
        verbose=False,
    )
    return tuple(traced)


def _positional(endpoint: Endpoint, model: keras.Model):
    """The endpoint with one positional argument per input: a signature's inputs are flat named tensors."""
    call, names = endpoint.bind(model), endpoint.input_names
    return lambda *tensors: call(dict(zip(names, tensors)))
