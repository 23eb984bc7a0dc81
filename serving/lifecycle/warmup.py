"""Replay assets.extra/tf_serving_warmup_requests before a version is marked AVAILABLE (as TF Serving does).

The file is a TFRecord of serialized PredictionLog protos; we replay the request of each predict_log,
classify_log, regress_log and multi_inference_log entry (at most 1000, TF Serving's cap) through the
version's runner. A warmup record that fails makes the whole load fail, like TF Serving: a version that
cannot answer its own warmup requests should not take traffic.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from export.contract import MAX_WARMUP_RECORDS, warmup_path
from serving.errors import ServingError, invalid_argument

log = logging.getLogger("serving.warmup")

# PredictionLog's log_type -> the request it holds (saved_model_warmup_util.cc replays these kinds).
REPLAYED_LOGS = ("predict_log", "classify_log", "regress_log", "multi_inference_log")


def read_warmup_requests(version_dir: Path) -> list[tuple[str, Any]]:
    """(log type, request) of every record of the warmup file ([] when the version has none)."""
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
            kind = entry.WhichOneof("log_type")
            if kind not in REPLAYED_LOGS:
                raise invalid_argument(f"{path} record {i}: {kind} warmup records are not supported "
                                       f"({', '.join(REPLAYED_LOGS)} are)")
            requests.append((kind, getattr(entry, kind).request))
    except ServingError:
        raise
    except Exception as exc:
        raise invalid_argument(f"{path}: unreadable warmup file: {type(exc).__name__}: {exc}") from None
    return requests


def replay(version_dir: Path, run: Callable[[str, Any], object], label: str) -> int:
    """Run every warmup request through `run(log type, request)`; returns how many were replayed."""
    requests = read_warmup_requests(version_dir)
    if not requests:
        log.info("%s: no warmup file, first requests may be slow", label)
        return 0
    started = time.monotonic()
    for i, (kind, request) in enumerate(requests):
        try:
            run(kind, request)
        except ServingError as exc:
            raise ServingError(exc.code, f"warmup request {i} failed: {exc.message}") from None
    log.info("%s: replayed %d warmup requests in %.2f s", label, len(requests), time.monotonic() - started)
    return len(requests)
