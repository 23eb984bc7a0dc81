"""Small synchronous helpers to talk to a TF Serving-API server with the official protos.

Used between and after faults: "is version N AVAILABLE / refused with what message", "does a valid request
still get a correct answer", "what does the server's own request counter say". No TensorFlow import
(benchmarks.requests.protos loads only the generated modules).
"""
from __future__ import annotations

import numpy as np
import requests

from benchmarks.measure import prometheus
from benchmarks.requests import protos, signature
from benchmarks.requests.payloads import build_predict_request, make_inputs
from benchmarks.requests.signature import VersionState, wait_for
from export.contract import PROMETHEUS_PATH, REQUEST_COUNT
from export.tensor_proto import to_ndarray

MODEL = "residual_regressor"
N_FEATURES = 10


def channel(target: str):
    import grpc

    from benchmarks.reliability.load import CHANNEL_OPTIONS

    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def model_status(target: str, model: str = MODEL, version: int | None = None, timeout: float = 5.0) -> list[VersionState]:
    """GetModelStatus over gRPC (signature.UnknownModel when the server does not know the model)."""
    return signature.model_status("grpc", target, model, version, timeout)


def available_versions(target: str, model: str = MODEL) -> list[int]:
    try:
        return sorted(s.version for s in model_status(target, model) if s.state == "AVAILABLE")
    except Exception:
        return []


def wait_settled(target: str, model: str = MODEL, timeout_s: float = 120.0) -> list[int]:
    """Wait until no version of `model` is LOADING/UNLOADING (a "ready" server may still be loading older
    versions the policy wants); return the AVAILABLE versions."""
    def settled():
        states = model_status(target, model)
        busy = [s for s in states if s.state in ("START", "LOADING", "UNLOADING")]
        return None if busy or not any(s.state == "AVAILABLE" for s in states) else states

    wait_for(settled, timeout_s, interval_s=0.1, what=f"{model} versions to finish loading")
    return available_versions(target, model)


def predict_payload(model: str = MODEL, batch: int = 1, version: int | None = None, seed: int = 0) -> bytes:
    return build_predict_request(model, make_inputs(batch, N_FEATURES, seed), version=version).SerializeToString()


def predict(target: str, model: str = MODEL, batch: int = 1, version: int | None = None,
            timeout: float = 10.0, seed: int = 0) -> tuple[int, np.ndarray]:
    """One valid Predict; returns (version that answered, predictions [batch, 1]). Raises grpc.RpcError."""
    p = protos.load()
    req = build_predict_request(model, make_inputs(batch, N_FEATURES, seed), version=version)
    with channel(target) as ch:
        stub = p["prediction_service_pb2_grpc"].PredictionServiceStub(ch)
        resp = stub.Predict(req, timeout=timeout)
    return int(resp.model_spec.version.value), to_ndarray(resp.outputs["predictions"])


def check_valid_request(grpc_target: str, rest_target: str | None = None, batch: int = 3,
                        timeout: float = 30.0) -> str | None:
    """After hostile input: does a valid request still get a correct answer over gRPC (and REST)?

    Correct = one finite prediction per row, and REST agreeing with gRPC on the same rows. Returns a problem
    description, or None when all is well.
    """
    try:
        # Generous timeout: the question is "still answers correctly", not how fast (2 shared cores).
        _, preds = predict(grpc_target, batch=batch, timeout=timeout)
    except Exception as exc:
        return f"valid gRPC Predict failed: {exc!r}"
    if preds.shape != (batch, 1) or not np.all(np.isfinite(preds)):
        return f"valid gRPC Predict answered shape {preds.shape} / non-finite values"
    if rest_target:
        x = make_inputs(batch, N_FEATURES, 0)
        try:
            r = requests.post(f"http://{rest_target}/v1/models/{MODEL}:predict", json={"instances": x.tolist()},
                              timeout=timeout)
        except requests.RequestException as exc:
            return f"valid REST predict failed: {exc!r}"
        if r.status_code != 200:
            return f"valid REST predict answered HTTP {r.status_code}: {r.text[:200]}"
        rest = np.asarray(r.json()["predictions"], dtype=np.float32)
        if rest.shape != (batch, 1) or not np.allclose(rest, preds, rtol=1e-5, atol=1e-5):
            return f"REST predictions {rest.ravel()[:3]} disagree with gRPC {preds.ravel()[:3]}"
    return None


def request_counts(rest_target: str, model: str = MODEL) -> dict[str, float]:
    """Server-side `:tensorflow:serving:request_count` by status for one model (Prometheus endpoint)."""
    response = requests.get(f"http://{rest_target}{PROMETHEUS_PATH}", timeout=5)
    return prometheus.parse(response.text).by_label(REQUEST_COUNT, "status", model_name=model)
