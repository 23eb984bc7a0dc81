"""TF Serving's REST API (g3doc/api_rest.md) and the Prometheus endpoint, on the stdlib ThreadingHTTPServer.

Why the stdlib server: measured on this 2-core machine with a JSON echo handler and keep-alive clients
(1 and 16 connections), ThreadingHTTPServer with HTTP/1.1 + TCP_NODELAY did 1.7k req/s, p50 0.5 ms at
1 connection, the same as aiohttp 3.14.5 (1.1-1.5k req/s, p50 0.6 ms): the clients, not the server, were
the limit, so an extra dependency buys nothing here. A connection's thread parses and answers its requests;
the model itself runs only with a slot of the model's execution scheduler (serving/execution/scheduler.py, shared with
gRPC) or in the batch queue, so the number of open connections never sets the number of concurrent model
executions. (Without TCP_NODELAY the stdlib server stalls 40 ms per request on delayed ACKs, hence
`disable_nagle_algorithm`.)

Paths, status codes and bodies follow TF Serving (model_servers/http_rest_api_handler.cc,
http_rest_api_util.cc, util/json_tensor.cc): errors are {"error": "..."} with the HTTP code mapped from the
gRPC status (errors.py).
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from google.protobuf.json_format import MessageToDict

from tensorflow_serving.apis import classification_pb2, regression_pb2

from export.contract import CLASSIFY_METHOD_NAME, PROMETHEUS_PATH, REGRESS_METHOD_NAME
from serving.api import rest_examples
from serving.execution import inference
from serving.execution.core import ServingCore, deadline_from_timeout
from serving.errors import ServingError, invalid_argument, not_found
from serving.api.grpc_api import model_metadata, model_status
from serving.metrics import StageClock
from serving.lifecycle.model_manager import ModelManager
from serving.tensors import format_predict_outputs, parse_json_body, parse_predict_inputs, signature_name_of

log = logging.getLogger("serving.rest")

_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I)
IDLE_CONNECTION_TIMEOUT_S = 120


class _Tracker:
    """Counts requests being handled, so shutdown can wait for them (drain) without waiting on idle sockets."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.active = 0

    def __enter__(self) -> None:
        with self._cond:
            self.active += 1

    def __exit__(self, *exc: Any) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.active == 0, timeout=timeout)


