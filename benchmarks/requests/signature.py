"""What a served model expects, read from the server: GetModelMetadata (gRPC) or /metadata (REST).

TF Serving answers both with a SignatureDefMap (REST: its JSON form), so one parser serves both. The
signature gives each input's name, dtype and shape (-1 = any size) and the method (predict, classify,
regress); that is all a load generator needs to build valid requests for a model it has never seen.
Whether a model is there and AVAILABLE is asked with GetModelStatus / GET /v1/models/NAME (one
wait_until_available for every caller). TF Serving's API has no call that lists the models a server has, so "which models are there" comes from the models directory when we have one.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

from benchmarks.requests import protos
from export import tensor_proto
from export.contract import METADATA_METHOD, METHOD_NAME_PREFIX, STATUS_METHOD


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
    return {key: TensorInfo(key, dtype, shape) for key, (dtype, shape) in tensor_proto.tensor_infos(infos).items()}


def signature_from_map(sig_map, model: str, signature: str) -> ServedSignature:
    """A SignatureDefMap proto -> the one signature asked for (ValueError naming the ones there are)."""
    defs = sig_map.signature_def
    if signature not in defs:
        have = ", ".join(sorted(k for k in defs if not k.startswith("__"))) or "none"
        raise ValueError(f"model '{model}' has no signature '{signature}' (it has: {have}); pass --signature NAME")
    sd = defs[signature]
    method = sd.method_name.removeprefix(METHOD_NAME_PREFIX)
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


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error_code: int
    error_message: str


def _status_response(kind: str, target: str, model: str, version: int | None, timeout_s: float):
    """GetModelStatus over gRPC, or GET /v1/models/NAME[/versions/N] parsed into the same proto (REST's body is
    that message's JSON form); UnknownModel on NOT_FOUND / 404, RuntimeError on any other failure."""
    st = protos.get("get_model_status_pb2")
    if kind == "rest":
        from google.protobuf import json_format

        path = f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "")
        status, doc = _rest_get(f"http://{target}{path}", timeout_s)
        if status == 404:
            raise _unknown(model, target, doc.get("error", "404"))
        if status != 200:
            raise RuntimeError(f"GET {path} at {target} answered {status}: {doc.get('error', doc)}")
        return json_format.ParseDict(doc, st.GetModelStatusResponse(), ignore_unknown_fields=True)
    import grpc

    req = st.GetModelStatusRequest()
    req.model_spec.name = model
    if version is not None:
        req.model_spec.version.value = version
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary(STATUS_METHOD, request_serializer=st.GetModelStatusRequest.SerializeToString,
                              response_deserializer=st.GetModelStatusResponse.FromString)
        try:
            return call(req, timeout=timeout_s)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise _unknown(model, target, e.details()) from None
            raise RuntimeError(f"GetModelStatus for '{model}' at {target} failed: {e.code().name}: "
                               f"{e.details()}") from None


def model_status(kind: str, target: str, model: str, version: int | None = None,
                 timeout_s: float = 10.0) -> list[VersionState]:
    """Every version of `model` the server reports, with its state and error (UnknownModel when it has none)."""
    resp = _status_response(kind, target, model, version, timeout_s)
    state_name = protos.get("get_model_status_pb2").ModelVersionStatus.State.Name
    return [VersionState(int(s.version), state_name(s.state), int(s.status.error_code), s.status.error_message)
            for s in resp.model_version_status]


def is_available(kind: str, target: str, model: str, timeout_s: float = 10.0) -> bool:
    """Whether some version of `model` is AVAILABLE; False when the server does not know it."""
    try:
        return any(s.state == "AVAILABLE" for s in model_status(kind, target, model, timeout_s=timeout_s))
    except UnknownModel:
        return False


def wait_until_available(kind: str, target: str, models: list[str], timeout_s: float,
                         check: Callable[[], None] = lambda: None, interval_s: float = 0.3) -> None:
    """Poll until every model has an AVAILABLE version; TimeoutError naming what was missing. `check` runs
    before each poll (e.g. to fail at once when the server process died)."""
    deadline, last = time.monotonic() + timeout_s, ""
    while True:
        check()
        try:
            missing = [m for m in models if not is_available(kind, target, m, timeout_s=2.0)]
            if not missing:
                return
            last = f"no AVAILABLE version of {missing}"
        except (OSError, RuntimeError, ValueError) as e:  # a starting server refuses connections for a while
            last = str(e)
        if time.monotonic() >= deadline:
            raise TimeoutError(last)
        time.sleep(interval_s)


def check_models_served(kind: str, target: str, names: list[str], known: list[str]) -> None:
    """Raise UnknownModel with one line naming each missing model and the models the server has.

    `known` is what a models directory says the server holds; without one, only the names given can be
    asked about (TF Serving has no list-models call), and the message says which of them answer."""
    missing = [n for n in names if not is_available(kind, target, n)]
    if not missing:
        return
    if known:
        have = f"the models directory names: {', '.join(known)}"
    else:
        answering = [n for n in names if n not in missing]
        have = ("TF Serving's API cannot list a server's models; of the names given, these answer: "
                + (", ".join(answering) or "none"))
    raise UnknownModel(f"model {', '.join(repr(m) for m in missing)} is not served by {target}; {have}")
