"""The contract between export, serving and benchmarks: the on-disk layout TF Serving reads and the wire
names every client and server shares. Export writes it, the server and the benchmarks read it; nothing here
imports TensorFlow, so the load generators can use it without paying for one.

On disk, TF Serving reads ``<base_path>/<version>/`` where ``<version>`` is any directory name that parses as
an int64 (``1``, ``00000123``, ``0``; sources/storage_path/file_system_storage_path_source.cc:
``ParseVersionNumber``, i.e. ``strings::safe_strto64``) and ignores every other entry. The directory keeps its
on-disk name: version ``123`` may live in ``00000123``, so code that needs the path must take it from
:class:`VersionDir`, never rebuild it from the number. Work in progress is
kept in a dot-directory beside the versions and renamed into place at the end. Everything tfserve-bench adds
to a version lives under ``assets.extra/``, which TF Serving copies along but does not interpret (apart from
the warmup file).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------ on disk
ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = f"{ASSETS_EXTRA}/tf_serving_warmup_requests"  # TF Serving replays it before AVAILABLE
MAX_WARMUP_RECORDS = 1000  # TF Serving's cap on warmup records
MANIFEST_FILE = f"{ASSETS_EXTRA}/tfserve_bench_manifest.json"
KERAS_FILE = f"{ASSETS_EXTRA}/model.keras"  # the same weights as a Keras file: the eager path
SAVED_MODEL_FILE = "saved_model.pb"
MODEL_CONFIG_FILE = "models.config"  # base_path /models/<name>: what the official container mounts
LOCAL_MODEL_CONFIG_FILE = "models.local.config"  # absolute local base paths: for the embedded server
CONTAINER_MODELS_ROOT = "/models"
SERVER_MODES = ("graph", "xla", "eager")  # how the embedded server runs a model (serving/execution/runners.py)
GRAPH_EXECUTORS = ("session", "function")  # how graph mode runs a signature (serving/execution/runners.py)

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# safe_strto64's grammar: C isspace() around an optional '-' and ASCII digits ('+' is not accepted).
_VERSION_NAME = re.compile(r"[ \t\n\v\f\r]*(-?[0-9]+)[ \t\n\v\f\r]*")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# ------------------------------------------------------------------------------------------ on the wire
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
PREDICT_METHOD = f"/{PREDICTION_SERVICE}/Predict"
CLASSIFY_METHOD = f"/{PREDICTION_SERVICE}/Classify"
REGRESS_METHOD = f"/{PREDICTION_SERVICE}/Regress"
METADATA_METHOD = f"/{PREDICTION_SERVICE}/GetModelMetadata"
STATUS_METHOD = f"/{MODEL_SERVICE}/GetModelStatus"


def rpc_name(method_path: str) -> tuple[str, str]:
    """'/package.Service/Method' -> ('package.Service', 'Method'): what gRPC's generic handlers are given."""
    service, _, name = method_path.lstrip("/").partition("/")
    return service, name


# gRPC message limits of the load generators and test clients: large batches exceed gRPC's default 4 MB.
GRPC_MESSAGE_OPTIONS = (("grpc.max_receive_message_length", 256 * 2**20), ("grpc.max_send_message_length", 256 * 2**20))
DEFAULT_SIGNATURE = "serving_default"
# SignatureDef method names (tensorflow/python/saved_model/signature_constants.py).
METHOD_NAME_PREFIX = "tensorflow/serving/"
PREDICT_METHOD_NAME = f"{METHOD_NAME_PREFIX}predict"
CLASSIFY_METHOD_NAME = f"{METHOD_NAME_PREFIX}classify"
REGRESS_METHOD_NAME = f"{METHOD_NAME_PREFIX}regress"

# The tensor dtypes TF Serving carries: DataType name -> (numpy dtype, the TensorProto repeated field holding the
# values when tensor_content is empty). Strings are numpy object arrays of bytes (what TensorFlow's .numpy()
# returns for tf.string); half values travel as uint16 bit patterns in half_val.
TENSOR_DTYPES: dict[str, tuple[str, str]] = {
    "DT_FLOAT": ("float32", "float_val"), "DT_DOUBLE": ("float64", "double_val"), "DT_HALF": ("float16", "half_val"),
    "DT_INT8": ("int8", "int_val"), "DT_INT16": ("int16", "int_val"), "DT_INT32": ("int32", "int_val"),
    "DT_INT64": ("int64", "int64_val"), "DT_UINT8": ("uint8", "int_val"), "DT_UINT16": ("uint16", "int_val"),
    "DT_UINT32": ("uint32", "uint32_val"), "DT_UINT64": ("uint64", "uint64_val"), "DT_BOOL": ("bool", "bool_val"),
    "DT_STRING": ("object", "string_val"),
}