class RestApp:
    """The request logic, independent of the HTTP plumbing: (method, path, body) -> (status, content type, body)."""

    def __init__(self, core: ServingCore, manager: ModelManager, timeout_ms: int,
                 metrics_path: str | None = PROMETHEUS_PATH) -> None:
        self.core = core
        self.manager = manager
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        self.metrics_path = metrics_path  # None: Prometheus export off (--monitoring_config_file), a 404 like any path

    def handle(self, method: str, path: str, body: bytes, clock: StageClock | None = None) -> tuple[int, str, bytes]:
        """`clock`: a Predict's stages go there (decode, queue, execute; encode includes the JSON dump)."""
        if path == self.metrics_path and method == "GET":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.core.metrics.exposition()
        try:
            doc = self._dispatch(method, path, body, clock)
            if clock is not None:
                clock.skip()  # the bookkeeping since _predict's encode: framework
            data = json.dumps(doc).encode()
            if clock is not None:
                clock.lap("encode")
            return 200, "application/json", data
        except ServingError as exc:
            return exc.http_status, "application/json", json.dumps({"error": exc.message}).encode()
        except Exception as exc:  # never let one request take the server down
            log.exception("unexpected error on %s %s", method, path)
            return 500, "application/json", json.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"}).encode()

    def _dispatch(self, method: str, path: str, body: bytes, clock: StageClock | None) -> Any:
        if not path.lower().startswith("/v1/"):
            raise not_found(f"Not found: {method} {path}")
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            m = _PREDICT_RE.fullmatch(path)
            if not m:
                raise malformed
            name, version, label, verb = _parts(m)
            verb = verb.lower()
            if verb == "predict":
                return self._predict(name, version, label, body, clock)
            return self._classify_regress(verb, name, version, label, body)
        if method == "GET":
            m = _STATUS_RE.fullmatch(path)
            if not m:
                raise malformed
            name, version, label, sub = _parts(m)
            if not name:
                raise invalid_argument("Missing model name in request.")
            if sub:
                response = model_metadata(self.manager, name, version, label)
                return _metadata_json(response)
            return MessageToDict(model_status(self.manager, name, version, label),
                                 always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        raise malformed

    def _predict(self, name: str, version: int | None, label: str | None, body: bytes,
                 clock: StageClock | None) -> Any:
        with self.core.observed(name, "REST"):
            deadline = deadline_from_timeout(self.timeout_s)
            if clock is not None:
                clock.skip()  # routing so far: framework
            doc = parse_json_body(body)
            sig_name = signature_name_of(doc)
            with self.manager.acquire(name, version, label) as sv:
                sig = self.core.signature(sv, sig_name)
                inputs, fmt = parse_predict_inputs(doc, sig, self.core.max_tensor_elements,
                                                   may_hold_bools=b"true" in body or b"false" in body)
                outputs = self.core.run(sv, sig, inputs, deadline, clock)
                formatted = format_predict_outputs(outputs, fmt)
                if clock is not None:
                    clock.model = sv.model
                    clock.lap("encode")
                return formatted


    def _classify_regress(self, verb: str, name: str, version: int | None, label: str | None, body: bytes) -> Any:
        """:classify / :regress: the JSON examples become the same Input proto a gRPC client sends."""
        method = CLASSIFY_METHOD_NAME if verb == "classify" else REGRESS_METHOD_NAME
        with self.core.observed(name, "REST", verb):
            deadline = deadline_from_timeout(self.timeout_s)
            doc = parse_json_body(body)
            sig_name = signature_name_of(doc)
            request_input = rest_examples.input_from_json(doc, verb)
            with self.manager.acquire(name, version, label) as sv:
                task = inference.resolve_task(sv, method, sig_name)
                serialized = inference.examples_tensor(request_input)
                outputs = self.core.run(sv, task.sig, {task.input_name: serialized}, deadline)
                if method == CLASSIFY_METHOD_NAME:
                    result = classification_pb2.ClassificationResult()
                    inference.fill_result(task, outputs, len(serialized), result)
                    return rest_examples.classification_json(result)
                result = regression_pb2.RegressionResult()
                inference.fill_result(task, outputs, len(serialized), result)
                return rest_examples.regression_json(result)


def _parts(m: re.Match) -> tuple[str, int | None, str | None, str | None]:
    name, version, label, last = m.groups()
    if version is not None and len(version) > 18:
        raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    return (unquote(name) if name else name, int(version) if version is not None else None,
            unquote(label) if label else None, last)


def _metadata_json(response: Any) -> dict[str, Any]:
    """As TF Serving prints it: the SignatureDefMap is unpacked (no "@type"), field names kept as in the proto."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    opts = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
    return {"model_spec": MessageToDict(response.model_spec, **opts),
            "metadata": {"signature_def": MessageToDict(sig_map, **opts)}}


class _Handler(BaseHTTPRequestHandler):
    """TF Serving's REST API on http.server; make_handler() binds it to one server's app and limits."""

    app: RestApp
    tracker: _Tracker
    max_body: int
    handling: Any  # a context manager entered around each request's handling (the --rest_api_num_threads cap)

    protocol_version = "HTTP/1.1"  # keep-alive: benchmark clients reuse connections
    disable_nagle_algorithm = True  # see module docstring: avoids 40 ms delayed-ACK stalls
    timeout = IDLE_CONNECTION_TIMEOUT_S  # idle keep-alive connections do not hold a thread forever
    server_version = "tfserve-bench-embedded"

    def log_message(self, fmt: str, *args: Any) -> None:  # access logs would cost more than the request
        log.debug("%s " + fmt, self.address_string(), *args)

    def _reply(self, status: int, ctype: str, body: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        # Headers and body in one write (what end_headers + wfile.write would send as two): one syscall
        # per response, and the whole reply is on the wire together, even for an error sent before the
        # request body was read.
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(body)
        self.flush_headers()

    def _error(self, status: int, message: str, close: bool = False) -> None:
        self._reply(status, "application/json", json.dumps({"error": message}).encode(), close)

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            self._error(400, f"invalid Content-Length: {raw!r}", close=True)
            return None
        if length < 0:
            self._error(400, f"invalid Content-Length: {raw!r}", close=True)
            return None
        if length > self.max_body:
            # Do not read it: answer and drop the connection.
            self._error(413, f"request body of {length} bytes exceeds the server's limit of {self.max_body} "
                             "bytes (--max-request-bytes)", close=True)
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks, total = [], 0
        while True:
            line = self.rfile.readline(1024).strip()
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                self._error(400, "malformed chunked body", close=True)
                return None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > self.max_body:
                self._error(413, f"request body exceeds the server's limit of {self.max_body} bytes "
                                 "(--max-request-bytes)", close=True)
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(16)

    def parse_request(self) -> bool:
        # the request line has just arrived: a request's handled time (StageClock) starts here, so the
        # header parsing that follows counts as framework
        self.clock = StageClock("REST")
        return super().parse_request()

    def _handle(self, method: str) -> None:
        with self.tracker:
            body = self._read_body() if method == "POST" else b""
            if body is None:
                return
            path = self.path.split("?", 1)[0]
            clock = self.clock if method == "POST" else None
            try:
                with self.handling:
                    status, ctype, payload = self.app.handle(method, path, body, clock)
            except Exception as exc:  # RestApp.handle answers its own errors; this last line never drops a reply
                log.exception("unexpected error handling %s %s", method, path)
                self._error(500, f"internal error: {type(exc).__name__}: {exc}", close=True)
                return
            self._reply(status, ctype, payload)
            if clock is not None and status == 200:
                self.app.core.metrics.observe_stages(clock)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


def make_handler(app: RestApp, tracker: _Tracker, max_body: int,
                 slots: threading.BoundedSemaphore | None = None) -> type[BaseHTTPRequestHandler]:
    """`slots` caps the requests handled at once (--rest_api_num_threads); without it there is no cap."""
    handling = slots if slots is not None else contextlib.nullcontext()
    return type("Handler", (_Handler,), {"app": app, "tracker": tracker, "max_body": max_body, "handling": handling})


class RestServer:
    def __init__(self, app: RestApp, host: str, port: int, max_body: int, num_threads: int | None = None) -> None:
        self.tracker = _Tracker()
        slots = threading.BoundedSemaphore(num_threads) if num_threads else None
        handler = make_handler(app, self.tracker, max_body, slots)

        class _Server(ThreadingHTTPServer):
            daemon_threads = True  # idle keep-alive threads must not block exit; drain uses the tracker
            request_queue_size = 1024  # many benchmark clients connect at once
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client closing its keep-alive connection (wrk at the end of a run) is not a server error:
                # socketserver would print a traceback to stderr for each one.
                exc = sys.exc_info()[1]
                if isinstance(exc, (ConnectionResetError, BrokenPipeError, TimeoutError)):
                    log.debug("connection from %s ended: %s", client_address, exc)
                    return
                log.error("error on the connection from %s", client_address, exc_info=exc)

        self.httpd = _Server((host, port), handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rest-accept", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop_accepting(self) -> None:
        self.httpd.shutdown()

    def drain(self, timeout: float) -> bool:
        return self.tracker.wait_idle(timeout)

    def close(self) -> None:
        self.httpd.server_close()
