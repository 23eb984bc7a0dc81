"""Command line of `python -m serving serve` and the ServerConfig dataclass it produces.

Flag names follow TF Serving's (`tensorflow_model_server --help`) in kebab case, and TF Serving's own
spellings are accepted with TF Serving's meaning (`--port`, `--rest_api_port`, `--model_config_file`,
`--enable_batching=true`, ...), so a command line written for the real server runs the embedded one
unchanged. Where the two meanings differ the spellings are separate flags: `--port=0` / `--rest_api_port=0`
turn gRPC-over-TCP / REST off (TF Serving), `--grpc-port 0` / `--rest-port 0` pick a free port (the
project's tests and benchmarks). TF Serving flags the embedded server cannot honour are refused with a
reason (serving/cli/tf_flag_syntax.py).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from export.contract import GRAPH_EXECUTORS, LOCAL_MODEL_CONFIG_FILE, PROMETHEUS_PATH, SERVER_MODES
from serving.cli.tf_flag_syntax import BoolFlag, VersionFlag, add_unsupported_flags, parse_grpc_channel_arguments

DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
DEFAULT_MODEL_NAME = "default"  # TF Serving's name for a model given by --model_base_path alone

DESCRIPTION = """\
Serve exported SavedModels with TensorFlow Serving's own gRPC and REST APIs (built from the official
protos in tensorflow-serving-api), so every client written for TF Serving works unchanged against it.

Models come from a ModelServerConfig text proto (--model-config-file, or <models-dir>/models.local.config),
or from a single --model-name/--model-base-path pair. Like tensorflow_model_server, the configured models
load first and the ports open after. Version directories under each base path are polled
(--file-system-poll-wait-seconds): new versions load (after warmup replay) while the server keeps serving,
old ones are unloaded by the version policy once nothing uses them, and a broken version is refused with
its error in the model status while the previous one keeps serving. With
--model-config-file-poll-wait-seconds the config file itself is re-read: models added to it load, models
removed from it unload.

TF Serving's own command line works as is (--port=8500 --rest_api_port=8501 --model_config_file=...
--enable_batching=true ...); its flags that cannot be honoured here are refused with the reason.

Execution modes:
  graph  run the SavedModel signature function, as TF Serving runs the graph (default)
  xla    the same signature function compiled with XLA (tf.function(jit_compile=True))
  eager  the Keras model rebuilt from assets.extra/model.keras, called eagerly (no tf.function); a model with
         custom classes needs --import MODULE, the module that registers them
"""

EPILOG = """\
examples:
  python -m serving serve --models-dir artifacts/models
  python -m serving serve --model-config-file artifacts/models/models.local.config --mode xla \\
      --enable-batching --batching-parameters-file docker/batching/batching_cpu.config
  python -m serving serve --model-name residual_regressor --model-base-path $PWD/artifacts/models/residual_regressor
  python -m serving serve --port=8500 --rest_api_port=8501 --model_config_file=$PWD/models.config \\
      --model_config_file_poll_wait_seconds=60 --monitoring_config_file=docker/monitoring.config

endpoints (defaults):
  gRPC 127.0.0.1:8500  tensorflow.serving.PredictionService / ModelService, grpc.health.v1.Health
  REST 127.0.0.1:8501  /v1/models/<m>[/versions/<v>|/labels/<l>][/metadata|:predict]
                       /monitoring/prometheus/metrics
