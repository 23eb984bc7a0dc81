"""TF Serving's gRPC API (tensorflow.serving.PredictionService / ModelService) plus grpc.health.v1.

Built on the official generated servicers from tensorflow-serving-api, so the method names, request and
response messages are exactly TF Serving's.

The server is grpc.aio on one event-loop thread (uvloop), not the thread-pool server. Why (measured,
docs/performance.md): with the thread-pool server every request, and every request waiting for its batch, holds a
worker thread; 64 concurrent streams meant 64+ threads taking turns on the GIL, a wake-up per request when
its batch finished, and batching that saved no CPU at all. Here a request waiting for its batch is just a
pending future on the loop, a finished batch wakes the loop once, and the per-request Python work (decode,
validate, encode) happens on one thread. Model calls run in the batch threads (batching on), otherwise through
the model's execution scheduler shared with REST (serving/execution/scheduler.py): inline on the loop when the request is
alone and a slot is free, else on the scheduler's threads (TensorFlow releases the GIL while computing).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    regression_pb2,
    get_model_status_pb2,
    model_management_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    model_service_pb2_grpc,
)

from export.contract import CLASSIFY_METHOD_NAME, MODEL_SERVICE, PREDICTION_SERVICE, REGRESS_METHOD_NAME
from serving.execution import inference
from serving.execution.core import ServingCore, deadline_from_timeout
from serving.errors import ServingError, failed_precondition, invalid_argument
from serving.metrics import ServingMetrics, StageClock
from serving.lifecycle.model_manager import ModelManager, sources_from_config
from serving.tensors import fill_tensor_proto

log = logging.getLogger("serving.grpc")

SIGNATURE_DEF_FIELD = "signature_def"
HEALTH_SERVICES = ("", PREDICTION_SERVICE, MODEL_SERVICE)


def _spec(model_spec: Any) -> tuple[str, int | None, str | None]:
    version = model_spec.version.value if model_spec.HasField("version") else None
    return model_spec.name, version, (model_spec.version_label or None)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, ServingError):
        await context.abort(exc.code, exc.message)
    log.error("unexpected error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def _checked_output_filter(output_filter: Any, outputs: dict[str, Any]) -> list[str]:
    """PredictRequest.output_filter checked as predict_util.cc does (unknown or repeated alias)."""
    wanted: list[str] = []
    for alias in output_filter:
        if alias not in outputs:
            raise invalid_argument(f"output tensor alias not found in signature: {alias} Outputs expected to be "
                                   f"in the set {{{','.join(sorted(outputs))}}}.")
        if alias in wanted:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        wanted.append(alias)
    return wanted


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore, manager: ModelManager) -> None:
        self.core = core
        self.manager = manager
        self.in_flight = 0  # Predict/Classify/Regress/MultiInference calls in progress; only touched on the loop thread

    async def Predict(self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext,
                      clock: StageClock | None = None) -> predict_pb2.PredictResponse:
        """`clock` (from the server's Predict handler, which also times parsing and serialisation) gets the
        request's stages; its model label is set only once the model is known to be served."""
        name, version, label = _spec(request.model_spec)
        self.in_flight += 1
        try:
            with self.core.observed(name, "GRPC") as obs:
                deadline = obs.deadline = deadline_from_timeout(context.time_remaining())
                with self.manager.acquire(name, version, label) as sv:
                    sig, inputs = self.core._decode_request(sv, request)
                    wanted = _checked_output_filter(request.output_filter, sig.outputs)
                    outputs = await self.core.run_async(sv, sig, inputs, deadline, inline=self.in_flight == 1,
                                                        clock=clock)
                    if clock is not None:
                        clock.model = sv.model
                    response = predict_pb2.PredictResponse()
                    response.model_spec.name = name
                    response.model_spec.version.value = sv.version
                    response.model_spec.signature_name = sig.name
                    for key, value in outputs.items():
                        if not wanted or key in wanted:
                            fill_tensor_proto(response.outputs[key], value)
                    if clock is not None:
                        clock.lap("encode")
                    return response
        except Exception as exc:
            await _abort(context, exc)
        finally:
            self.in_flight -= 1

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name, version, label = _spec(request.model_spec)
        try:
            if not request.metadata_field:
                raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
            for f in request.metadata_field:
                if f != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {f} is not supported (only '{SIGNATURE_DEF_FIELD}')")
            return model_metadata(self.manager, name, version, label)
        except Exception as exc:
            await _abort(context, exc)

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._infer_one(request, context, CLASSIFY_METHOD_NAME,
                                     classification_pb2.ClassificationResponse(), "classify")

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._infer_one(request, context, REGRESS_METHOD_NAME,
                                     regression_pb2.RegressionResponse(), "regress")

    async def _infer_one(self, request: Any, context: grpc.aio.ServicerContext, method: str, response: Any,
                         api: str) -> Any:
        name, version, label = _spec(request.model_spec)
        self.in_flight += 1
        try:
            with self.core.observed(name, "GRPC", api) as obs:
                deadline = obs.deadline = deadline_from_timeout(context.time_remaining())
                with self.manager.acquire(name, version, label) as sv:
                    task = inference.resolve_task(sv, method, request.model_spec.signature_name)
                    examples = inference.examples_tensor(request.input)
                    outputs = await self.core.run_async(sv, task.sig, {task.input_name: examples}, deadline,
                                                        inline=self.in_flight == 1)
                    inference.fill_model_spec(response.model_spec, name, task.sig.name, sv.version)
                    inference.fill_result(task, outputs, len(examples), response.result)
                    return response
        except Exception as exc:
            await _abort(context, exc)
        finally:
            self.in_flight -= 1

    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Every task on the same examples; the model and version are the first task's (as TF Serving)."""
        first = request.tasks[0].model_spec if request.tasks else None
        name, version, label = _spec(first) if first is not None else ("", None, None)
        self.in_flight += 1
        try:
            with self.core.observed(name, "GRPC", "multi_inference") as obs:
                deadline = obs.deadline = deadline_from_timeout(context.time_remaining())
                if first is None:
                    raise invalid_argument("MultiInferenceRequest has no tasks")
                with self.manager.acquire(name, version, label) as sv:
                    tasks = inference.multi_inference_tasks(sv, request)
                    examples = inference.examples_tensor(request.input)
                    response = inference_pb2.MultiInferenceResponse()
                    for task in tasks:
                        outputs = await self.core.run_async(sv, task.sig, {task.input_name: examples}, deadline,
                                                            inline=self.in_flight == 1)
                        entry = response.results.add()
                        inference.fill_model_spec(entry.model_spec, name, task.sig.name, sv.version)
                        result = (entry.classification_result if task.method == CLASSIFY_METHOD_NAME
                                  else entry.regression_result)
                        inference.fill_result(task, outputs, len(examples), result)
                    return response
        except Exception as exc:
            await _abort(context, exc)
        finally:
            self.in_flight -= 1


def model_metadata(manager: ModelManager, name: str, version: int | None, label: str | None) -> Any:
    with manager.acquire(name, version, label) as sv:
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig_def in sv.runner.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(sig_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = sv.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
        return response


def model_status(manager: ModelManager, name: str, version: int | None, label: str | None) -> Any:
    response = get_model_status_pb2.GetModelStatusResponse()
    for st in manager.status(name, version, label):
        entry = response.model_version_status.add()
        entry.version = st.version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(st.state)
        entry.status.SetInParent()  # TF Serving always reports a status, {"error_code": "OK"} when healthy
        if st.error is not None:
            entry.status.error_code = st.error.code.value[0]
            entry.status.error_message = st.error.message
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager, enable_config_reload: bool) -> None:
        self.manager = manager
        self.enable_config_reload = enable_config_reload

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if not request.model_spec.name:
                raise invalid_argument("Missing model name in request.")
            return model_status(self.manager, *_spec(request.model_spec))
        except Exception as exc:
            await _abort(context, exc)

    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if not self.enable_config_reload:
                raise failed_precondition("model config reload is disabled on this server; start it with "
                                          "--enable-config-reload to allow HandleReloadConfigRequest")
            from serving.cli.config_files import check_model_server_config

            problems = check_model_server_config(request.config)
            if problems:
                raise invalid_argument("invalid ModelServerConfig: " + "; ".join(problems))
            # Loading models blocks for seconds: off the event loop, which must keep serving.
            await asyncio.get_running_loop().run_in_executor(
                None, self.manager.replace_sources, sources_from_config(request.config))
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = 0
            return response
        except Exception as exc:
            await _abort(context, exc)


async def _parse(raw: bytes, request_cls: Any, context: grpc.aio.ServicerContext) -> Any:
    """Bytes that are not the request message get INVALID_ARGUMENT naming the problem (grpc.aio's own
    deserializer failure would be a bare UNKNOWN)."""
    try:
        return request_cls.FromString(raw)
    except Exception as exc:  # protobuf's DecodeError, whatever the backend calls it
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"request is not a valid {request_cls.DESCRIPTOR.full_name}: {exc}")


