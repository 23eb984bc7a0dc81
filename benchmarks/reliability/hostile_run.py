"""Send hostile cases (hostile.py) to a live server and judge the answers.

`send_*` functions do one case and return the problem (None = correct answer). `run_hostile` drives all
families through Hypothesis, derandomized, with bounded example counts for the `make reliability` report;
the tests use the same senders under `@given`. After each family the server must still answer a valid
request correctly, and its resident memory is compared before/after (no allocation from claimed shapes).
"""
from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from benchmarks.requests import protos
from benchmarks.requests.signature import UnknownModel
from benchmarks.reliability import client
from benchmarks.reliability.faults import Sentinel
from benchmarks.reliability.hostile import (GrpcCase, NameCase, RestCase, Tally, check_grpc_answer, check_name_grpc,
                                            check_name_rest, check_rest_answer, rest_paths_for)
from benchmarks.reliability.memory import rss_bytes
from export.contract import PREDICT_METHOD
from export.tensor_proto import fill_tensor_proto

REST_TIMEOUT_S = 30.0


def http_request(rest_target: str, method: str, path: str, body: bytes = b"",
                 headers: dict[str, str] | None = None, timeout: float = REST_TIMEOUT_S) -> tuple[int, bytes]:
    """Raw HTTP/1.1 request (no client-side normalisation of '..' or encoding), one connection per call.

    A server that refuses an oversized body may answer and close before we finish sending it: the answer
    is still read when the kernel kept it; a connection reset with no answer is reported as status 0.
    """
    host, port = rest_target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    try:
        try:
            conn.request(method, path, body=body if method != "GET" else None, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            pass  # server stopped reading (e.g. 413): its answer may be waiting
        try:
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, socket.timeout):
            return 0, b""
    finally:
        conn.close()


def send_rest(rest_target: str, case: RestCase) -> str | None:
    status, body = http_request(rest_target, "POST", f"/v1/models/{case.path_model}:predict", case.body)
    if status == 0:
        return "connection closed without an HTTP answer"
    return check_rest_answer(case, status, body)


class GrpcSender:
    """One channel for many cases (a channel per case would measure connection setup, not the server)."""

    def __init__(self, grpc_target: str, max_elements: int | None = None) -> None:
        p = protos.load()
        self._p = p
        self.channel = client.channel(grpc_target)
        self.max_elements = max_elements
        self.predict = self.channel.unary_unary(
            PREDICT_METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=p["predict_pb2"].PredictResponse.FromString)
        self.raw_predict = self.channel.unary_unary(PREDICT_METHOD)
        self.status = p["model_service_pb2_grpc"].ModelServiceStub(self.channel).GetModelStatus
        self.metadata = p["prediction_service_pb2_grpc"].PredictionServiceStub(self.channel).GetModelMetadata

    def close(self) -> None:
        self.channel.close()

    def call(self, fn: Callable, request: Any, timeout: float = 30.0) -> tuple[str, Any]:
        import grpc

        try:
            return "OK", fn(request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()

    def send_tensor_case(self, case: GrpcCase) -> str | None:
        code, resp = self.call(self.predict, case.request)
        problem = check_grpc_answer(case, code, resp if code == "OK" else None, self.max_elements)
        return f"{problem} ({resp})" if problem and code != "OK" else problem

    def send_name_case(self, case: NameCase) -> str | None:
        p = self._p
        problems = []
        predict_req = p["predict_pb2"].PredictRequest()
        status_req = p["get_model_status_pb2"].GetModelStatusRequest()
        meta_req = p["get_model_metadata_pb2"].GetModelMetadataRequest()
        meta_req.metadata_field.append("signature_def")
        for req in (predict_req, status_req, meta_req):
            req.model_spec.name = case.name
            if case.label:
                req.model_spec.version_label = case.label
        fill_tensor_proto(predict_req.inputs["inputs"], np.full((1, 10), 0.1, np.float32), typed_fields=True)
        for what, fn, req in (("Predict", self.predict, predict_req), ("GetModelStatus", self.status, status_req),
                              ("GetModelMetadata", self.metadata, meta_req)):
            code, detail = self.call(fn, req)
            problem = check_name_grpc(code)
            if problem:
                problems.append(f"{what}: {problem} ({detail if code != 'OK' else 'answered'})")
        return "; ".join(problems) or None


def send_name_rest(rest_target: str, case: NameCase) -> str | None:
    problems = []
    body = json.dumps({"instances": [[0.1] * 10]}).encode()
    for method, path in rest_paths_for(case):
        status, resp = http_request(rest_target, method, path, body if method == "POST" else b"")
        problem = check_name_rest(status, resp)
        if problem:
            problems.append(f"{method} {path}: {problem}")
    return "; ".join(problems) or None


def send_raw_traversal_paths(rest_target: str) -> list[tuple[str, str | None]]:
    """Unencoded '..' and odd bytes in the URL path itself, as a raw socket client can send them."""
    out = []
    for path in ["/v1/models/../../bait_model", "/v1/models/..", "/v1/models/../bait_model:predict",
                 "/v1/models/residual_regressor/../../bait_model", "/v1/models/%2e%2e%2fbait_model",
                 "/v1/models/residual_regressor/labels/..%2f..", "/v1/models/bait_model%00",
                 "/v1/models/residual_regressor/versions/99999999999999999999999", "/../../../etc/passwd",
                 "/v1/models/residual_regressor/versions/-1", "/v1/models//metadata"]:
        method = "POST" if path.endswith(":predict") else "GET"
        status, body = http_request(rest_target, method, path, b'{"instances": [[0,0,0,0,0,0,0,0,0,0]]}')
        problem = None if status in (400, 404) else f"HTTP {status}: {body[:160]!r}"
        if problem is None:
            try:
                json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                problem = f"HTTP {status} without a JSON error body: {body[:120]!r}"
        out.append((path, problem))
    return out


def check_config_reload_refused(grpc_target: str, sentinel: Sentinel) -> str | None:
    """HandleReloadConfigRequest pointing at the bait model must be refused (server started without the flag)."""
    import grpc

    p = protos.load()  # imports the generated modules only; model_management_pb2 comes with model_service
    from tensorflow_serving.apis import model_management_pb2 as mm

    req = mm.ReloadConfigRequest()
    entry = req.config.model_config_list.config.add()
    entry.name = "bait_model"
    entry.base_path = str(sentinel.bait_model)
    entry.model_platform = "tensorflow"
    with client.channel(grpc_target) as ch:
        stub = p["model_service_pb2_grpc"].ModelServiceStub(ch)
        try:
            stub.HandleReloadConfigRequest(req, timeout=30)
            return "HandleReloadConfigRequest was accepted by a server started without --enable-config-reload"
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.UNIMPLEMENTED):
                return f"config reload refused with {exc.code().name}, expected FAILED_PRECONDITION: {exc.details()}"
    try:
        client.model_status(grpc_target, "bait_model")
        return "bait_model is known to the server after a refused reload"
    except UnknownModel:
        return None
    except RuntimeError as exc:
        return f"status of bait_model failed ({exc}), expected NOT_FOUND"


