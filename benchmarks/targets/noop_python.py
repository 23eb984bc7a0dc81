"""A no-op TF Serving look-alike: answers Predict (gRPC and REST) without running any model.

Why: (1) to measure what one load-generator process can drive at all (its capacity ceiling), so we
know when a benchmark measures the client instead of the server; (2) to test the benchmark tooling
without TensorFlow. It speaks the same wire formats as TF Serving (official protos, REST JSON,
Prometheus metrics on the REST port) but returns zeros of the right shape.

Run: python -m benchmarks noop-server --grpc-port 8600 --rest-port 8601 [--delay-ms 0]
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass

import numpy as np

from benchmarks.requests import protos
from export.contract import (DEFAULT_SIGNATURE, GRPC_MESSAGE_OPTIONS, PREDICT_METHOD, PROCESSED_BATCH_SIZE,
                             PROMETHEUS_PATH, REQUEST_COUNT, REQUEST_LATENCY, STATUS_METHOD, rpc_name)
from export.tensor_proto import fill_tensor_proto

_MODEL_RE = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([A-Za-z0-9_]+))?(:predict|/metadata)?$")


@dataclass
class NoopConfig:
    grpc_port: int = 0
    rest_port: int = 0
    host: str = "127.0.0.1"
    delay_ms: float = 0.0
    models: tuple[str, ...] = ()  # empty = accept any model name
    max_connection_age_ms: int = 0  # > 0: the gRPC server closes each connection after this long (GOAWAY)


class _Metrics:
    """TF Serving-named metrics so the Prometheus scraping path can be tested end to end."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.count = Counter(REQUEST_COUNT, "requests", ["model_name", "status"],
                             registry=self.registry)
        self.latency = Histogram(REQUEST_LATENCY, "µs", ["model_name", "API", "entrypoint"],
                                 buckets=(10, 50, 100, 500, 1000, 5000, 10000, 50000, 100000, 1e6),
                                 registry=self.registry)
        self.batch = Histogram(PROCESSED_BATCH_SIZE, "rows", ["model_name"],
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry)

    def observe(self, model: str, api: str, entry: str, status: str, us: float, rows: int) -> None:
        self.count.labels(model, status).inc()
        self.latency.labels(model, api, entry).observe(us)
        if rows:
            self.batch.labels(model).observe(rows)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def predict_response(rows: int, model: str, signature: str = DEFAULT_SIGNATURE) -> bytes:
    """The no-op servers' Predict answer, serialised: zeros [rows, 1] under 'predictions', from version 1."""
    resp = protos.get("predict_pb2").PredictResponse()
    resp.model_spec.name = model
    resp.model_spec.version.value = 1
    resp.model_spec.signature_name = signature
    fill_tensor_proto(resp.outputs["predictions"], np.zeros((rows, 1), np.float32))
    return resp.SerializeToString()