def _parsing_handlers(service: str, methods: dict[str, tuple[Any, Any]]) -> grpc.GenericRpcHandler:
    """The official services' methods, with requests parsed by us (_parse)."""

    def wrap(method: Any, request_cls: Any) -> Any:
        async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            return await method(await _parse(raw, request_cls, context), context)

        return handler

    return grpc.method_handlers_generic_handler(service, {
        name: grpc.unary_unary_rpc_method_handler(wrap(method, request_cls),
                                                  response_serializer=lambda msg: msg.SerializeToString())
        for name, (method, request_cls) in methods.items()
    })


def _timed_predict(servicer: PredictionServicer, metrics: ServingMetrics) -> grpc.RpcMethodHandler:
    """Predict with its stages timed (StageClock), parsing and serialising included: the response leaves as the
    bytes serialised here, so that cost is counted as encode rather than hidden in grpc.aio."""

    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        clock = StageClock("GRPC")
        request = await _parse(raw, predict_pb2.PredictRequest, context)
        response = await servicer.Predict(request, context, clock)
        clock.skip()  # the metrics and model-lookup bookkeeping since Predict's encode: framework
        data = response.SerializeToString()
        clock.lap("encode")
        metrics.observe_stages(clock)
        return data

    return grpc.unary_unary_rpc_method_handler(handler)