# ------------------------------------------------------------------------------------------------ the report's run
@dataclass
class HostileResult:
    tally: Tally = field(default_factory=Tally)
    rss_before_mib: float = 0.0
    rss_after_mib: float = 0.0
    valid_after: dict[str, str | None] = field(default_factory=dict)  # family -> problem after it (None = fine)
    sentinel_created: list[str] = field(default_factory=list)
    sentinel_changed: list[str] = field(default_factory=list)
    config_reload: str | None = None
    skipped: str = ""

    def as_dict(self) -> dict:
        return {"tried": self.tally.tried, "failures": self.tally.failures, "problems": self.tally.problems,
                "total": self.tally.total, "failed": self.tally.failed,
                "rss_before_mib": round(self.rss_before_mib, 1), "rss_after_mib": round(self.rss_after_mib, 1),
                "valid_after": self.valid_after, "sentinel_created": self.sentinel_created,
                "sentinel_changed": self.sentinel_changed, "config_reload_problem": self.config_reload,
                "skipped": self.skipped}


def _drive(strategy, examples: int, fn: Callable[[Any], None]) -> None:
    """Run fn over `examples` cases drawn by Hypothesis, deterministically (derandomize: the same cases on
    every run, so two reports are comparable), never raising on a bad answer (fn records it)."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case):
        fn(case)

    run()


def run_hostile(grpc_target: str, rest_target: str, pid: int, sentinel: Sentinel, *, examples: int = 200,
                body_limit: int | None = None, max_elements: int | None = None,
                progress: Callable[[str], None] = print) -> HostileResult:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        return HostileResult(skipped="hypothesis is not installed (pip install -e '.[dev]')")
    from benchmarks.reliability.hostile import grpc_input_set_cases, grpc_tensor_cases, name_cases, rest_strategies

    res = HostileResult()
    res.rss_before_mib = rss_bytes(pid) / 2**20
    before = sentinel.snapshot()

    kinds = rest_strategies(body_limit)
    per_kind = max(5, examples // len(kinds))
    progress(f"hostile REST bodies: {len(kinds)} kinds x up to {per_kind} cases")
    for strategy in kinds.values():
        _drive(strategy, per_kind, lambda c: res.tally.add("rest:" + c.kind, send_rest(rest_target, c), c))
    res.valid_after["rest"] = client.check_valid_request(grpc_target, rest_target)

    progress(f"hostile gRPC tensors: {examples} cases")
    sender = GrpcSender(grpc_target, max_elements)
    try:
        _drive(grpc_tensor_cases(), examples, lambda c: res.tally.add("grpc:" + c.kind, sender.send_tensor_case(c), c))
        _drive(grpc_input_set_cases(), max(10, examples // 4),
               lambda c: res.tally.add("grpc:" + c.kind, sender.send_tensor_case(c), c))
        res.valid_after["grpc"] = client.check_valid_request(grpc_target, rest_target)
        progress(f"hostile model names/labels: {max(20, examples // 4)} cases over gRPC and REST")

        def names(c: NameCase) -> None:
            res.tally.add("names:" + c.kind, sender.send_name_case(c), c)
            res.tally.add("names_rest:" + c.kind, send_name_rest(rest_target, c), c)

        _drive(name_cases(), max(20, examples // 4), names)
    finally:
        sender.close()
    for path, problem in send_raw_traversal_paths(rest_target):
        res.tally.add("names_rest:raw_path", problem, path)
    res.config_reload = check_config_reload_refused(grpc_target, sentinel)
    res.tally.add("config_reload", res.config_reload, "HandleReloadConfigRequest(bait_model)")
    res.valid_after["names"] = client.check_valid_request(grpc_target, rest_target)
    res.rss_after_mib = rss_bytes(pid) / 2**20
    res.sentinel_created = [str(p) for p in sentinel.created()]
    after = sentinel.snapshot()
    res.sentinel_changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return res