# GET /v1/models/NAME: what TF Serving answers for one AVAILABLE version
REST_STATUS = json.dumps({"model_version_status": [
    {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})


def model_status_response() -> bytes:
    """The no-op servers' GetModelStatus answer, serialised: version 1 AVAILABLE."""
    gs = protos.get("get_model_status_pb2")
    resp = gs.GetModelStatusResponse()
    resp.model_version_status.add(version=1, state=gs.ModelVersionStatus.AVAILABLE)
    return resp.SerializeToString()


class NoopCore:
    def __init__(self, cfg: NoopConfig) -> None:
        self.cfg = cfg
        self.p = protos.load()
        self.metrics = _Metrics()
        self._grpc_cache: dict[bytes, bytes] = {}
        self.requests = 0

    def known(self, model: str) -> bool:
        return not self.cfg.models or model in self.cfg.models

    def grpc_predict(self, data: bytes) -> tuple[str, bytes | str, int, str]:
        """-> (status, response bytes or error message, rows, model)."""
        hit = self._grpc_cache.get(data)
        if hit is not None:
            return "OK", hit[0], hit[1], hit[2]
        pb = self.p["predict_pb2"]
        try:
            req = pb.PredictRequest.FromString(data)
        except Exception as e:  # noqa: BLE001 - any parse failure is the client's fault
            return "INVALID_ARGUMENT", f"cannot parse PredictRequest: {e}", 0, ""
        model = req.model_spec.name
        if not self.known(model):
            return "NOT_FOUND", f"Servable not found for request: Latest({model})", 0, model
        if not req.inputs:
            return "INVALID_ARGUMENT", "PredictRequest has no inputs", 0, model
        t = next(iter(req.inputs.values()))
        rows = t.tensor_shape.dim[0].size if t.tensor_shape.dim else 1
        out = predict_response(rows, model, req.model_spec.signature_name or DEFAULT_SIGNATURE)
        if len(self._grpc_cache) < 256:
            self._grpc_cache[bytes(data)] = (out, rows, model)
        return "OK", out, rows, model


# ------------------------------------------------------------------------------------------
# gRPC (asyncio server, generic handler on raw bytes: no per-request proto work on cache hits)
# ------------------------------------------------------------------------------------------
async def _serve_grpc(core: NoopCore, ready: threading.Event | None, port_box: list[int],
                      stop: asyncio.Event) -> None:
    import grpc

    codes = {"INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT, "NOT_FOUND": grpc.StatusCode.NOT_FOUND}
    delay = core.cfg.delay_ms / 1000.0

    async def predict(request: bytes, context) -> bytes:
        t0 = time.perf_counter()
        if delay:
            await asyncio.sleep(delay)
        status, out, rows, model = core.grpc_predict(request)
        core.requests += 1
        core.metrics.observe(model, "predict", "GRPC", status, (time.perf_counter() - t0) * 1e6, rows)
        if status != "OK":
            await context.abort(codes[status], out)
        return out

    gs = core.p["get_model_status_pb2"]

    async def status_rpc(request: bytes, context) -> bytes:
        req = gs.GetModelStatusRequest.FromString(request)
        if not core.known(req.model_spec.name):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {req.model_spec.name}")
        return model_status_response()

    handlers = [grpc.method_handlers_generic_handler(service, {name: grpc.unary_unary_rpc_method_handler(fn)})
                for (service, name), fn in ((rpc_name(PREDICT_METHOD), predict), (rpc_name(STATUS_METHOD), status_rpc))]
    age = core.cfg.max_connection_age_ms
    aging = [("grpc.max_connection_age_ms", age), ("grpc.max_connection_age_grace_ms", age)] if age > 0 else []
    server = grpc.aio.server(options=[*GRPC_MESSAGE_OPTIONS, ("grpc.so_reuseport", 0), *aging])
    server.add_generic_rpc_handlers(handlers)
    port_box.append(server.add_insecure_port(f"{core.cfg.host}:{core.cfg.grpc_port}"))
    await server.start()
    if ready:
        ready.set()
    await stop.wait()
    await server.stop(grace=0.5)


# ------------------------------------------------------------------------------------------
# REST (gevent WSGI server in its own thread: gevent's hub is per-thread, no monkey-patching)
# ------------------------------------------------------------------------------------------
def _rest_app(core: NoopCore):
    delay = core.cfg.delay_ms / 1000.0
    cache: dict[bytes, tuple[bytes, int]] = {}

    def reply(start_response, code: int, body: bytes, ctype: str = "application/json"):
        reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 501: "Not Implemented"}
        start_response(f"{code} {reasons.get(code, 'Error')}",
                       [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    def err(start_response, code: int, msg: str):
        return reply(start_response, code, json.dumps({"error": msg}).encode())

    def app(environ, start_response):
        import gevent

        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == PROMETHEUS_PATH:
            return reply(start_response, 200, core.metrics.render(), "text/plain; version=0.0.4")
        model, action, error = _route(core, method, path)
        if error:
            return err(start_response, *error)
        if action is None:
            return reply(start_response, 200, REST_STATUS.encode())
        t0 = time.perf_counter()
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n) if n else b""
        if delay:
            gevent.sleep(delay)
        hit = cache.get(body)
        if hit is None:
            try:
                doc = json.loads(body)
                inst = doc["instances"] if "instances" in doc else doc["inputs"]
                rows = len(inst) if isinstance(inst, list) else len(next(iter(inst.values())))
            except (ValueError, KeyError, TypeError, StopIteration) as e:
                core.metrics.observe(model, "predict", "REST", "INVALID_ARGUMENT", 0, 0)
                return err(start_response, 400, f"JSON Parse error / missing 'instances' or 'inputs': {e}")
            key = "predictions" if "instances" in doc else "outputs"
            hit = (json.dumps({key: [[0.0]] * rows}).encode(), rows)
            if len(cache) < 256:
                cache[body] = hit
        core.requests += 1
        core.metrics.observe(model, "predict", "REST", "OK", (time.perf_counter() - t0) * 1e6, hit[1])
        return reply(start_response, 200, hit[0])

    return app


def _route(core: NoopCore, method: str, path: str) -> tuple[str, str | None, tuple[int, str] | None]:
    """-> (model, action, (HTTP code, message) when the request gets an error), as TF Serving and the embedded
    server route: outside /v1/ nothing exists (404); a /v1/ path or method that is no API route is a
    malformed request (400, INVALID_ARGUMENT); an unknown model is NOT_FOUND (404)."""
    if not path.lower().startswith("/v1/"):
        return "", None, (404, f"Not found: {method} {path}")
    m = _MODEL_RE.match(path)
    if not m:
        return "", None, (400, f"Malformed request: {method} {path}")
    model, _v, _l, action = m.groups()
    if not core.known(model):
        return model, action, (404, f"Servable not found for request: Latest({model})")
    if (action, method) in ((None, "GET"), (":predict", "POST")):
        return model, action, None
    if (action, method) == ("/metadata", "GET"):
        return model, action, (501, "model metadata is not implemented by the no-op server")
    return model, action, (400, f"Malformed request: {method} {path}")


def _serve_rest(core: NoopCore, ready: threading.Event, port_box: list[int], stop: threading.Event) -> None:
    import gevent
    from gevent.pywsgi import WSGIServer

    from gevent import socket as gsocket

    # TCP_NODELAY (inherited by accepted sockets on Linux): pywsgi writes headers and body in two
    # sends; with Nagle on, the body waits for the client's delayed ACK -- a 40 ms stall per request.
    listener = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    listener.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
    listener.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
    listener.bind((core.cfg.host, core.cfg.rest_port))
    listener.listen(1024)
    server = WSGIServer(listener, _rest_app(core), log=None, error_log=None)
    server.start()
    port_box.append(server.server_port)
    ready.set()
    while not stop.is_set():
        gevent.sleep(0.1)
    server.stop(timeout=1)


def _rest_child(cfg: NoopConfig, q) -> None:
    import signal as _signal

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # Ctrl-C goes to the parent, which SIGTERMs us
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)  # a no-op server has nothing to drain
    core = NoopCore(cfg)
    ready, port_box, tstop = threading.Event(), [], threading.Event()
    t = threading.Thread(target=_serve_rest, args=(core, ready, port_box, tstop), daemon=True)
    t.start()
    ready.wait(30)
    q.put(port_box[0])
    t.join()


class NoopServer:
    """Runs both endpoints in background threads of the calling process (handy in tests).
    For capacity measurements run it as its own process (`python -m benchmarks noop-server`) so the
    server does not share the load generator's GIL."""

    def __init__(self, cfg: NoopConfig, rest_process: bool = False) -> None:
        self.cfg = cfg
        self.core = NoopCore(cfg)
        # Both servers in one process share a GIL: a busy gRPC loop then delays REST replies by the
        # interpreter's 5 ms switch interval. The CLI therefore runs REST in a forked child process.
        self.rest_process = rest_process
        self._child = None
        self.grpc_port = 0
        self.rest_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grpc_stop: asyncio.Event | None = None
        self._rest_stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "NoopServer":
        g_ready, r_ready = threading.Event(), threading.Event()
        g_port: list[int] = []
        r_port: list[int] = []

        def grpc_thread():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._grpc_stop = asyncio.Event()
            self._loop.run_until_complete(_serve_grpc(self.core, g_ready, g_port, self._grpc_stop))

        if self.rest_process:
            import multiprocessing as mp

            ctx = mp.get_context("fork")  # before any gRPC object exists in this process: fork-safe
            q = ctx.Queue()
            self._child = ctx.Process(target=_rest_child, args=(self.cfg, q), daemon=True, name="noop-rest")
            self._child.start()
            r_port.append(q.get(timeout=30))
            r_ready.set()
            self._threads = [threading.Thread(target=grpc_thread, daemon=True, name="noop-grpc")]
        else:
            self._threads = [threading.Thread(target=grpc_thread, daemon=True, name="noop-grpc"),
                             threading.Thread(target=_serve_rest, args=(self.core, r_ready, r_port, self._rest_stop),
                                              daemon=True, name="noop-rest")]
        for t in self._threads:
            t.start()
        if not (g_ready.wait(30) and r_ready.wait(30)):
            raise RuntimeError("no-op server did not start within 30 s")
        self.grpc_port, self.rest_port = g_port[0], r_port[0]
        return self

    def stop(self) -> None:
        if self._loop and self._grpc_stop:
            self._loop.call_soon_threadsafe(self._grpc_stop.set)
        self._rest_stop.set()
        if self._child is not None:
            # SIGTERM, not a multiprocessing.Event: Event.set() blocks forever when the child is
            # already gone (e.g. the whole process group got SIGTERM), hanging the shutdown.
            if self._child.is_alive():
                self._child.terminate()
            self._child.join(timeout=5)
            if self._child.is_alive():
                self._child.kill()
                self._child.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> "NoopServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
