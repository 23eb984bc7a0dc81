"""One request before the timed load, with the server's own words when it fails.

The load transports count failures by status only (that is all a timed loop should spend time on), so
the probe is a plain blocking call that keeps the error message: gRPC's status details, or the
`{"error": ...}` of TF Serving's REST API. A run whose probe fails stops with that message instead of
timing thousands of identical failures (the CLI's --allow-errors runs anyway and counts them).
"""
from __future__ import annotations

from dataclasses import dataclass

from benchmarks.clients.base import ok
from benchmarks.requests.payloads import Payload
from benchmarks.requests.signature import error_message, http_call
from export.contract import GRPC_MESSAGE_OPTIONS


@dataclass
class ProbeResult:
    status: str  # gRPC status name, or the HTTP code as a string; "OK" / "200" when it worked
    body: bytes | None  # the response bytes when it worked
    message: str = ""  # the server's error message when it did not

    @property
    def ok(self) -> bool:
        return ok(self.status)


def _probe_grpc(target: str, p: Payload, timeout_s: float) -> ProbeResult:
    import grpc

    with grpc.insecure_channel(target, options=GRPC_MESSAGE_OPTIONS) as ch:
        try:
            return ProbeResult("OK", ch.unary_unary(p.grpc_method)(p.grpc_bytes, timeout=timeout_s))
        except grpc.RpcError as e:
            return ProbeResult(e.code().name, None, e.details() or "")


def _probe_rest(target: str, p: Payload, timeout_s: float) -> ProbeResult:
    try:
        status, body = http_call(f"http://{target}{p.rest_path}", timeout_s, p.rest_body)
    except OSError as e:  # URLError is one
        return ProbeResult("connection_error", None, str(getattr(e, "reason", e)))
    return ProbeResult(str(status), body) if status < 400 else ProbeResult(str(status), None, error_message(body))


def probe(kind: str, target: str, p: Payload, timeout_s: float = 30.0) -> ProbeResult:
    return (_probe_grpc if kind == "grpc" else _probe_rest)(target, p, timeout_s)
