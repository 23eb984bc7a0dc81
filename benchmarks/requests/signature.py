"""What a served model expects, read from the server: GetModelMetadata (gRPC) or /metadata (REST).

TF Serving answers both with a SignatureDefMap (REST: its JSON form), so one parser serves both. The
signature gives each input's name, dtype and shape (-1 = any size) and the method (predict, classify,
regress); that is all a load generator needs to build valid requests for a model it has never seen.
Whether a model is there and AVAILABLE is asked with GetModelStatus / GET /v1/models/NAME (one
wait_until_available for every caller). TF Serving's API has no call that lists the models a server has, so
"which models are there" comes from the models directory when we have one.
"""
from __future__ import annotations

import json
import time
import http.client
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

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
    return {k: TensorInfo(k, tensor_proto.dtype_name_of(i), tensor_proto.shape_of(i.tensor_shape))
            for k, i in infos.items()}


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


def _ask(kind: str, target: str, model: str, what: tuple, timeout_s: float):
    """One call about `model`: gRPC (method path, request, response class) -> the response message, or REST
    (path, message) -> the body parsed into that message (TF Serving's JSON form of the gRPC answer).
    UnknownModel on NOT_FOUND / 404, RuntimeError naming the call on any other failure."""
    if kind == "rest":
        from google.protobuf import json_format

        path, message = what
        status, raw = http_call(f"http://{target}{path}", timeout_s)
        if status == 404:
            raise _unknown(model, target, error_message(raw) or "404")
        if status != 200:
            raise RuntimeError(f"GET {path} at {target} answered {status}: {error_message(raw)}")
        doc = json.loads(raw or b"{}")
        if path.endswith("/metadata"):  # a map of Any without type URLs: only the SignatureDefMap is parsed
            doc = doc.get("metadata", {}).get("signature_def", {})
        return json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    import grpc

    method, req, cls = what
    with grpc.insecure_channel(target) as ch:
        try:
            return ch.unary_unary(method, request_serializer=type(req).SerializeToString,
                                  response_deserializer=cls.FromString)(req, timeout=timeout_s)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise _unknown(model, target, e.details()) from None
            raise RuntimeError(f"{method.rsplit('/', 1)[-1]} for '{model}' at {target} failed: {e.code().name}: "
                               f"{e.details()}") from None


def http_call(url: str, timeout_s: float, body: bytes | None = None) -> tuple[int, bytes]:
    """GET (or POST `body` as JSON) -> (HTTP status, body bytes); connection failures raise OSError.

    http.client rather than urllib: a server that refuses a body before reading it (413 over --max-request-bytes)
    answers and closes, so sending the rest fails with a broken pipe; the answer is already in the socket, and
    it, not "Broken pipe", is what the caller gets.
    """
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout_s)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        try:
            conn.request("GET" if body is None else "POST", path, body=body,
                         headers={} if body is None else {"Content-Type": "application/json"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (and closed): read that answer below, or fail there
        response = conn.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:  # no (valid) answer at all
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


def error_message(body: bytes) -> str:
    """The "error" of TF Serving's REST error body, or the start of whatever else was sent."""
    try:
        return str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        return body[:300].decode(errors="replace")


def fetch_signature(kind: str, target: str, model: str, signature: str, timeout_s: float = 10.0) -> ServedSignature:
    """GetModelMetadata / GET /v1/models/NAME/metadata -> the one signature asked for."""
    meta = protos.get("get_model_metadata_pb2")
    req = protos.with_model_spec(meta.GetModelMetadataRequest(metadata_field=["signature_def"]), model)
    if kind == "rest":
        sig_map = _ask(kind, target, model, (f"/v1/models/{model}/metadata", meta.SignatureDefMap()), timeout_s)
    else:
        sig_map = meta.SignatureDefMap()
        _ask(kind, target, model, (METADATA_METHOD, req, meta.GetModelMetadataResponse), timeout_s
             ).metadata["signature_def"].Unpack(sig_map)
    return signature_from_map(sig_map, model, signature)


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error_code: int
    error_message: str


def model_status(kind: str, target: str, model: str, version: int | None = None,
                 timeout_s: float = 10.0) -> list[VersionState]:
    """Every version of `model` the server reports, with its state and error (UnknownModel when it has none)."""
    st = protos.get("get_model_status_pb2")
    req = protos.with_model_spec(st.GetModelStatusRequest(), model, version=version)
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "")
    what = (path, st.GetModelStatusResponse()) if kind == "rest" else (STATUS_METHOD, req, st.GetModelStatusResponse)
    resp = _ask(kind, target, model, what, timeout_s)
    state_name = st.ModelVersionStatus.State.Name
    return [VersionState(int(s.version), state_name(s.state), int(s.status.error_code), s.status.error_message)
            for s in resp.model_version_status]


def is_available(kind: str, target: str, model: str, timeout_s: float = 10.0) -> bool:
    """Whether some version of `model` is AVAILABLE; False when the server does not know it."""
    try:
        return any(s.state == "AVAILABLE" for s in model_status(kind, target, model, timeout_s=timeout_s))
    except UnknownModel:
        return False


def wait_for(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.1, what: str = "condition",
             check: Callable[[], None] = lambda: None) -> Any:
    """Poll predicate() until truthy; return its value, or raise TimeoutError naming `what`. A predicate that
    raises counts as not yet (a restarting server answers with errors for a while); `check` runs before each
    poll and its errors do propagate (e.g. the server process died)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        check()
        try:
            last = predicate()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


def wait_until_available(kind: str, target: str, models: list[str], timeout_s: float,
                         check: Callable[[], None] = lambda: None) -> None:
    """Wait until every model has an AVAILABLE version (TimeoutError naming them)."""
    wait_for(lambda: all(is_available(kind, target, m, timeout_s=2.0) for m in models), timeout_s, 0.3,
             f"an AVAILABLE version of {', '.join(models)}", check)


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