"""


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start; built from the command line by :func:`config_from_args`."""

    model_config_file: Path | None = None
    model_name: str | None = None
    model_base_path: Path | None = None
    host: str = "127.0.0.1"
    grpc_port: int | None = DEFAULT_GRPC_PORT  # None: no gRPC over TCP (--port=0 with --grpc_socket_path)
    grpc_socket_path: Path | None = None
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()
    rest_port: int = DEFAULT_REST_PORT  # -1: no REST
    rest_api_num_threads: int | None = None  # None: no cap on requests handled at once
    prometheus_path: str | None = PROMETHEUS_PATH  # None: no metrics endpoint
    mode: str = "graph"
    # How graph mode runs a signature: "session" = TF's v1 Session (TF Serving's route) where the version loads
    # into one and agrees with the signature function on a probe, else the function; "function" = always the
    # TF2 signature function (serving/execution/runners.py GraphRunner).
    graph_executor: str = "session"
    enable_batching: bool = False
    batching_parameters_file: Path | None = None
    file_system_poll_wait_seconds: float = 1.0
    model_config_file_poll_wait_seconds: float = 0.0  # 0: the config file is read once
    max_num_load_retries: int = 0
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    enable_model_warmup: bool = True
    enable_config_reload: bool = False
    grpc_max_threads: int = 64
    rest_api_timeout_ms: int = 30_000
    max_request_bytes: int = 64 * 1024 * 1024
    max_tensor_elements: int = 16 * 1024 * 1024
    intra_op_parallelism: int = -1  # -1 = auto (serving.cli.server.tf_thread_counts), 0 = TF's default
    inter_op_parallelism: int = -1
    drain_timeout_seconds: float = 30.0
    full_queue_status: str = "RESOURCE_EXHAUSTED"
    # Unbatched executions of one model at once, from both APIs (serving/execution/scheduler.py); 0 = auto (8 x CPUs,
    # 1 in eager mode: serving.execution.core.ExecutionSettings). TF Serving's --rest_api_num_threads maps here.
    max_concurrent_executions: int = 0
    max_queued_executions: int = 1024  # per model, waiting for an execution slot; beyond: full_queue_status
    log_level: str = "INFO"



def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Attach every `serve` flag to ``parser`` (also used by the `serve` subcommand of serving/__main__.py)."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    # A short usage line: argparse prints it above every error, and the flags are listed by --help.
    parser.usage = "%(prog)s (--models-dir DIR | --model-config-file FILE | --model-base-path DIR) [flags]"
    parser.add_argument("--version", action=VersionFlag, help="print the server and TensorFlow versions and exit")
    _add_model_arguments(parser.add_argument_group("models (one of)"))
    _add_network_arguments(parser.add_argument_group("network"))
    _add_execution_arguments(parser.add_argument_group("execution"))
    _add_lifecycle_arguments(parser.add_argument_group("model lifecycle"))
    add_unsupported_flags(parser)
    return parser


def _add_model_arguments(src: argparse._ArgumentGroup) -> None:
    src.add_argument("--models-dir", type=Path,
                     help=f"an export directory; serves <dir>/{LOCAL_MODEL_CONFIG_FILE} (absolute base paths)")
    src.add_argument("--model-config-file", "--model_config_file", type=Path,
                     help="ModelServerConfig text proto (model_config_list with name, base_path, "
                          "model_version_policy, version_labels), as TF Serving reads it")
    src.add_argument("--model-name", "--model_name",
                     help=f"serve one model under this name (with --model-base-path; default {DEFAULT_MODEL_NAME!r})")
    src.add_argument("--model-base-path", "--model_base_path", type=Path,
                     help="directory holding integer version directories of that one model (latest version served)")


