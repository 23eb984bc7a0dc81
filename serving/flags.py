"""Command line of `python -m serving serve` and the ServerConfig dataclass it produces.

Flag names follow TF Serving's (`tensorflow_model_server --help`) in kebab case, and TF Serving's own
spellings are accepted as aliases (`--port`, `--rest_api_port`, `--model_config_file`, ...), so a command
line written for the real server runs the embedded one unchanged.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("graph", "xla", "eager")
LOCAL_MODEL_CONFIG = "models.local.config"

DESCRIPTION = """\
Serve exported SavedModels with TensorFlow Serving's own gRPC and REST APIs (built from the official
protos in tensorflow-serving-api), so every client written for TF Serving works unchanged against it.

Models come from a ModelServerConfig text proto (--model-config-file, or <models-dir>/models.local.config),
or from a single --model-name/--model-base-path pair. Version directories under each base path are polled
(--file-system-poll-wait-seconds): new versions load (after warmup replay) while the server keeps serving,
old ones are unloaded by the version policy once nothing uses them, and a broken version is refused with
its error in the model status while the previous one keeps serving.

Execution modes:
  graph  run the SavedModel signature function, as TF Serving runs the graph (default)
  xla    the same signature function compiled with XLA (tf.function(jit_compile=True))
  eager  the Keras model rebuilt from assets.extra/model.keras, called eagerly (no tf.function)
"""

EPILOG = """\
examples:
  python -m serving serve --models-dir artifacts/models
  python -m serving serve --model-config-file artifacts/models/models.local.config --mode xla \\
      --enable-batching --batching-parameters-file docker/batching/batching_cpu.config
  python -m serving serve --model-name residual_regressor --model-base-path $PWD/artifacts/models/residual_regressor

endpoints (defaults):
  gRPC 127.0.0.1:8500  tensorflow.serving.PredictionService / ModelService, grpc.health.v1.Health
  REST 127.0.0.1:8501  /v1/models/<m>[/versions/<v>|/labels/<l>][/metadata|:predict]
                       /monitoring/prometheus/metrics
