"""Read and check the config files TF Serving reads: batching, monitoring and model server configs.

The deployment (docker/, docker/k8s/) hands three text protos to ``tensorflow_model_server``. Nothing here
can run that binary, so this module is the machine check that those files parse exactly as TF Serving
would parse them and that their values make sense. The embedded server reads the *same* batching file
through :func:`load_batching_settings`, so both servers batch by one set of numbers.

``BatchingParameters`` and ``MonitoringConfig`` are not shipped in the ``tensorflow-serving-api`` wheel
(only ``tensorflow_serving.config.model_server_config_pb2`` and friends are), so their message classes are
built here at import time from a ``FileDescriptorProto`` whose field names, numbers and types are copied
from the official protos:

* tensorflow_serving/servables/tensorflow/session_bundle_config.proto  (message BatchingParameters;
  fields 1-7 as in upstream, 8-9 added upstream for large-batch splitting)
* tensorflow_serving/config/monitoring_config.proto  (messages PrometheusConfig, MonitoringConfig)

Defaults for absent batching fields come from TF Serving's code path, not from the proto (every field is a
wrapper, "absent" means "use the scheduler default"):
tensorflow_serving/servables/tensorflow/bundle_factory_util.h (CreateBatchScheduler, GetQueueOptions) copies
only the fields that are set onto ``SharedBatchScheduler::Options`` / ``QueueOptions``, whose defaults in
tensorflow/core/kernels/batching_util/shared_batch_scheduler.h are: thread_pool_name "batch_threads",
num_batch_threads port::MaxParallelism(), input_batch_size_limit (max_batch_size) 1000,
batch_timeout_micros 0, max_enqueued_batches 10, enable_large_batch_splitting false.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from google.protobuf.message import Message
from tensorflow_serving.config import model_server_config_pb2

from export.contract import CONTAINER_MODELS_ROOT, PROMETHEUS_PATH, list_versions

PathOrText = Union[str, os.PathLike]

# --------------------------------------------------------------------------------------------------------
# Message classes for the protos the pip package does not ship.
# --------------------------------------------------------------------------------------------------------

_FDP = descriptor_pb2.FieldDescriptorProto
_WRAPPERS_FILE = "google/protobuf/wrappers.proto"


def _field(name: str, number: int, ftype: int, type_name: str = "", repeated: bool = False) -> _FDP:
    proto = _FDP(
        name=name,
        number=number,
        type=ftype,
        label=_FDP.LABEL_REPEATED if repeated else _FDP.LABEL_OPTIONAL,
        json_name=re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name),
    )
    if type_name:  # setting it at all (even to "") marks a scalar field as a message/enum reference
        proto.type_name = type_name
    return proto


def _build_pool() -> descriptor_pool.DescriptorPool:
    # A private pool: the official file names/packages are reused (so full names read
    # "tensorflow.serving.BatchingParameters") without any risk of clashing with a wheel that may one day
    # register the real file in the default pool.
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    msg = _FDP.TYPE_MESSAGE
    batching_file = descriptor_pb2.FileDescriptorProto(
        # Upstream path: the real file also imports tensorflow/core/protobuf/config.proto and
        # named_tensor.proto for SessionBundleConfig, which the batching file never uses; only
        # BatchingParameters is reproduced here.
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[_WRAPPERS_FILE],
    )
    batching_file.message_type.add(
        name="BatchingParameters",
        field=[
            _field("max_batch_size", 1, msg, ".google.protobuf.Int64Value"),
            _field("batch_timeout_micros", 2, msg, ".google.protobuf.Int64Value"),
            _field("max_enqueued_batches", 3, msg, ".google.protobuf.Int64Value"),
            _field("num_batch_threads", 4, msg, ".google.protobuf.Int64Value"),
            _field("thread_pool_name", 5, msg, ".google.protobuf.StringValue"),
            _field("allowed_batch_sizes", 6, _FDP.TYPE_INT64, repeated=True),
            _field("pad_variable_length_inputs", 7, _FDP.TYPE_BOOL),
            _field("enable_large_batch_splitting", 8, msg, ".google.protobuf.BoolValue"),
            _field("max_execution_batch_size", 9, msg, ".google.protobuf.Int64Value"),
        ],
    )
    pool.Add(batching_file)

    monitoring_file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    monitoring_file.message_type.add(
        name="PrometheusConfig",
        field=[_field("enable", 1, _FDP.TYPE_BOOL), _field("path", 2, _FDP.TYPE_STRING)],
    )
    monitoring_file.message_type.add(
        name="MonitoringConfig",
        field=[_field("prometheus_config", 1, msg, ".tensorflow.serving.PrometheusConfig")],
    )
    pool.Add(monitoring_file)
    return pool


_POOL = _build_pool()
BatchingParameters = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
)
MonitoringConfig = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))
ModelServerConfig = model_server_config_pb2.ModelServerConfig

# --------------------------------------------------------------------------------------------------------
# Defaults TF Serving applies when a batching field is absent (see module docstring for the source).
# --------------------------------------------------------------------------------------------------------

DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10
DEFAULT_THREAD_POOL_NAME = "batch_threads"

# Version labels are restricted to this alphabet (project TF Serving digest; label strings also appear in
# REST paths /v1/models/<m>/labels/<label>, so anything else could not be addressed there).
LABEL_PATTERN = re.compile(r"^[a-zA-Z0-9_]+$")


def default_num_batch_threads() -> int:
    """port::MaxParallelism(): the CPUs this process may run on (affinity-aware, like TF's port layer)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------------------


def _read_source(path_or_text: PathOrText, what: str) -> tuple[str, str]:
    """Return (text, source label). A Path, or a str naming an existing file, is read; other str is text.

    A short single-line str with no proto syntax in it is taken as a file name that does not exist, so a
    typo in a path says "file not found" rather than a baffling parse error.
    """
    if isinstance(path_or_text, os.PathLike):
        path = Path(path_or_text)
    elif os.path.isfile(path_or_text):
        path = Path(path_or_text)
    elif path_or_text.strip() and not re.search(r"[{}:\n]", path_or_text):
        raise ValueError(f"{what} file {path_or_text!r} not found")
    else:
        return path_or_text, f"<{what} text>"
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} not found")
    try:
        return path.read_text(), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read {what} file: {exc}") from exc