def _add_network_arguments(net: argparse._ArgumentGroup) -> None:
    net.add_argument("--host", default="127.0.0.1",
                     help="interface to listen on (default 127.0.0.1: local only; 0.0.0.0 to expose)")
    net.add_argument("--grpc-port", type=int, default=None,
                     help=f"gRPC port (default {DEFAULT_GRPC_PORT}; 0 = pick a free one, unlike TF Serving's --port 0)")
    net.add_argument("--port", type=int, dest="tf_port", metavar="PORT",
                     help="TF Serving's gRPC port flag: as --grpc-port, except that 0 turns gRPC over TCP off "
                          "(then --grpc_socket_path is needed)")
    net.add_argument("--grpc-socket-path", "--grpc_socket_path", type=Path,
                     help="also serve gRPC on this Unix domain socket (clients use target unix:<path>)")
    net.add_argument("--grpc-channel-arguments", "--grpc_channel_arguments", default="",
                     help="k=v,k=v gRPC server channel arguments (e.g. grpc.max_connection_age_ms=2000); values "
                          "that parse as 32-bit integers are passed as integers, as TF Serving does")
    net.add_argument("--grpc-max-threads", "--grpc_max_threads", type=int, default=64,
                     help="accepted for command-line compatibility with TF Serving; the embedded gRPC server is "
                          "asyncio (one event loop, no thread per request: a request waiting for its batch holds no "
                          "thread), so there is no request thread pool to size")
    net.add_argument("--rest-port", type=int, default=None,
                     help=f"REST port (default {DEFAULT_REST_PORT}; -1 disables REST; 0 = pick a free one, unlike TF "
                          "Serving's --rest_api_port 0)")
    net.add_argument("--rest_api_port", type=int, dest="tf_rest_api_port", metavar="PORT",
                     help="TF Serving's REST port flag: as --rest-port, except that 0 turns REST off")
    net.add_argument("--rest-api-num-threads", "--rest_api_num_threads", type=int,
                     help="at most this many REST requests are handled at once, the others wait their turn "
                          "(default: no cap; TF Serving's default is 4 x CPUs)")
    net.add_argument("--rest-api-timeout-ms", "--rest_api_timeout_in_ms", type=int, default=30_000,
                     help="deadline of a REST request in ms (default 30000, like TF Serving)")
    net.add_argument("--monitoring-config-file", "--monitoring_config_file", type=Path,
                     help="MonitoringConfig text proto: prometheus_config { enable, path } decides whether and "
                          f"where metrics are served on the REST port (default without it: on, {PROMETHEUS_PATH})")
    net.add_argument("--max-request-bytes", type=int, default=64 * 1024 * 1024,
                     help="largest REST body / gRPC message accepted (default 64 MiB; bigger REST bodies get 413)")
    net.add_argument("--max-tensor-elements", type=int, default=16 * 1024 * 1024,
                     help="largest number of elements one input tensor may declare (default 16Mi); "
                          "protects the server from allocating from a shape a client merely claims")


