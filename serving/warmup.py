"""Replay assets.extra/tf_serving_warmup_requests before a version is marked AVAILABLE (as TF Serving does).

The file is a TFRecord of serialized PredictionLog protos; we replay their predict_log.request entries (at
most 1000, TF Serving's cap) through the version's runner. A warmup record that fails makes the whole load
fail, like TF Serving: a version that cannot answer its own warmup requests should not take traffic.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from export.contract import MAX_WARMUP_RECORDS, warmup_path
from serving.errors import ServingError, invalid_argument

log = logging.getLogger("serving.warmup")

Predict = Callable[[str, dict], dict]  # (signature_name, {name: TensorProto}) -> outputs


def read_warmup_requests(version_dir: Path) -> list:
    """PredictRequests from the warmup file ([] when the version has none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(version_dir)
    if not path.is_file():
        return []
    requests = []
    try:
        for i, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            if i >= MAX_WARMUP_RECORDS:
                log.warning("%s: more than %d warmup records; the rest are ignored", path, MAX_WARMUP_RECORDS)
                break
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            if entry.WhichOneof("log_type") != "predict_log":
                raise invalid_argument(f"{path} record {i}: only predict_log warmup records are supported")
            requests.append(entry.predict_log.request)
    except ServingError:
        raise
    except Exception as exc:
        raise invalid_argument(f"{path}: unreadable warmup file: {type(exc).__name__}: {exc}") from None
    return requests


def replay(version_dir: Path, run: Callable[[object], dict[str, np.ndarray]], label: str) -> int:
    """Run every warmup request through `run(PredictRequest)`; returns how many were replayed."""
    requests = read_warmup_requests(version_dir)
    if not requests:
        log.info("%s: no warmup file, first requests may be slow", label)
        return 0
    started = time.monotonic()
    for i, request in enumerate(requests):
        try:
            run(request)
        except ServingError as exc:
            raise ServingError(exc.code, f"warmup request {i} failed: {exc.message}") from None
    log.info("%s: replayed %d warmup requests in %.2f s", label, len(requests), time.monotonic() - started)
    return len(requests)