def _parse_text(text: str, message: Message, source: str) -> Message:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        # ParseError already says "line:column : what" — prefix the file so the reader knows which one.
        raise ValueError(f"{source}: not a valid {message.DESCRIPTOR.name} text proto: {exc}") from exc
    return message


# --------------------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchingSettings:
    """Batching parameters as plain Python values, with TF Serving's defaults filled in for absent fields.

    This is the API the embedded server uses, so both servers honour one batching file.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = field(default_factory=default_num_batch_threads)
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    # Only meaningful with splitting on; TF Serving falls back to max_batch_size when it is absent.
    max_execution_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    source: str = "<defaults>"

    @classmethod
    def from_proto(cls, params: Message, source: str = "<proto>") -> BatchingSettings:
        def wrapped(name: str, default):
            return getattr(params, name).value if params.HasField(name) else default

        max_batch_size = wrapped("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
        return cls(
            max_batch_size=max_batch_size,
            batch_timeout_micros=wrapped("batch_timeout_micros", DEFAULT_BATCH_TIMEOUT_MICROS),
            max_enqueued_batches=wrapped("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES),
            num_batch_threads=wrapped("num_batch_threads", default_num_batch_threads()),
            thread_pool_name=wrapped("thread_pool_name", DEFAULT_THREAD_POOL_NAME),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            pad_variable_length_inputs=params.pad_variable_length_inputs,
            enable_large_batch_splitting=wrapped("enable_large_batch_splitting", False),
            max_execution_batch_size=wrapped("max_execution_batch_size", max_batch_size),
            source=source,
        )

    @property
    def batch_timeout_seconds(self) -> float:
        return self.batch_timeout_micros / 1e6

    @property
    def execution_batch_size(self) -> int:
        """Largest batch actually run: max_execution_batch_size with splitting on, else max_batch_size."""
        return self.max_execution_batch_size if self.enable_large_batch_splitting else self.max_batch_size

    def padded_batch_size(self, n: int) -> int:
        """Size a batch of ``n`` rows is padded up to (BatchingSession rounds up to the next allowed size)."""
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")
        if n > self.max_batch_size:
            raise ValueError(f"batch of {n} exceeds max_batch_size {self.max_batch_size}")
        for size in self.allowed_batch_sizes:
            if size >= n:
                return size
        return n


def check_batching_parameters(params: Message, source: str = "<batching parameters>") -> list[str]:
    """Semantic problems TF Serving would refuse at load time (or that make batching useless)."""
    problems: list[str] = []
    settings = BatchingSettings.from_proto(params, source)
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if params.HasField(name) and getattr(params, name).value < 1:
            problems.append(f"{name} must be >= 1, got {getattr(params, name).value}")
    if params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value < 0:
        problems.append(f"batch_timeout_micros must be >= 0, got {params.batch_timeout_micros.value}")
    if params.HasField("thread_pool_name") and not params.thread_pool_name.value:
        problems.append("thread_pool_name is set but empty")

    sizes = list(params.allowed_batch_sizes)
    if sizes:
        if any(s < 1 for s in sizes):
            problems.append(f"allowed_batch_sizes must all be >= 1, got {sizes}")
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            problems.append(f"allowed_batch_sizes must be strictly increasing, got {sizes}")
        # Same rule and default TF Serving applies in CreateBatchScheduler (bundle_factory_util.h).
        if sizes[-1] != settings.max_batch_size:
            problems.append(
                f"last entry of allowed_batch_sizes ({sizes[-1]}) must equal max_batch_size "
                f"({settings.max_batch_size}{'' if params.HasField('max_batch_size') else ', the default'})"
            )
    if settings.enable_large_batch_splitting:
        if settings.max_execution_batch_size < 1:
            problems.append(f"max_execution_batch_size must be >= 1, got {settings.max_execution_batch_size}")
        elif settings.max_execution_batch_size > settings.max_batch_size:
            problems.append(
                f"max_execution_batch_size ({settings.max_execution_batch_size}) must be <= max_batch_size "
                f"({settings.max_batch_size})"
            )
    elif params.HasField("max_execution_batch_size"):
        problems.append("max_execution_batch_size is ignored unless enable_large_batch_splitting { value: true }")
    return problems


def _parse_batching(text: str, source: str) -> Message:
    params = _parse_text(text, BatchingParameters(), source)
    problems = check_batching_parameters(params, source)
    if problems:
        raise ValueError(f"{source}: invalid BatchingParameters: " + "; ".join(problems))
    return params


def parse_batching_parameters(path_or_text: PathOrText) -> Message:
    """Parse a ``--batching_parameters_file`` and check it; raise ValueError naming the file and problem."""
    return _parse_batching(*_read_source(path_or_text, "batching parameters"))


def load_batching_settings(path: PathOrText) -> BatchingSettings:
    """The batching file TF Serving would read, as a checked :class:`BatchingSettings`.

    Absent fields get TF Serving's defaults (max_batch_size 1000, batch_timeout_micros 0,
    max_enqueued_batches 10, num_batch_threads = CPUs available, thread_pool_name "batch_threads").
    """
    text, source = _read_source(path, "batching parameters")
    return BatchingSettings.from_proto(_parse_batching(text, source), source)


# --------------------------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------------------------


def parse_monitoring_config(path_or_text: PathOrText) -> Message:
    """Parse a ``--monitoring_config_file``; Prometheus metrics are served on the REST port at ``path``."""
    text, source = _read_source(path_or_text, "monitoring config")
    config = _parse_text(text, MonitoringConfig(), source)
    prom = config.prometheus_config
    if prom.enable and prom.path and not prom.path.startswith("/"):
        raise ValueError(f"{source}: invalid MonitoringConfig: prometheus_config.path must start with '/', got {prom.path!r}")
    return config


def prometheus_path(config: Message) -> str | None:
    """Where the metrics are scraped, or None when Prometheus export is off."""
    prom = config.prometheus_config
    if not prom.enable:
        return None
    return prom.path or PROMETHEUS_PATH  # PrometheusExporter::kPrometheusPath


# --------------------------------------------------------------------------------------------------------
# Model server config
# --------------------------------------------------------------------------------------------------------


def check_model_server_config(config: ModelServerConfig) -> list[str]:
    problems: list[str] = []
    if config.WhichOneof("config") != "model_config_list":
        return ["model_config_list is missing (custom_model_config is not supported by this deployment)"]
    entries = list(config.model_config_list.config)
    if not entries:
        return ["model_config_list has no config entries"]
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"config #{i + 1} ({entry.name or 'unnamed'})"
        if not entry.name:
            problems.append(f"{where}: name is empty")
        elif entry.name in seen:
            problems.append(f"{where}: duplicate model name {entry.name!r}")
        seen.add(entry.name)
        if not entry.base_path:
            problems.append(f"{where}: base_path is empty")
        if entry.model_platform != "tensorflow":
            problems.append(f"{where}: model_platform must be 'tensorflow', got {entry.model_platform!r}")
        policy = entry.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "latest" and policy.latest.num_versions < 1:
            problems.append(f"{where}: model_version_policy.latest.num_versions must be >= 1")
        if which == "specific" and not policy.specific.versions:
            problems.append(f"{where}: model_version_policy.specific lists no versions")
        for label, version in sorted(entry.version_labels.items()):
            if not LABEL_PATTERN.match(label):
                problems.append(f"{where}: version label {label!r} must match [a-zA-Z0-9_]+")
            if version < 1:
                problems.append(f"{where}: version label {label!r} points at version {version}; versions are >= 1")
            if which == "specific" and version not in policy.specific.versions:
                problems.append(
                    f"{where}: version label {label!r} -> {version}, which the 'specific' policy does not load"
                )
    return problems


def parse_model_server_config(path_or_text: PathOrText) -> ModelServerConfig:
    """Parse a ``--model_config_file`` with the official proto and check it."""
    text, source = _read_source(path_or_text, "model server config")
    config = _parse_text(text, ModelServerConfig(), source)
    problems = check_model_server_config(config)
    if problems:
        raise ValueError(f"{source}: invalid ModelServerConfig: " + "; ".join(problems))
    return config


def check_versions_on_disk(config: ModelServerConfig, models_dir: Path,
                           container_root: str = CONTAINER_MODELS_ROOT) -> list[str]:
    """Check a config against an export on disk: every model dir and every labelled version exists and is kept.

    ``base_path`` values under ``container_root`` (what the container sees) are mapped onto ``models_dir``;
    other base paths are taken as host paths.
    """
    problems: list[str] = []
    root = container_root.rstrip("/") + "/"
    for entry in config.model_config_list.config:
        base = entry.base_path
        host = Path(models_dir) / base[len(root):] if base.startswith(root) else Path(base)
        versions = list_versions(host)
        if not versions:
            problems.append(f"{entry.name}: no integer version directories under {host}")
            continue
        policy = entry.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            kept = set(versions)
        elif which == "specific":
            kept = set(policy.specific.versions) & set(versions)
        else:  # latest (also the default when no policy is given: latest 1)
            n = policy.latest.num_versions if which == "latest" else 1
            kept = set(versions[-n:])
        for label, version in sorted(entry.version_labels.items()):
            if version not in kept:
                problems.append(
                    f"{entry.name}: label {label!r} -> version {version}, not among the loaded versions {sorted(kept)}"
                )
    return problems


# --------------------------------------------------------------------------------------------------------
# CLI: python -m serving.cli.config_files  (check every deploy config in one go; for `make check-deploy`)
# --------------------------------------------------------------------------------------------------------

_CHECKERS = {
    "batching": parse_batching_parameters,
    "monitoring": parse_monitoring_config,
    "models": parse_model_server_config,
}


def _guess_kind(path: Path) -> str:
    name = path.name
    if "batching" in name:
        return "batching"
    if "monitoring" in name:
        return "monitoring"
    return "models"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.cli.config_files",
        description="Check TF Serving config files the way tensorflow_model_server reads them: "
        "batching (BatchingParameters), monitoring (MonitoringConfig) and model server "
        "(ModelServerConfig) text protos. The kind is guessed from the file name "
        "('batching', 'monitoring', anything else = model server config).",
    )
    parser.add_argument("files", nargs="+", type=Path, help="config files to check")
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="also check model server configs against this export (labelled versions exist and are loaded); "
        "base paths under /models are mapped onto it",
    )
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        kind = _guess_kind(path)
        try:
            result = _CHECKERS[kind](path)
            problems = check_versions_on_disk(result, args.models_dir) if kind == "models" and args.models_dir else []
        except ValueError as exc:
            problems = [str(exc)]
        if problems:
            failed += 1
            for problem in problems:
                print(f"FAIL {path} ({kind}): {problem}")
        else:
            print(f"ok   {path} ({kind})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
