"""TF Serving warmup records: ``assets.extra/tf_serving_warmup_requests``.

Without them the first requests after a version loads pay for graph optimisation and memory
allocation and can be orders of magnitude slower. TF Serving reads a TFRecord file of serialised
``PredictionLog`` messages (at most 1000) and replays each before marking the version AVAILABLE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from export.contract import MAX_WARMUP_RECORDS
from export.endpoints import Endpoint

WARMUP_BATCH_SIZES: tuple[int, ...] = (1, 8, 64, 256)


def warmup_requests(
    model_name: str, endpoints: Iterable[Endpoint], batches: Iterable[Mapping[str, np.ndarray]]
) -> list[prediction_log_pb2.PredictionLog]:
    """One request per (endpoint, batch): each batch holds an array per input name, cast to the declared dtype."""
    logs = []
    batches = list(batches)
    for endpoint in endpoints:
        for batch in batches:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=endpoint.signature)
            )
            for decl in endpoint.inputs:
                values = np.asarray(batch[decl.name])
                values = values if decl.dtype == "string" else values.astype(decl.dtype)
                request.inputs[decl.name].CopyFrom(tf.make_tensor_proto(values))
            logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{len(logs)} warmup records exceed TF Serving's limit of {MAX_WARMUP_RECORDS}")
    return logs


def rows_to_batches(rows: np.ndarray, name: str = "inputs") -> list[dict[str, np.ndarray]]:
    """The project models' warmup batches: real rows, cycled to each of WARMUP_BATCH_SIZES."""
    return [{name: np.resize(rows, (batch, rows.shape[1]))} for batch in WARMUP_BATCH_SIZES]


def warmup_inputs(record: prediction_log_pb2.PredictionLog) -> tuple[str, dict[str, np.ndarray]]:
    """(signature name, {input name: array}) of one warmup record."""
    request = record.predict_log.request
    return request.model_spec.signature_name, {k: tf.make_ndarray(v) for k, v in request.inputs.items()}


def write_warmup_file(path: Path, logs: list[prediction_log_pb2.PredictionLog]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def read_warmup_file(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """Parse every record (raises on a corrupt file): used by verify and by the embedded server."""
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    if len(records) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{path}: {len(records)} warmup records exceed TF Serving's limit of {MAX_WARMUP_RECORDS}")
    return records
