"""Transport-independent request handling shared by the gRPC and REST front ends.

predict / metadata / status are implemented once here, against the ModelManager (classify / regress /
multi-inference in inference.py, run through the same run() / run_async()); api/grpc_api.py and api/rest_api.py
only translate their wire formats. This module also builds a loaded version (the loader the
ModelManager calls): runner for the chosen mode, batch queues, warmup replay.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from export.contract import CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME
from serving.execution import inference
from serving.execution.batching import BatchQueue, SharedBatchScheduler
from serving.errors import ServingError, deadline_exceeded, invalid_argument
from serving.metrics import ServingMetrics, StageClock
from serving.lifecycle.model_manager import ModelManager, ServableVersion
from export.contract import DEFAULT_SIGNATURE
from serving.execution.runners import load_runner
from serving.execution.scheduler import ExecutionScheduler, ExecutionStats
from serving.tensors import SignatureSpec, batch_size_of, check_input_names, tensor_proto_to_ndarray
from serving.lifecycle.warmup import replay

log = logging.getLogger("serving.core")

UNKNOWN_MODEL_LABEL = "<unknown>"  # metrics label for names not in the config: bounded label cardinality
DEFAULT_MAX_QUEUED_EXECUTIONS = 1024


@dataclass(frozen=True)
class ExecutionSettings:
    """Unbatched execution of each model (serving/execution/scheduler.py), from ServerConfig.

    max_concurrent: executions of one model at once (TF Serving's --rest_api_num_threads maps here); 0 = auto:
    8 x CPUs in graph and xla mode (the kernels release the GIL, so calls overlap; twice TF Serving's default
    for that flag, because here every wait for a slot costs a thread wake-up under the GIL), 1 in eager mode (its layer-by-layer Python dispatch holds the GIL: two overlapping eager calls
    finished fewer calls per second than one after the other, each 3x slower). Measured in
    docs/performance.md ("Execution scheduler").
    max_queued: requests of one model waiting for a slot before new ones are refused with full_queue_code.
    """

    max_concurrent: int = 0
    max_queued: int = DEFAULT_MAX_QUEUED_EXECUTIONS
    full_queue_code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED

    def concurrency(self, mode: str) -> int:
        if self.max_concurrent > 0:
            return self.max_concurrent
        return 1 if mode == "eager" else 8 * max(1, os.cpu_count() or 1)


class ServingCore:
    def __init__(self, mode: str, metrics: ServingMetrics, scheduler: SharedBatchScheduler | None,
                 max_tensor_elements: int, enable_warmup: bool = True,
                 execution: ExecutionSettings | None = None, graph_executor: str = "session") -> None:
        self.mode = mode
        self.graph_executor = graph_executor
        self.metrics = metrics
        self.scheduler = scheduler
        self.max_tensor_elements = max_tensor_elements
        self.enable_warmup = enable_warmup
        self.manager: ModelManager | None = None
        self.execution = execution or ExecutionSettings()
        # One ExecutionScheduler per model name (its versions share it), made on the model's first request.
        self._executors: dict[str, ExecutionScheduler] = {}
        self._executors_lock = threading.Lock()
        metrics.watch_executions(self.execution_stats)

    # ------------------------------------------------------------------ loading
    def load_version(self, name: str, version: int, path: Path) -> ServableVersion:
        label = f"{name} v{version} ({self.mode})"
        runner = load_runner(self.mode, path, label, self.graph_executor)
        sv = ServableVersion(name, version, runner, extras={"queues": {}, "queues_lock": threading.Lock()})
        if self.scheduler is not None:
            def close_queues() -> None:
                for queue in sv.extras["queues"].values():
                    self.scheduler.remove_queue(queue)
            sv.on_close(close_queues)
        if self.enable_warmup:
            try:
                replay(path, lambda kind, request: self._run_warmup(sv, kind, request), label)
                self._warm_padded_sizes(sv)
            except Exception:
                runner.close()
                raise
        return sv

    def _run_warmup(self, sv: ServableVersion, kind: str, request: Any) -> None:
        """One warmup record: a PredictRequest, or a Classify/Regress/MultiInference request."""
        if kind == "predict_log":
            self._run_direct(sv, *self._decode_request(sv, request))
            return
        if kind == "multi_inference_log":
            tasks = inference.multi_inference_tasks(sv, request)
        else:
            method = CLASSIFY_METHOD_NAME if kind == "classify_log" else REGRESS_METHOD_NAME
            tasks = [inference.resolve_task(sv, method, request.model_spec.signature_name)]
        examples = inference.examples_tensor(request.input)
        for task in tasks:
            self._run_direct(sv, task.sig, {task.input_name: examples})

    def _decode_request(self, sv: ServableVersion, request: Any) -> tuple[SignatureSpec, dict[str, np.ndarray]]:
        sig = self.signature(sv, request.model_spec.signature_name)
        check_input_names(list(request.inputs), sig)
        inputs = {k: tensor_proto_to_ndarray(v, sig.inputs[k], sig.name, self.max_tensor_elements, sig.strict_shapes)
                  for k, v in request.inputs.items()}
        return sig, inputs

    def _warm_padded_sizes(self, sv: ServableVersion) -> None:
        """With allowed_batch_sizes, every padded size is a distinct shape: run each once (XLA compiles per shape)."""
        if self.scheduler is None or not self.scheduler.allowed:
            return
        for sig in sv.runner.signatures.values():
            if not _batchable(sig) or any(t.is_string for t in sig.inputs.values()):
                continue  # string inputs (e.g. serialized tf.Example) have no neutral probe value
            for size in self.scheduler.allowed:
                probe = {k: np.zeros((size,) + tuple(d if d > 0 else 1 for d in t.shape[1:]), t.np_dtype)
                         for k, t in sig.inputs.items()}
                sv.runner.run(sig.name, probe)

    # ------------------------------------------------------------------ predict
    def signature(self, sv: ServableVersion, name: str) -> SignatureSpec:
        key = name or DEFAULT_SIGNATURE
        sig = sv.runner.signatures.get(key)
        if sig is None:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def '
                                   f"(available: {', '.join(sorted(sv.runner.signatures))})")
        return sig

    def _run_direct(self, sv: ServableVersion, sig: SignatureSpec, inputs: dict[str, np.ndarray],
                    clock: StageClock | None = None) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        out = sv.runner.run(sig.name, inputs)
        elapsed = time.perf_counter() - started
        self.metrics.child(self.metrics.runtime_latency, sv.model, "predict", self.mode).observe(elapsed * 1e6)
        if clock is not None:
            clock.execute += elapsed
        return out

    def _queue_for(self, sv: ServableVersion, sig: SignatureSpec, inputs: dict[str, np.ndarray]) -> BatchQueue:
        key = (sig.name,) + tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))
        queues = sv.extras["queues"]
        queue = queues.get(key)
        if queue is None:
            with sv.extras["queues_lock"]:
                queue = queues.get(key)
                if queue is None:
                    queue = self.scheduler.add_queue(lambda merged, _sig=sig: self._run_direct(sv, _sig, merged),
                                                     sv.model, f"{sv.model} v{sv.version} {sig.name}")
                    queues[key] = queue
        return queue

    def executor(self, model_name: str) -> ExecutionScheduler:
        """The model's unbatched-execution scheduler, shared by both front ends."""
        found = self._executors.get(model_name)
        if found is None:
            with self._executors_lock:
                found = self._executors.get(model_name)
                if found is None:
                    found = ExecutionScheduler(model_name, self.execution.concurrency(self.mode),
                                               self.execution.max_queued, self.execution.full_queue_code)
                    # A request that raced its model's removal gets one, but it is not kept (forget_model).
                    if self.manager is None or self.manager.has_model(model_name):
                        self._executors[model_name] = found
        return found

    def forget_model(self, model_name: str) -> None:
        """The model left the config: drop its execution scheduler (and so its metrics) once its in-flight
        executions have finished."""
        with self._executors_lock:
            executor = self._executors.pop(model_name, None)
        if executor is not None:
            executor.close()

    def execution_stats(self) -> dict[str, ExecutionStats]:
        return {name: executor.stats for name, executor in list(self._executors.items())}

    def run(self, sv: ServableVersion, sig: SignatureSpec, inputs: dict[str, np.ndarray],
            deadline: float | None, clock: StageClock | None = None) -> dict[str, np.ndarray]:
        """Execute a validated request on the calling thread's behalf: batched when batching is on and the
        signature is batch-major, otherwise through the model's execution scheduler (runs on this thread).
        `clock` gets the model call as execute and the rest of this call as queue."""
        _admit(deadline, clock)
        try:
            if self.scheduler is not None and _batchable(sig):
                rows = batch_size_of(inputs)
                return self._queue_for(sv, sig, inputs).run(inputs, rows, deadline)
            return self.executor(sv.model).run(lambda: self._run_direct(sv, sig, inputs, clock), deadline)
        finally:
            _split_run(clock)

    async def run_async(self, sv: ServableVersion, sig: SignatureSpec, inputs: dict[str, np.ndarray],
                        deadline: float | None, inline: bool, clock: StageClock | None = None) -> dict[str, np.ndarray]:
        """run() for the asyncio gRPC front end.

        Batched requests wait on the event loop (no thread held) and are answered one loop wake-up per batch.
        Unbatched ones go through the same execution scheduler as REST requests; `inline` (nothing else in
        flight on the loop) lets a request that finds a free slot run on the loop thread itself.
        """
        _admit(deadline, clock)
        try:
            if self.scheduler is not None and _batchable(sig):
                rows = batch_size_of(inputs)
                return await self._queue_for(sv, sig, inputs).run_async(inputs, rows, deadline)
            return await self.executor(sv.model).run_async(lambda: self._run_direct(sv, sig, inputs, clock), deadline,
                                                           inline)
        finally:
            _split_run(clock)

    def close(self) -> None:
        for executor in list(self._executors.values()):
            executor.close()

    def observed(self, model_name: str, entrypoint: str, api: str = "predict") -> "_Observation":
        known = self.manager is not None and self.manager.has_model(model_name)
        return _Observation(self.metrics, model_name if known else UNKNOWN_MODEL_LABEL, api, entrypoint)


def _admit(deadline: float | None, clock: StageClock | None) -> None:
    """The start of run() and run_async(): refuse a request already past its deadline, close the decode stage."""
    if deadline is not None and time.monotonic() >= deadline:
        raise deadline_exceeded("Deadline exceeded before the request could run")
    if clock is not None:
        clock.lap("decode")


def _split_run(clock: StageClock | None) -> None:
    """After run(): the time since the decode mark that was not the model call itself is queue."""
    if clock is not None:
        now = time.perf_counter()
        clock.queue += max(0.0, now - clock.mark - clock.execute)
        clock.mark = now


def _batchable(sig: SignatureSpec) -> bool:
    """Batching needs every input to have a free leading (batch) dimension."""
    return all(t.shape is not None and len(t.shape) >= 1 and t.shape[0] < 0 for t in sig.inputs.values())


class _Observation:
    """Context manager recording request_count{status} and request_latency for one request."""

    def __init__(self, metrics: ServingMetrics, model: str, api: str, entrypoint: str) -> None:
        self.metrics, self.model, self.api, self.entrypoint = metrics, model, api, entrypoint
        self.deadline: float | None = None  # set by callers that know it (to classify a cancellation)

    def __enter__(self) -> "_Observation":
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(exc, asyncio.CancelledError):
            # The gRPC runtime cancelled the handler: the deadline passed (or the client went away) first.
            status = "DEADLINE_EXCEEDED" if self.deadline is not None and time.monotonic() >= self.deadline else "CANCELLED"
            self.metrics.count_request(self.model, status)
            return
        status = "OK" if exc is None else (exc.code.name if isinstance(exc, ServingError) else "INTERNAL")
        self.metrics.count_request(self.model, status)
        if exc is None:
            self.metrics.child(self.metrics.request_latency, self.model, self.api, self.entrypoint).observe(
                (time.perf_counter() - self.started) * 1e6)


def deadline_from_timeout(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + max(0.0, seconds)

