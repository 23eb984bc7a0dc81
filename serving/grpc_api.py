"""TF Serving's gRPC API (tensorflow.serving.PredictionService / ModelService) plus grpc.health.v1.

Built on the official generated servicers from tensorflow-serving-api, so the method names, request and
response messages are exactly TF Serving's. The synchronous grpc server is used: a request waiting for its
batch simply blocks its worker thread, which keeps deadlines (context.time_remaining) and batching simple.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    model_service_pb2_grpc,
)

from serving.core import ServingCore, deadline_from_timeout
from serving.errors import ServingError, failed_precondition, invalid_argument, unimplemented
from serving.model_manager import ModelManager, sources_from_config
from serving.tensors import fill_tensor_proto

log = logging.getLogger("serving.grpc")

SIGNATURE_DEF_FIELD = "signature_def"
HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def _spec(model_spec: Any) -> tuple[str, int | None, str | None]:
    version = model_spec.version.value if model_spec.HasField("version") else None
    return model_spec.name, version, (model_spec.version_label or None)


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, ServingError):
        context.abort(exc.code, exc.message)
    log.exception("unexpected error")
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore, manager: ModelManager) -> None:
        self.core = core
        self.manager = manager

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        name, version, label = _spec(request.model_spec)
        try:
            with self.core.observed(name, "GRPC"):
                deadline = deadline_from_timeout(context.time_remaining())
                with self.manager.acquire(name, version, label) as sv:
                    sig, inputs = self.core._decode_request(sv, request)
                    wanted = list(request.output_filter)
                    for alias in wanted:
                        if alias not in sig.outputs:
                            raise invalid_argument(f"output tensor alias not found in signature: {alias} "
                                                   f"(outputs of '{sig.name}': {', '.join(sorted(sig.outputs))})")
                    outputs = self.core.run(sv, sig, inputs, deadline)
                    response = predict_pb2.PredictResponse()
                    response.model_spec.name = name
                    response.model_spec.version.value = sv.version
                    response.model_spec.signature_name = sig.name
                    for key, value in outputs.items():
                        if not wanted or key in wanted:
                            fill_tensor_proto(response.outputs[key], value)
                    return response
        except Exception as exc:
            _abort(context, exc)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        name, version, label = _spec(request.model_spec)
        try:
            if not request.metadata_field:
                raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
            for f in request.metadata_field:
                if f != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {f} is not supported (only '{SIGNATURE_DEF_FIELD}')")
            return model_metadata(self.manager, name, version, label)
        except Exception as exc:
            _abort(context, exc)

    def _unimplemented(self, what: str, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      f"{what} is not implemented by the embedded server: the exported models have predict "
                      "signatures only; use Predict")

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._unimplemented("Classify", context)

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._unimplemented("Regress", context)

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._unimplemented("MultiInference", context)


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

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if not request.model_spec.name:
                raise invalid_argument("Missing model name in request.")
            return model_status(self.manager, *_spec(request.model_spec))
        except Exception as exc:
            _abort(context, exc)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if not self.enable_config_reload:
                raise failed_precondition("model config reload is disabled on this server; start it with "
                                          "--enable-config-reload to allow HandleReloadConfigRequest")
            from serving.tfserving_config import check_model_server_config

            problems = check_model_server_config(request.config)
            if problems:
                raise invalid_argument("invalid ModelServerConfig: " + "; ".join(problems))
            self.manager.replace_sources(sources_from_config(request.config))
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = 0
            return response
        except Exception as exc:
            _abort(context, exc)


def build_grpc_server(core: ServingCore, manager: ModelManager, host: str, port: int, max_threads: int,
                      max_message_bytes: int, enable_config_reload: bool) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Create (not start) the gRPC server; returns it, the bound port and the health servicer."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port already in use must be an error, not a silent share
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(core, manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager, enable_config_reload), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in HEALTH_SERVICES:
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # newer grpcio raises instead of returning 0
        raise OSError(f"cannot listen for gRPC on {host}:{port}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port} (port in use?)")
    return server, bound, health_servicer


def set_health(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in HEALTH_SERVICES:
        health_servicer.set(service, status)


__all__ = ["build_grpc_server", "set_health", "model_metadata", "model_status", "unimplemented"]