def _add_execution_arguments(run: argparse._ArgumentGroup) -> None:
    run.add_argument("--mode", choices=SERVER_MODES, default="graph", help="graph | xla | eager (see above)")
    run.add_argument("--graph-executor", choices=GRAPH_EXECUTORS, default="session",
                     help="graph mode: 'session' runs each signature in a v1 Session, as TF Serving does, wherever "
                          "the version loads into one and answers a probe input as the signature function does "
                          "(else the function); 'function' always calls the TF2 signature function (default session)")
    run.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                     help="import MODULE at start: registers the custom Keras classes eager mode needs (repeatable)")
    run.add_argument("--enable-batching", "--enable_batching", action=BoolFlag, default=False,
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
                          "the GIL); requests beyond wait in one first-come-first-served queue. TF Serving has no one "
                          "flag for it (--rest_api_num_threads caps REST handler threads, num_batch_threads batch "
                          "executions). "
                          "With batching on, batchable signatures use num_batch_threads instead")
    run.add_argument("--max-queued-executions", type=int, default=1024,
                     help="requests of one model that may wait for an execution slot (default 1024); more are "
                          "refused at once with --full-queue-status, like a full batch queue")
    run.add_argument("--tensorflow-intra-op-parallelism", "--tensorflow_intra_op_parallelism", type=int, default=-1,
                     dest="intra_op_parallelism",
                     help="TF intra-op threads (default -1 = auto: CPUs - 1, at least 1, leaving a core to the "
                          "Python front end; 0 = TF's own default, one per CPU)")
    run.add_argument("--tensorflow-inter-op-parallelism", "--tensorflow_inter_op_parallelism", type=int, default=-1,
                     dest="inter_op_parallelism", help="TF inter-op threads (default -1 = auto, as above; 0 = TF's default)")
    run.add_argument("--tensorflow-session-parallelism", "--tensorflow_session_parallelism", type=int, default=0,
                     dest="session_parallelism",
                     help="TF Serving's shorthand: both thread counts at once (when neither is given)")
    run.add_argument("--drain-timeout-seconds", type=float, default=30.0,
                     help="on SIGINT/SIGTERM, how long in-flight requests may take to finish (default 30)")
    run.add_argument("--log-level", default=os.environ.get("SERVING_LOG_LEVEL", "INFO"),
                     choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log verbosity (default INFO)")
    run.add_argument("--verbose", action="store_true",
                     help="also show TensorFlow's start-up banners and GPU probe lines (hidden by default)")


def _add_lifecycle_arguments(life: argparse._ArgumentGroup) -> None:
    life.add_argument("--file-system-poll-wait-seconds", "--file_system_poll_wait_seconds", type=float, default=1.0,
                      help="how often base paths are scanned for new/removed versions (default 1; 0 = load once)")
    life.add_argument("--model-config-file-poll-wait-seconds", "--model_config_file_poll_wait_seconds", type=float,
                      default=0.0, help="re-read the model config file this often: models added to it load, models "
                                        "removed from it unload (default 0 = read once at start)")
    life.add_argument("--enable-model-warmup", "--enable_model_warmup", action=BoolFlag, default=True,
                      help="replay assets.extra/tf_serving_warmup_requests before a version is AVAILABLE (default on)")
    life.add_argument("--no-enable-model-warmup", dest="enable_model_warmup", action="store_false",
                      help="same as --enable-model-warmup=false")
    life.add_argument("--max-num-load-retries", "--max_num_load_retries", type=int, default=0,
                      help="retry a version that failed to load this many times, --load-retry-interval-micros apart, "
                           "before refusing it (default 0: refused at once and retried when its files change; "
                           "TF Serving's default is 5)")
    life.add_argument("--load-retry-interval-micros", "--load_retry_interval_micros", type=int, default=60_000_000,
                      help="wait between load retries in microseconds (default 60000000 = 1 min; negative = no wait)")
    life.add_argument("--allow-version-labels-for-unavailable-models", "--allow_version_labels_for_unavailable_models",
                      action=BoolFlag, default=False,
                      help="let a config assign a new label to a version that is not loaded (yet); without it, as in "
                           "TF Serving, such a config is refused (at start: the server exits)")
    life.add_argument("--enable-config-reload", action="store_true",
                      help="allow ModelService.HandleReloadConfigRequest to replace the model config (off by default: "
                           "anyone who can reach the port could otherwise point the server at other directories)")


def _model_source(args: argparse.Namespace) -> tuple[Path | None, str | None, Path | None]:
    """(config file, model name, base path) from --models-dir / --model-config-file / --model-name + base path."""
    config_file = args.model_config_file
    if args.models_dir is not None:
        if config_file is not None:
            raise ValueError("give either --models-dir or --model-config-file, not both")
        config_file = Path(args.models_dir) / LOCAL_MODEL_CONFIG_FILE
        if not config_file.is_file():
            raise ValueError(f"{config_file} not found: export the models first (`make export`) "
                             "or point --model-config-file at a ModelServerConfig")
    single = args.model_name is not None or args.model_base_path is not None
    if single and config_file is not None:
        raise ValueError("--model-name/--model-base-path cannot be combined with a model config file")
    if args.model_name is not None and args.model_base_path is None:
        raise ValueError("--model-name needs --model-base-path")
    if not single and config_file is None:
        raise ValueError("nothing to serve: give --models-dir, --model-config-file, or --model-base-path "
                         "(with --model-name)")
    if args.model_config_file_poll_wait_seconds > 0 and config_file is None:
        raise ValueError("--model-config-file-poll-wait-seconds needs a model config file to poll")
    name = (args.model_name or DEFAULT_MODEL_NAME) if single else None
    return (Path(config_file).resolve() if config_file else None, name,
            Path(args.model_base_path).resolve() if args.model_base_path else None)


def _ports(args: argparse.Namespace) -> tuple[int | None, int]:
    """(gRPC TCP port or None, REST port or -1) from the project's and TF Serving's spellings."""
    if args.tf_port is not None and args.grpc_port is not None:
        raise ValueError("give either --grpc-port or --port, not both")
    if args.tf_rest_api_port is not None and args.rest_port is not None:
        raise ValueError("give either --rest-port or --rest_api_port, not both")
    grpc_port: int | None = DEFAULT_GRPC_PORT if args.grpc_port is None else args.grpc_port
    if args.tf_port is not None:
        grpc_port = args.tf_port or None
    if grpc_port is None and args.grpc_socket_path is None:
        raise ValueError("--port=0 turns gRPC over TCP off: give --grpc_socket_path too, or a port")
    rest_port = DEFAULT_REST_PORT if args.rest_port is None else args.rest_port
    if args.tf_rest_api_port is not None:
        rest_port = args.tf_rest_api_port or -1
    if grpc_port and rest_port == grpc_port:
        raise ValueError(f"the REST port cannot be the same as the gRPC port ({grpc_port})")
    return grpc_port, rest_port


def _thread_counts(args: argparse.Namespace) -> tuple[int, int]:
    intra, inter, session = args.intra_op_parallelism, args.inter_op_parallelism, args.session_parallelism
    if session > 0 and intra > 0 and inter > 0:
        raise ValueError("either configure --tensorflow_session_parallelism or (--tensorflow_intra_op_parallelism, "
                         "--tensorflow_inter_op_parallelism) separately, not all three")  # TF Serving's rule
    if session > 0 and intra < 0 and inter < 0:
        return session, session
    return intra, inter


def _prometheus_path(args: argparse.Namespace) -> str | None:
    if args.monitoring_config_file is None:
        return PROMETHEUS_PATH
    from serving.cli.config_files import parse_monitoring_config, prometheus_path

    return prometheus_path(parse_monitoring_config(Path(args.monitoring_config_file)))


def _check_limits(args: argparse.Namespace) -> None:
    if args.batching_parameters_file is not None and not args.enable_batching:
        # TF Serving refuses this combination too: a batching file without the flag is almost always a mistake.
        raise ValueError("--batching-parameters-file needs --enable-batching")
    if args.grpc_max_threads < 1:
        raise ValueError("--grpc-max-threads must be >= 1")
    if args.max_concurrent_executions < 0 or args.max_queued_executions < 0:
        raise ValueError("--max-concurrent-executions and --max-queued-executions must be >= 0")
    if args.max_request_bytes < 1024:
        raise ValueError("--max-request-bytes must be >= 1024")
    if args.rest_api_num_threads is not None and args.rest_api_num_threads < 1:
        raise ValueError("--rest-api-num-threads must be >= 1")
    if args.max_num_load_retries < 0:
        raise ValueError("--max-num-load-retries must be >= 0")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Check flag combinations and build the ServerConfig; raise ValueError with a message that says what to do."""
    _check_limits(args)
    from export.keras_source import import_modules
    from export.pipeline import ExportError

    try:  # here, in the server's own process, before any model loads
        import_modules(args.imports)
    except ExportError as exc:
        raise ValueError(str(exc)) from None
    config_file, model_name, base_path = _model_source(args)
    grpc_port, rest_port = _ports(args)
    intra, inter = _thread_counts(args)
    return ServerConfig(
        model_config_file=config_file,
        model_name=model_name,
        model_base_path=base_path,
        host=args.host,
        grpc_port=grpc_port,
        grpc_socket_path=Path(args.grpc_socket_path).absolute() if args.grpc_socket_path else None,
        grpc_channel_arguments=parse_grpc_channel_arguments(args.grpc_channel_arguments),
        rest_port=rest_port,
        rest_api_num_threads=args.rest_api_num_threads,
        prometheus_path=_prometheus_path(args),
        mode=args.mode,
        graph_executor=args.graph_executor,
        enable_batching=args.enable_batching,
        batching_parameters_file=args.batching_parameters_file,
        file_system_poll_wait_seconds=max(0.0, args.file_system_poll_wait_seconds),
        model_config_file_poll_wait_seconds=max(0.0, args.model_config_file_poll_wait_seconds),
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_micros=args.load_retry_interval_micros,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        enable_model_warmup=args.enable_model_warmup,
        enable_config_reload=args.enable_config_reload,
        grpc_max_threads=args.grpc_max_threads,
        rest_api_timeout_ms=args.rest_api_timeout_ms,
        max_request_bytes=args.max_request_bytes,
        max_tensor_elements=args.max_tensor_elements,
        intra_op_parallelism=intra,
        inter_op_parallelism=inter,
        drain_timeout_seconds=args.drain_timeout_seconds,
        full_queue_status=args.full_queue_status,
        max_concurrent_executions=args.max_concurrent_executions,
        max_queued_executions=args.max_queued_executions,
        log_level=args.log_level,
    )
