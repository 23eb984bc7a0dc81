"""Wire the pieces together, run until SIGINT/SIGTERM, then drain in-flight requests and exit cleanly.

Order of events:
  1. ports open at once (health NOT_SERVING; model status shows LOADING), so an orchestrator can see the
     server is alive while models load;
  2. models load with progress logs (runner, warmup); health turns SERVING;
  3. on SIGINT/SIGTERM: health NOT_SERVING, no new connections or RPCs, in-flight requests finish (up to
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
from typing import Any

import grpc

from serving.flags import ServerConfig

log = logging.getLogger("serving.server")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def _sources(cfg: ServerConfig) -> list[Any]:
    from serving.model_manager import ModelSource, sources_from_config

    if cfg.model_config_file is not None:
        from serving.tfserving_config import parse_model_server_config

        return sources_from_config(parse_model_server_config(cfg.model_config_file))
    name = cfg.model_name or ""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid --model-name {name!r}")
    return [ModelSource(name=name, base_path=cfg.model_base_path, policy="latest", num_versions=1)]


def _batching_settings(cfg: ServerConfig) -> Any:
    from serving.tfserving_config import BatchingSettings, load_batching_settings

    if cfg.batching_parameters_file is None:
        log.warning("--enable-batching without --batching-parameters-file: using TF Serving's defaults")
        return BatchingSettings()
    return load_batching_settings(cfg.batching_parameters_file)


def tf_thread_counts(intra: int, inter: int, cpus: int | None = None) -> tuple[int, int]:
    """Resolve -1 (auto) to CPUs - 1 (at least 1); 0 stays 0 (TF's default: one thread per CPU).

    Why not TF's default: the Python front end (gRPC, proto/numpy conversion, batching) needs a core of its
    own, and with one pool thread per CPU the pools' spinning and hand-offs compete with it. Measured on the
    2-core reference machine (PERFORMANCE.md): 1 + 1 threads cut the CPU of a batch-1 call of the exported
    models from ~500 to ~290 us, and were no slower up to 256-row batches.
    """
    auto = max(1, (cpus or os.cpu_count() or 1) - 1)
    return (auto if intra < 0 else intra), (auto if inter < 0 else inter)


def run_server(cfg: ServerConfig) -> int:
    _setup_logging(cfg.log_level)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    stop = threading.Event()
    signals_seen = [0]

    def on_signal(signum: int, _frame: Any) -> None:
        signals_seen[0] += 1
        if signals_seen[0] > 1:
            log.warning("second signal: exiting without waiting for the drain")
            os._exit(1)
        log.info("received %s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        sources = _sources(cfg)
        settings = _batching_settings(cfg) if cfg.enable_batching else None
    except ValueError as exc:
        log.error("%s", exc)
        return 2

    log.info("starting embedded server: mode=%s, %d model(s): %s", cfg.mode, len(sources),
             ", ".join(f"{s.name} ({s.base_path}, {s.policy})" for s in sources))
    import tensorflow as tf

    intra, inter = tf_thread_counts(cfg.intra_op_parallelism, cfg.inter_op_parallelism)
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    log.info("TensorFlow threads: intra-op %s, inter-op %s", intra or "TF default", inter or "TF default")

    from serving.batching import SharedBatchScheduler
    from serving.core import ExecutionSettings, ServingCore
    from serving.grpc_api import build_grpc_server, set_health
    from serving.metrics import ServingMetrics
    from serving.model_manager import ModelManager
    from serving.rest_api import RestApp, RestServer

    metrics = ServingMetrics()
    scheduler = None
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
    core = ServingCore(cfg.mode, metrics, scheduler, cfg.max_tensor_elements, cfg.enable_model_warmup, execution)
    manager = ModelManager(sources, core.load_version, cfg.file_system_poll_wait_seconds)
    core.manager = manager

    try:
        grpc_server, grpc_port, health_servicer = build_grpc_server(
            core, manager, cfg.host, cfg.grpc_port, cfg.max_request_bytes, cfg.enable_config_reload)
        rest = None
        if cfg.rest_port >= 0:
            rest = RestServer(RestApp(core, manager, cfg.rest_api_timeout_ms), cfg.host, cfg.rest_port, cfg.max_request_bytes)
    except (OSError, RuntimeError) as exc:
        log.error("cannot open the server ports: %s", exc)
        return 2
    grpc_server.start()
    if rest is not None:
        rest.start()
    log.info("listening: gRPC %s:%d, REST %s (models loading; health NOT_SERVING until done)", cfg.host, grpc_port,
             f"{cfg.host}:{rest.port}" if rest else "off")

    loaded = threading.Event()
    load_error: list[BaseException] = []

    def initial_load() -> None:
        try:
            manager.start()
        except BaseException as exc:  # reported below; the main thread decides the exit code
            load_error.append(exc)
        finally:
            loaded.set()

    threading.Thread(target=initial_load, name="initial-load", daemon=True).start()
    while not stop.is_set() and not loaded.wait(0.2):
        pass
    if load_error:
        log.error("model loading failed: %s", load_error[0])
    elif loaded.is_set() and not stop.is_set():
        if not manager.all_models_available():
            log.warning("some models have no AVAILABLE version yet; requests for them answer NOT_FOUND until one loads")
        set_health(health_servicer, True)
        log.info("ready: gRPC %s:%d, REST %s, mode=%s, batching=%s", cfg.host, grpc_port,
                 f"{cfg.host}:{rest.port}" if rest else "off", cfg.mode, "on" if scheduler else "off")

    while not stop.wait(0.5):
        pass

    # ---------------------------------------------------------------- drain
    started = time.monotonic()
    set_health(health_servicer, False)
    if rest is not None:
        rest.stop_accepting()
    grpc_done = grpc_server.stop(grace=cfg.drain_timeout_seconds)
    remaining = lambda: max(0.0, cfg.drain_timeout_seconds - (time.monotonic() - started))  # noqa: E731
    rest_drained = rest.drain(remaining()) if rest is not None else True
    grpc_drained = grpc_done.wait(remaining())
    if scheduler is not None:
        scheduler.stop(timeout=remaining() + 1)
    manager.stop()
    core.close()
    grpc_server.close()
    if rest is not None:
        rest.close()
    drained = rest_drained and grpc_drained
    log.info("stopped after %.2f s drain (%s)", time.monotonic() - started,
             "all in-flight requests finished" if drained else "drain timeout: some requests were cut off")
    return 0 if drained and not load_error else 1