"""


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start; built from the command line by :func:`parse_args`."""

    model_config_file: Path | None = None
    model_name: str | None = None
    model_base_path: Path | None = None
    host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int = 8501
    mode: str = "graph"
    enable_batching: bool = False
    batching_parameters_file: Path | None = None
    file_system_poll_wait_seconds: float = 1.0
    enable_model_warmup: bool = True
    enable_config_reload: bool = False
    grpc_max_threads: int = 64
    rest_api_timeout_ms: int = 30_000
    max_request_bytes: int = 64 * 1024 * 1024
    max_tensor_elements: int = 16 * 1024 * 1024
    intra_op_parallelism: int = -1  # -1 = auto (serving.server.tf_thread_counts), 0 = TF's default
    inter_op_parallelism: int = -1
    drain_timeout_seconds: float = 30.0
    full_queue_status: str = "RESOURCE_EXHAUSTED"
    # Unbatched executions of one model at once, from both APIs (serving/scheduler.py); 0 = auto (8 x CPUs,
    # 1 in eager mode: serving.core.ExecutionSettings). TF Serving's --rest_api_num_threads maps here.
    max_concurrent_executions: int = 0
    max_queued_executions: int = 1024  # per model, waiting for an execution slot; beyond: full_queue_status
    log_level: str = "INFO"
    extra: dict = field(default_factory=dict)


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Attach every `serve` flag to ``parser`` (also used by the `serve` subcommand of serving/__main__.py)."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter

    src = parser.add_argument_group("models (one of)")
    src.add_argument("--models-dir", type=Path,
                     help=f"an export directory; serves <dir>/{LOCAL_MODEL_CONFIG} (absolute base paths)")
    src.add_argument("--model-config-file", "--model_config_file", type=Path,
                     help="ModelServerConfig text proto (model_config_list with name, base_path, "
                          "model_version_policy, version_labels), as TF Serving reads it")
    src.add_argument("--model-name", "--model_name", help="serve one model under this name (with --model-base-path)")
    src.add_argument("--model-base-path", "--model_base_path", type=Path,
                     help="directory holding integer version directories of that one model (latest version served)")

    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1",
                     help="interface to listen on (default 127.0.0.1: local only; 0.0.0.0 to expose)")
    net.add_argument("--grpc-port", "--port", type=int, default=8500, help="gRPC port (default 8500; 0 = pick a free one)")
    net.add_argument("--rest-port", "--rest_api_port", type=int, default=8501,
                     help="REST port (default 8501; -1 disables REST; 0 = pick a free one)")
    net.add_argument("--grpc-max-threads", "--grpc_max_threads", type=int, default=64,
                     help="accepted for command-line compatibility with TF Serving; the embedded gRPC server is "
                          "asyncio (one event loop, no thread per request: a request waiting for its batch holds no "
                          "thread), so there is no request thread pool to size")
    net.add_argument("--rest-api-timeout-ms", "--rest_api_timeout_in_ms", type=int, default=30_000,
                     help="deadline of a REST request in ms (default 30000, like TF Serving)")
    net.add_argument("--max-request-bytes", type=int, default=64 * 1024 * 1024,
                     help="largest REST body / gRPC message accepted (default 64 MiB; bigger REST bodies get 413)")
    net.add_argument("--max-tensor-elements", type=int, default=16 * 1024 * 1024,
                     help="largest number of elements one input tensor may declare (default 16Mi); "
                          "protects the server from allocating from a shape a client merely claims")

    run = parser.add_argument_group("execution")
    run.add_argument("--mode", choices=MODES, default="graph", help="graph | xla | eager (see above)")
    run.add_argument("--enable-batching", "--enable_batching", action="store_true",
                     help="merge concurrent requests into one model call (needs --batching-parameters-file "
                          "or uses TF Serving's defaults)")
    run.add_argument("--batching-parameters-file", "--batching_parameters_file", type=Path,
                     help="BatchingParameters text proto (max_batch_size, batch_timeout_micros, num_batch_threads, "
                          "max_enqueued_batches, allowed_batch_sizes, enable_large_batch_splitting, ...)")
    run.add_argument("--full-queue-status", choices=("RESOURCE_EXHAUSTED", "UNAVAILABLE"), default="RESOURCE_EXHAUSTED",
                     help="status for a request refused because the batch queue is full: RESOURCE_EXHAUSTED/HTTP 429 "
                          "(default: tells clients to back off) or UNAVAILABLE/HTTP 503 (what TF Serving's "
                          "shared batch scheduler returns)")
    run.add_argument("--max-concurrent-executions", type=int, default=0,
                     help="unbatched model executions of one model at once, shared by gRPC and REST requests "
                          "(default 0 = auto: 8 x CPUs in graph/xla mode, 1 in eager mode, whose Python dispatch holds "
                          "the GIL); requests beyond wait in one first-come-first-served queue. TF Serving's "
                          "--rest_api_num_threads means this. "
                          "With batching on, batchable signatures use num_batch_threads instead")
    run.add_argument("--max-queued-executions", type=int, default=1024,
                     help="requests of one model that may wait for an execution slot (default 1024); more are "
                          "refused at once with --full-queue-status, like a full batch queue")
    run.add_argument("--file-system-poll-wait-seconds", "--file_system_poll_wait_seconds", type=float, default=1.0,
                     help="how often base paths are scanned for new/removed versions (default 1; 0 = load once)")
    run.add_argument("--enable-model-warmup", "--enable_model_warmup", default=True,
                     action=argparse.BooleanOptionalAction,
                     help="replay assets.extra/tf_serving_warmup_requests before a version is AVAILABLE (default on)")
    run.add_argument("--enable-config-reload", action="store_true",
                     help="allow ModelService.HandleReloadConfigRequest to replace the model config (off by default: "
                          "anyone who can reach the port could otherwise point the server at other directories)")
    run.add_argument("--tensorflow-intra-op-parallelism", "--tensorflow_intra_op_parallelism", type=int, default=-1,
                     dest="intra_op_parallelism",
                     help="TF intra-op threads (default -1 = auto: CPUs - 1, at least 1, leaving a core to the "
                          "Python front end; 0 = TF's own default, one per CPU)")
    run.add_argument("--tensorflow-inter-op-parallelism", "--tensorflow_inter_op_parallelism", type=int, default=-1,
                     dest="inter_op_parallelism", help="TF inter-op threads (default -1 = auto, as above; 0 = TF's default)")
    run.add_argument("--drain-timeout-seconds", type=float, default=30.0,
                     help="on SIGINT/SIGTERM, how long in-flight requests may take to finish (default 30)")
    run.add_argument("--log-level", default=os.environ.get("SERVING_LOG_LEVEL", "INFO"),
                     choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log verbosity (default INFO)")
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Check flag combinations and build the ServerConfig; raise ValueError with a message that says what to do."""
    config_file = args.model_config_file
    if args.models_dir is not None:
        if config_file is not None:
            raise ValueError("give either --models-dir or --model-config-file, not both")
        config_file = Path(args.models_dir) / LOCAL_MODEL_CONFIG
        if not config_file.is_file():
            raise ValueError(f"{config_file} not found: export the models first (`make export`) "
                             "or point --model-config-file at a ModelServerConfig")
    single = args.model_name is not None or args.model_base_path is not None
    if single and config_file is not None:
        raise ValueError("--model-name/--model-base-path cannot be combined with a model config file")
    if single and (args.model_name is None or args.model_base_path is None):
        raise ValueError("--model-name and --model-base-path go together")
    if not single and config_file is None:
        raise ValueError("nothing to serve: give --models-dir, --model-config-file, or --model-name with --model-base-path")
    if args.batching_parameters_file is not None and not args.enable_batching:
        # TF Serving refuses this combination too: a batching file without the flag is almost always a mistake.
        raise ValueError("--batching-parameters-file needs --enable-batching")
    if args.grpc_max_threads < 1:
        raise ValueError("--grpc-max-threads must be >= 1")
    if args.max_concurrent_executions < 0 or args.max_queued_executions < 0:
        raise ValueError("--max-concurrent-executions and --max-queued-executions must be >= 0")
    if args.max_request_bytes < 1024:
        raise ValueError("--max-request-bytes must be >= 1024")
    return ServerConfig(
        model_config_file=Path(config_file).resolve() if config_file else None,
        model_name=args.model_name,
        model_base_path=Path(args.model_base_path).resolve() if args.model_base_path else None,
        host=args.host,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        mode=args.mode,
        enable_batching=args.enable_batching,
        batching_parameters_file=args.batching_parameters_file,
        file_system_poll_wait_seconds=max(0.0, args.file_system_poll_wait_seconds),
        enable_model_warmup=args.enable_model_warmup,
        enable_config_reload=args.enable_config_reload,
        grpc_max_threads=args.grpc_max_threads,
        rest_api_timeout_ms=args.rest_api_timeout_ms,
        max_request_bytes=args.max_request_bytes,
        max_tensor_elements=args.max_tensor_elements,
        intra_op_parallelism=args.intra_op_parallelism,
        inter_op_parallelism=args.inter_op_parallelism,
        drain_timeout_seconds=args.drain_timeout_seconds,
        full_queue_status=args.full_queue_status,
        max_concurrent_executions=args.max_concurrent_executions,
        max_queued_executions=args.max_queued_executions,
        log_level=args.log_level,
    )