# Prometheus names exactly as TF Serving's exporter spells them ('/' becomes ':').
METRIC_PREFIX = ":tensorflow:serving"
REQUEST_COUNT = f"{METRIC_PREFIX}:request_count"
REQUEST_LATENCY = f"{METRIC_PREFIX}:request_latency"
RUNTIME_LATENCY = f"{METRIC_PREFIX}:runtime_latency"
BATCHING_PREFIX = f"{METRIC_PREFIX}:batching_session"
QUEUING_LATENCY = f"{BATCHING_PREFIX}:queuing_latency"
INPUT_BATCH_SIZE = f"{BATCHING_PREFIX}:input_batch_size"
PROCESSED_BATCH_SIZE = f"{BATCHING_PREFIX}:processed_batch_size"
PADDING_SIZE = f"{BATCHING_PREFIX}:padding_size"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# The embedded server's own metrics, named the same way under the project's prefix (TF Serving has no such name).
PROJECT_METRIC_PREFIX = ":tfserve_bench:serving"
# µs histogram {model_name, API, entrypoint, stage}: one Predict's handled time split into REQUEST_STAGES
REQUEST_STAGE_LATENCY = f"{PROJECT_METRIC_PREFIX}:request_stage_latency"
REQUEST_STAGES = ("decode", "queue", "execute", "encode", "framework")
# The embedded server's own metrics beside TF Serving's (serving/metrics.py).
EXECUTIONS_METRIC = "tfserve_bench_model_executions"
EXECUTION_OUTCOMES_METRIC = "tfserve_bench_model_execution_outcomes"  # exposed with prometheus_client's _total


# ------------------------------------------------------------------------------------------ names and versions
def check_model_name(name: str) -> str:
    """Model names become directory names: refuse anything that could walk the filesystem."""
    if not _MODEL_NAME.match(name) or ".." in name:
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def parse_version(name: str) -> int | None:
    """The version a directory name stands for, the way TF Serving parses it, or None if it is not one.

    TF Serving parses with ``safe_strto64``: leading zeros, surrounding whitespace and a minus sign are
    accepted (``00000123`` -> 123, ``0`` -> 0, ``-1`` -> -1), a plus sign, other characters and values outside
    int64 are not. What export writes is always a plain positive decimal (:func:`new_version_dir`).
    """
    match = _VERSION_NAME.fullmatch(name)
    if match is None:
        return None
    value = int(match.group(1))
    return value if _INT64_MIN <= value <= _INT64_MAX else None


@dataclass(frozen=True, order=True)
class VersionDir:
    """One version directory as found on disk: its number and its path (whose name may be zero-padded)."""

    version: int
    path: Path

    @property
    def saved_model(self) -> Path:
        return self.path / SAVED_MODEL_FILE


def version_dirs(base_path: Path) -> list[VersionDir]:
    """Every version directory under a model's base path, by ascending version (what TF Serving sees).

    If two names parse to the same number (``7`` and ``007``) the last in name order wins (``7``), as in TF
    Serving, which indexes the sorted names by version and logs "Duplicate version directories detected"; so
    the answer does not depend on the order the filesystem lists them.
    """
    base = Path(base_path)
    try:
        entries = sorted(base.iterdir(), key=lambda p: p.name) if base.is_dir() else []
    except OSError:
        return []
    found: dict[int, VersionDir] = {}
    for entry in entries:
        version = parse_version(entry.name)
        if version is not None and entry.is_dir():
            found[version] = VersionDir(version, entry)
    return [found[v] for v in sorted(found)]


def list_versions(base_path: Path) -> list[int]:
    """The version numbers under a model base path, ascending."""
    return [v.version for v in version_dirs(base_path)]


def find_version_dir(base_path: Path, version: int) -> VersionDir | None:
    """The on-disk directory of one version (zero-padded or not), or None."""
    return next((v for v in version_dirs(base_path) if v.version == version), None)


def latest_version_dir(base_path: Path) -> VersionDir | None:
    found = version_dirs(base_path)
    return found[-1] if found else None


def next_version(base_path: Path) -> int:
    """The number a new version takes: one above the highest on disk, and at least 1 (TF Serving would also
    serve 0 and negative versions, but export only writes positive ones)."""
    return max([0, *list_versions(base_path)]) + 1


def model_names(models_root: Path) -> list[str]:
    """The model directories of a models root, by name (dot-directories are work in progress, not models)."""
    root = Path(models_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def model_dir(models_root: Path, model: str) -> Path:
    return Path(models_root) / check_model_name(model)


def new_version_dir(models_root: Path, model: str, version: int) -> Path:
    """Where export writes a new version: the plain decimal name (what TF Serving's own exporters write)."""
    return model_dir(models_root, model) / str(int(version))


# ------------------------------------------------------------------------------------------ our extra files
def manifest_path(version_path: Path) -> Path:
    return Path(version_path) / MANIFEST_FILE


def read_manifest(version_path: Path) -> dict[str, Any]:
    return json.loads(manifest_path(version_path).read_text())


def warmup_path(version_path: Path) -> Path:
    return Path(version_path) / WARMUP_FILE


def keras_path(version_path: Path) -> Path:
    return Path(version_path) / KERAS_FILE
