"""What a served model expects, read from the server: GetModelMetadata (gRPC) or /metadata (REST).

TF Serving answers both with a SignatureDefMap (REST: its JSON form), so one parser serves both. The
signature gives each input's name, dtype and shape (-1 = any size) and the method (predict, classify,
regress); that is all a load generator needs to build valid requests for a model it has never seen.
Model existence is checked with GetModelStatus / GET /v1/models/NAME: TF Serving's API has no call that
lists the models a server has, so "which models are there" comes from the models directory when we have one.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from benchmarks.clients import protos

METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
METHOD_PREFIX = "tensorflow/serving/"  # SignatureDef.method_name is this + predict|classify|regress


class UnknownModel(ValueError):
    """The server does not serve the model named (NOT_FOUND / 404)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # DataType name, e.g. DT_FLOAT
    shape: tuple[int, ...] | None  # -1 = any size; None = unknown rank


@dataclass(frozen=True)
class ServedSignature:
    model: str
    name: str
    method: str  # predict | classify | regress (SignatureDef.method_name without its prefix)
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


def _tensor_infos(infos) -> dict[str, TensorInfo]:
    types = protos.get("types_pb2")
    out = {}
    for key, info in infos.items():
        shape = None if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
        out[key] = TensorInfo(key, types.DataType.Name(info.dtype), shape)
    return out


def signature_from_map(sig_map, model: str, signature: str) -> ServedSignature:
    """A SignatureDefMap proto -> the one signature asked for (ValueError naming the ones there are)."""
    defs = sig_map.signature_def
    if signature not in defs:
        have = ", ".join(sorted(k for k in defs if not k.startswith("__"))) or "none"
        raise ValueError(f"model '{model}' has no signature '{signature}' (it has: {have}); pass --signature NAME")
    sd = defs[signature]
    method = sd.method_name[len(METHOD_PREFIX):] if sd.method_name.startswith(METHOD_PREFIX) else sd.method_name
    return ServedSignature(model, signature, method or "predict", _tensor_infos(sd.inputs), _tensor_infos(sd.outputs))


def _unknown(model: str, target: str, detail: str) -> UnknownModel:
    return UnknownModel(f"model '{model}' is not served by {target} ({detail})")


def fetch_grpc(target: str, model: str, signature: str, timeout_s: float = 10.0) -> ServedSignature:
    import grpc

    meta = protos.get("get_model_metadata_pb2")
    req = meta.GetModelMetadataRequest()
    req.model_spec.name = model
    req.metadata_field.append("signature_def")
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary(METADATA_METHOD, request_serializer=meta.GetModelMetadataRequest.SerializeToString,
                              response_deserializer=meta.GetModelMetadataResponse.FromString)
        try:
            resp = call(req, timeout=timeout_s)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise _unknown(model, target, e.details()) from None
            raise RuntimeError(f"GetModelMetadata for '{model}' at {target} failed: {e.code().name}: "
                               f"{e.details()}") from None
    sig_map = meta.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sig_map)
    return signature_from_map(sig_map, model, signature)


def _rest_get(url: str, timeout_s: float) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, {"error": body.decode(errors="replace")}


def fetch_rest(target: str, model: str, signature: str, timeout_s: float = 10.0) -> ServedSignature:
    from google.protobuf import json_format

    status, doc = _rest_get(f"http://{target}/v1/models/{model}/metadata", timeout_s)
    if status == 404:
        raise _unknown(model, target, doc.get("error", "404"))
    if status != 200:
        raise RuntimeError(f"GET /v1/models/{model}/metadata at {target} answered {status}: {doc.get('error', doc)}")
    sig_map = json_format.ParseDict(doc.get("metadata", {}).get("signature_def", {}),
                                    protos.get("get_model_metadata_pb2").SignatureDefMap(), ignore_unknown_fields=True)
    return signature_from_map(sig_map, model, signature)


def fetch_signature(kind: str, target: str, model: str, signature: str, timeout_s: float = 10.0) -> ServedSignature:
    return (fetch_grpc if kind == "grpc" else fetch_rest)(target, model, signature, timeout_s)


def model_available(kind: str, target: str, model: str, timeout_s: float = 10.0) -> bool:
    """Whether the server knows `model` (GetModelStatus / GET /v1/models/NAME); other failures raise."""
    if kind == "rest":
        status, doc = _rest_get(f"http://{target}/v1/models/{model}", timeout_s)
        if status in (200, 404):
            return status == 200
        raise RuntimeError(f"GET /v1/models/{model} at {target} answered {status}: {doc.get('error', doc)}")
    import grpc

    st = protos.get("get_model_status_pb2")
    req = st.GetModelStatusRequest()
    req.model_spec.name = model
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary(STATUS_METHOD, request_serializer=st.GetModelStatusRequest.SerializeToString,
                              response_deserializer=st.GetModelStatusResponse.FromString)
        try:
            call(req, timeout=timeout_s)
            return True
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise RuntimeError(f"GetModelStatus for '{model}' at {target} failed: {e.code().name}: "
                               f"{e.details()}") from None


def check_models_served(kind: str, target: str, names: list[str], known: list[str]) -> None:
    """Raise UnknownModel with one line naming each missing model and the models the server has.

    `known` is what a models directory says the server holds; without one, only the names given can be
    asked about (TF Serving has no list-models call), and the message says which of them answer."""
    missing = [n for n in names if not model_available(kind, target, n)]
    if not missing:
        return
    if known:
        have = f"the models directory names: {', '.join(known)}"
    else:
        answering = [n for n in names if n not in missing]
        have = ("TF Serving's API cannot list a server's models; of the names given, these answer: "
                + (", ".join(answering) or "none"))
    raise UnknownModel(f"model {', '.join(repr(m) for m in missing)} is not served by {target}; {have}")
