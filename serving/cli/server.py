"""Wire the pieces together, run until SIGINT/SIGTERM, then drain in-flight requests and exit cleanly.

Order of events (tensorflow_model_server's: models first, ports after):
  1. the command line's files are read: the model config (a malformed one ends the process with status 2
     and "Error parsing text-format tensorflow.serving.ModelServerConfig: ..." on stderr), the batching file;
  2. the configured models load, with progress logs (runner, warmup); version labels are checked;
  3. the ports open (gRPC TCP and/or Unix socket, REST), health turns SERVING (NOT_SERVING while a configured
     model waits for its first version), the "listening:" log line is
     written; the model config file is polled from then on if asked (--model_config_file_poll_wait_seconds);
  4. on SIGINT/SIGTERM: health NOT_SERVING, no new connections or RPCs, in-flight requests finish (up to
     --drain-timeout-seconds), batch threads finish their queues, versions are closed; exit code 0.
     A second signal during the drain exits at once (code 1).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from serving.errors import ServingError
from serving.cli.serve_flags import ServerConfig

log = logging.getLogger("serving.server")

EXIT_BAD_CONFIG = 2  # the command line or a file it names is wrong: nothing was started
EXIT_FAILED = 1  # started, but could not serve (models, ports) or the drain was cut short


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def tf_thread_counts(intra: int, inter: int, cpus: int | None = None) -> tuple[int, int]:
    """Resolve -1 (auto) to CPUs - 1 (at least 1); 0 stays 0 (TF's default: one thread per CPU).

    Why not TF's default: the Python front end (gRPC, proto/numpy conversion, batching) needs a core of its
    own, and with one pool thread per CPU the pools' spinning and hand-offs compete with it. Measured on the
    2-core reference machine (docs/performance.md): 1 + 1 threads cut the CPU of a batch-1 call of the exported
    models from ~500 to ~290 us, and were no slower up to 256-row batches.
    """
    auto = max(1, (cpus or os.cpu_count() or 1) - 1)
    return (auto if intra < 0 else intra), (auto if inter < 0 else inter)


@dataclass
class _Inputs:
    """What the command line's files say: the models, the config file's text as read, batching settings."""

    sources: list[Any]
    config_text: str
    batching: Any


def _read_inputs(cfg: ServerConfig) -> _Inputs:
    """Raise ValueError / ServingError naming the problem; TF Serving's wording for a malformed model config."""
    from google.protobuf import text_format

    from serving.lifecycle.config_poll import read_sources
    from serving.lifecycle.model_manager import ModelSource
    from serving.cli.config_files import ModelServerConfig

    if cfg.model_config_file is not None:
        try:
            text, sources = read_sources(cfg.model_config_file)
        except ValueError as exc:
            if isinstance(exc.__cause__, text_format.ParseError):
                raise ValueError(f"Error parsing text-format {ModelServerConfig.DESCRIPTOR.full_name}: "
                                 f"{exc.__cause__} (in {cfg.model_config_file})") from exc
            raise
    else:
        name = cfg.model_name or ""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid --model-name {name!r}")
        text = ""
        sources = [ModelSource(name=name, base_path=cfg.model_base_path, policy="latest", num_versions=1)]
    return _Inputs(sources, text, _batching_settings(cfg) if cfg.enable_batching else None)


def _batching_settings(cfg: ServerConfig) -> Any:
    from serving.cli.config_files import BatchingSettings, load_batching_settings

    if cfg.batching_parameters_file is None:
        log.warning("--enable-batching without --batching-parameters-file: using TF Serving's defaults")
        return BatchingSettings()
    return load_batching_settings(cfg.batching_parameters_file)


def configure_tensorflow_threads(intra_op: int = -1, inter_op: int = -1) -> None:
    """TensorFlow's thread pools as the server sizes them (tf_thread_counts); also what
    `python -m benchmarks graph-call --server-threads` uses to time calls as the server makes them."""
    import tensorflow as tf

    intra, inter = tf_thread_counts(intra_op, inter_op)
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    log.info("TensorFlow threads: intra-op %s, inter-op %s", intra or "TF default", inter or "TF default")


@dataclass
class ServerParts:
    """The long-lived objects of one server process, in the order they are shut down (reversed)."""

    core: Any
    manager: Any
    scheduler: Any = None
    poller: Any = None
    grpc_server: Any = None
    rest: Any = None


def build_parts(cfg: ServerConfig, sources: list[Any], batching: Any = None) -> ServerParts:
    """The server's long-lived objects for ``sources``, models not loaded yet (``parts.manager.start()``)."""
    from serving.execution.batching import SharedBatchScheduler
    from serving.execution.core import ExecutionSettings, ServingCore
    from serving.metrics import ServingMetrics
    from serving.lifecycle.model_manager import LoadRetries, ModelManager

    metrics = ServingMetrics()
    scheduler = None
    settings = batching
    if settings is not None:
        scheduler = SharedBatchScheduler(settings, metrics, getattr(grpc.StatusCode, cfg.full_queue_status))
        log.info("batching on: max_batch_size=%d batch_timeout_micros=%d num_batch_threads=%d "
                 "max_enqueued_batches=%d allowed_batch_sizes=%s large_batch_splitting=%s",
                 settings.max_batch_size, settings.batch_timeout_micros, settings.num_batch_threads,
                 settings.max_enqueued_batches, list(settings.allowed_batch_sizes), settings.enable_large_batch_splitting)
    execution = ExecutionSettings(cfg.max_concurrent_executions, cfg.max_queued_executions,
                                  getattr(grpc.StatusCode, cfg.full_queue_status))
    log.info("unbatched execution: %d at once per model (gRPC and REST together), up to %d waiting",
             execution.concurrency(cfg.mode), execution.max_queued)
    core = ServingCore(cfg.mode, metrics, scheduler, cfg.max_tensor_elements, cfg.enable_model_warmup, execution,
                       graph_executor=cfg.graph_executor)
    retries = LoadRetries(cfg.max_num_load_retries, max(0.0, cfg.load_retry_interval_micros / 1e6))
    manager = ModelManager(sources, core.load_version, cfg.file_system_poll_wait_seconds, retries,
                           cfg.allow_version_labels_for_unavailable_models)
    core.manager = manager
    manager.on_model_removed = core.forget_model
    return ServerParts(core, manager, scheduler)


def _load_models(parts: ServerParts, stop: threading.Event) -> str | None:
    """Load every configured model (blocking, but a signal still stops the wait); None when ready to serve,
    else why not."""
    loaded = threading.Event()
    error: list[BaseException] = []

    def initial_load() -> None:
        try:
            parts.manager.start()
        except BaseException as exc:  # reported by the caller, which decides the exit code
            error.append(exc)
        finally:
            loaded.set()

    threading.Thread(target=initial_load, name="initial-load", daemon=True).start()
    while not stop.is_set() and not loaded.wait(0.2):
        pass
    if error:
        return f"model loading failed: {error[0]}"
    if stop.is_set():
        return None
    problems = parts.manager.label_problems()
    if problems:
        return "FAILED_PRECONDITION: " + "; ".join(problems)
    if not parts.manager.all_models_available():
        log.warning("some models have no AVAILABLE version; requests for them answer NOT_FOUND until one loads")
    return None


def _open_ports(cfg: ServerConfig, parts: ServerParts) -> str:
    """Start gRPC (TCP and/or Unix socket) and REST; returns where they listen. Raises OSError."""
    from serving.api.grpc_api import GrpcListen, GrpcServer
    from serving.api.rest_api import RestApp, RestServer

    listen = GrpcListen(cfg.host, cfg.grpc_port, cfg.grpc_socket_path, cfg.grpc_channel_arguments, cfg.max_request_bytes)
    parts.grpc_server = GrpcServer(parts.core, parts.manager, listen, cfg.enable_config_reload)
    grpc_port = parts.grpc_server.port
    if cfg.rest_port >= 0:
        app = RestApp(parts.core, parts.manager, cfg.rest_api_timeout_ms, cfg.prometheus_path)
        parts.rest = RestServer(app, cfg.host, cfg.rest_port, cfg.max_request_bytes, cfg.rest_api_num_threads)
    parts.grpc_server.start()
    if parts.rest is not None:
        parts.rest.start()
    where = (f"gRPC {cfg.host}:{grpc_port}" if grpc_port is not None else "gRPC TCP off") + \
        (f", REST {cfg.host}:{parts.rest.port}" if parts.rest else ", REST off")
    if cfg.grpc_socket_path is not None:
        where += f", gRPC unix:{cfg.grpc_socket_path}"
    return where


def _start_config_poller(cfg: ServerConfig, parts: ServerParts, inputs: _Inputs) -> None:
    if cfg.model_config_file is None or cfg.model_config_file_poll_wait_seconds <= 0:
        return
    from serving.lifecycle.config_poll import ConfigFilePoller

    parts.poller = ConfigFilePoller(cfg.model_config_file, cfg.model_config_file_poll_wait_seconds, parts.manager,
                                    inputs.config_text)
    parts.poller.start()


def _signal_event() -> threading.Event:
    """An event set by the first SIGINT/SIGTERM; a second one exits at once."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("second signal: exiting without waiting for the drain")
            os._exit(EXIT_FAILED)
        log.info("received %s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def run_server(cfg: ServerConfig) -> int:
    _setup_logging(cfg.log_level)
    stop = _signal_event()
    try:
        inputs = _read_inputs(cfg)
    except (ValueError, ServingError) as exc:
        log.error("Failed to start server. Error: %s", exc.message if isinstance(exc, ServingError) else exc)
        return EXIT_BAD_CONFIG
    log.info("starting embedded server: mode=%s, %d model(s): %s", cfg.mode, len(inputs.sources),
             ", ".join(f"{s.name} ({s.base_path}, {s.policy})" for s in inputs.sources))
    configure_tensorflow_threads(cfg.intra_op_parallelism, cfg.inter_op_parallelism)
    parts = build_parts(cfg, inputs.sources, inputs.batching)
    failure, healthy = _load_models(parts, stop), None
    if failure is None and not stop.is_set():
        try:
            where = _open_ports(cfg, parts)
        except (OSError, RuntimeError) as exc:
            failure = f"cannot open the server ports: {exc}"
        else:
            healthy = _update_health(parts, None)
            _start_config_poller(cfg, parts, inputs)
            log.info("listening: %s (initial load done; health %s), mode=%s, batching=%s", where,
                     "SERVING" if healthy else "NOT_SERVING", cfg.mode, "on" if parts.scheduler else "off")
    if failure is not None:
        log.error("Failed to start server. Error: %s", failure)
        _shutdown(parts, time.monotonic(), cfg.drain_timeout_seconds)
        return EXIT_FAILED
    while not stop.wait(0.5):
        healthy = _update_health(parts, healthy)
    return 0 if _shutdown(parts, time.monotonic(), cfg.drain_timeout_seconds) else EXIT_FAILED


def _update_health(parts: ServerParts, was: bool | None) -> bool:
    """NOT_SERVING while a configured model waits for its first version: TF Serving would not have opened its
    ports yet, so a health probe must not route traffic to a server without the model it was started for."""
    missing = parts.manager.models_waiting()
    healthy = not missing
    if healthy != was:
        parts.grpc_server.set_health(healthy)
        if not healthy:
            log.error("health NOT_SERVING: no version of %s found yet", ", ".join(missing))
        elif was is not None:
            log.info("health SERVING: every configured model has a version")
    return healthy


def _shutdown(parts: ServerParts, started: float, drain_seconds: float) -> bool:
    """Drain and close whatever was started; True when every in-flight request finished in time."""
    remaining = lambda: max(0.0, drain_seconds - (time.monotonic() - started))  # noqa: E731
    if parts.poller is not None:
        parts.poller.stop()
    rest_drained = grpc_drained = True
    if parts.grpc_server is not None:
        parts.grpc_server.set_health(False)
        if parts.rest is not None:
            parts.rest.stop_accepting()
        grpc_done = parts.grpc_server.stop(grace=drain_seconds)
        rest_drained = parts.rest.drain(remaining()) if parts.rest is not None else True
        grpc_drained = grpc_done.wait(remaining())
    if parts.scheduler is not None:
        parts.scheduler.stop(timeout=remaining() + 1)
    parts.manager.stop()
    parts.core.close()
    if parts.grpc_server is not None:
        parts.grpc_server.close()
    if parts.rest is not None:
        parts.rest.close()
    drained = rest_drained and grpc_drained
    log.info("stopped after %.2f s drain (%s)", time.monotonic() - started,
             "all in-flight requests finished" if drained else "drain timeout: some requests were cut off")
    return drained