@dataclass(frozen=True)
class GrpcListen:
    """Where and how the gRPC server listens: TCP host:port (port None = no TCP), a Unix socket, channel args."""

    host: str
    port: int | None
    socket_path: Path | None = None
    channel_arguments: tuple[tuple[str, int | str], ...] = ()
    max_message_bytes: int = 64 * 1024 * 1024


def server_options(listen: GrpcListen) -> list[tuple[str, int | str]]:
    """The project's channel arguments, overridden by --grpc_channel_arguments (applied last, as TF Serving's
    ServerBuilder applies them after its own settings)."""
    options: dict[str, int | str] = {
        "grpc.max_receive_message_length": listen.max_message_bytes,
        "grpc.max_send_message_length": listen.max_message_bytes,
        "grpc.so_reuseport": 0,  # a port already in use must be an error, not a silent share
    }
    options.update(dict(listen.channel_arguments))
    return list(options.items())


class GrpcServer:
    """A grpc.aio server running on its own event-loop thread, driven from synchronous code (serving/cli/server.py).

    Same shape as grpc.Server for the caller: start(), stop(grace) -> an object with wait(timeout).
    """

    def __init__(self, core: ServingCore, manager: ModelManager, listen: GrpcListen, enable_config_reload: bool) -> None:
        # uvloop (libuv) rather than asyncio's own loop: perf_analyzer against two graph servers side by side,
        # interleaved, quiet machine: batch 1 at 8 streams 2,239-2,254 -> 2,458-2,475 req/s (p50 3.53 -> 3.22 ms),
        # at 1 stream 560-570 -> 552-558 µs (docs/performance.md, "Per-stage time and gRPC vs REST").
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-aio", daemon=True)
        self._thread.start()
        self.prediction = PredictionServicer(core, manager)
        self.listen = listen
        self._model_servicer = ModelServicer(manager, enable_config_reload)
        self.port = self._call(self._build())

    def _call(self, coro: Any, timeout: float | None = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _build(self) -> int | None:
        # No cap on concurrent RPCs, as with the thread-pool server before (which queued the excess): the bound on
        # work in flight is the batch queue (max_enqueued_batches) or, unbatched, the execution queue
        # (max_queued_executions), both answering the --full-queue-status code when full.
        self.server = grpc.aio.server(options=server_options(self.listen))
        p, m = self.prediction, self._model_servicer
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(PREDICTION_SERVICE, {"Predict": _timed_predict(p, p.core.metrics)}),
            _parsing_handlers(PREDICTION_SERVICE, {
                "Classify": (p.Classify, classification_pb2.ClassificationRequest),
                "Regress": (p.Regress, regression_pb2.RegressionRequest),
                "MultiInference": (p.MultiInference, inference_pb2.MultiInferenceRequest),
                "GetModelMetadata": (p.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest),
            }),
            _parsing_handlers(MODEL_SERVICE, {
                "GetModelStatus": (m.GetModelStatus, get_model_status_pb2.GetModelStatusRequest),
                "HandleReloadConfigRequest": (m.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest),
            }),
        ))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        for service in HEALTH_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        bound = None
        if self.listen.port is not None:
            bound = self._add_port(f"{self.listen.host}:{self.listen.port}")
        if self.listen.socket_path is not None:
            self._add_port(f"unix:{self.listen.socket_path}")
        return bound

    def _add_port(self, address: str) -> int:
        try:
            bound = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # newer grpcio raises instead of returning 0
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {address} (in use?)")
        return bound

    def start(self) -> None:
        self._call(self.server.start())

    def set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING

        async def apply() -> None:
            for service in HEALTH_SERVICES:
                await self.health.set(service, status)

        self._call(apply())

    def stop(self, grace: float) -> threading.Event:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` seconds; the event is set when done."""
        done = threading.Event()

        async def stop() -> None:
            try:
                await self.server.stop(grace)
            finally:
                done.set()

        future: Future = asyncio.run_coroutine_threadsafe(stop(), self._loop)
        future.add_done_callback(lambda _f: done.set())
        return done

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


__all__ = ["GrpcListen", "model_metadata", "model_status", "GrpcServer"]
