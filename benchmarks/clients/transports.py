"""Async transports for TF Serving's Predict: gRPC (grpc.aio) and REST (asyncio streams, pre-built request bytes).

Both send pre-built bytes (see payloads.py) and return (status, response bytes). Status is the gRPC
status name ("OK", "UNAVAILABLE", ...) for gRPC and the HTTP code as a string ("200", "503", ...) or
a client-side error class ("connection_error", "timeout") for REST, so errors can be counted by code.

Why asyncio: a Python thread pool with blocking stubs tops out around a couple of thousand req/s
because every call holds the GIL while blocking; one event loop with many calls in flight does not.
"""
from __future__ import annotations

import asyncio
from typing import Protocol

from benchmarks.clients.payloads import PREDICT_METHOD

MAX_MESSAGE = 256 * 2**20  # large batches exceed gRPC's default 4 MB receive limit


class Transport(Protocol):
    name: str
    target: str

    async def send(self, payload: bytes) -> tuple[str, bytes | None]: ...

    async def close(self) -> None: ...


class GrpcTransport:
    name = "grpc"

    def __init__(self, target: str, *, channels: int = 1, timeout_s: float = 30.0,
                 method: str = PREDICT_METHOD) -> None:
        import grpc

        self._grpc = grpc
        self.target = target
        self.timeout_s = timeout_s
        opts = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
                # separate TCP connections per channel instead of one shared subchannel
                ("grpc.use_local_subchannel_pool", 1)]
        self._channels = [grpc.aio.insecure_channel(target, options=opts) for _ in range(max(1, channels))]
        # request_serializer/response_deserializer None = bytes in, bytes out: no proto work while timed.
        self._calls = [ch.unary_unary(method) for ch in self._channels]
        self._i = 0

    async def send(self, payload: bytes) -> tuple[str, bytes | None]:
        self._i += 1
        call = self._calls[self._i % len(self._calls)]
        try:
            resp = await call(payload, timeout=self.timeout_s)
            return "OK", resp
        except self._grpc.aio.AioRpcError as e:
            return e.code().name, None

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()


# HTTP status -> gRPC status when a response carries no grpc-status (gRPC's HTTP-to-gRPC mapping doc)
_HTTP_TO_GRPC = {400: "INTERNAL", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "UNIMPLEMENTED",
                 429: "UNAVAILABLE", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE"}


def grpc_status_name(value: bytes) -> str:
    """A grpc-status trailer value (b"5") -> its name ("NOT_FOUND"), from grpcio's StatusCode enum."""
    import grpc

    try:
        code = int(value)
    except ValueError:
        return "UNKNOWN"
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")


class _CurlCall:
    """One reusable libcurl easy handle and what its current call has received."""

    __slots__ = ("curl", "body", "status", "future", "frame")

    def __init__(self, curl) -> None:
        self.curl = curl
        self.body: list[bytes] = []
        self.status: bytes | None = None  # grpc-status value (headers of a Trailers-Only reply, or trailers)
        self.future: asyncio.Future | None = None
        self.frame: bytes | None = None  # the request body POSTFIELDS currently points at

    def reset(self) -> None:
        """Forget the last call's response so the handle can carry the next one."""
        self.future = None
        self.body.clear()  # cleared in place: WRITEFUNCTION is bound to this list's append
        self.status = None

    def on_header(self, line: bytes) -> None:
        # libcurl hands over every response header line, HTTP/2 trailers included
        if line.startswith(b"grpc-status:"):
            self.status = line[12:].strip()


class CurlGrpcTransport:
    """gRPC unary Predict over libcurl's HTTP/2 (pycurl), driven by the asyncio loop.

    Why a second gRPC client: grpc.aio costs ~140-210 µs of CPU per call here, which caps one
    load-generator process near 6,000-9,000 req/s even against a server that answers in microseconds.
    libcurl does the HTTP/2 framing, HPACK and flow control in C; what is left in Python per call is
    queueing a reused easy handle, a few header callbacks and resolving a future (~70 µs in all here).

    The wire format is gRPC's own (PROTOCOL-HTTP2.md): POST to /package.Service/Method over cleartext
    HTTP/2 with prior knowledge, ``content-type: application/grpc``, ``te: trailers``, a grpc-timeout
    header, the message behind a 5-byte length prefix; the call's status comes from the grpc-status
    trailer (or the headers of a Trailers-Only reply). Calls multiplex over as few connections as the
    server's stream limit allows (libcurl opens another when one is full). Not supported: TLS, compression,
    metadata beyond the above -- this is a benchmark client for TF Serving's Predict, not a gRPC library.
    """

    name = "grpc"

    def __init__(self, target: str, *, timeout_s: float = 30.0, method: str = PREDICT_METHOD) -> None:
        try:
            import pycurl
        except ImportError as e:
            raise RuntimeError(f"the libcurl gRPC client cannot load pycurl ({e}). If TensorFlow was imported "
                               "first in this process, import benchmarks before tensorflow (see "
                               "benchmarks/__init__.py) or use --grpc-client aio") from e

        self._pycurl = pycurl
        self.target = target
        self.timeout_s = timeout_s
        self.url = f"http://{target}{method}"
        self._headers = ["content-type: application/grpc", "te: trailers", "user-agent: tfserve-bench-curl",
                         f"grpc-timeout: {max(1, int(timeout_s * 1000))}m",
                         "expect:"]  # no "Expect: 100-continue" round trip for larger bodies
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._idle: list[_CurlCall] = []
        self._by_curl: dict[object, _CurlCall] = {}
        self._frames: dict[bytes, bytes] = {}  # payload -> length-prefixed frame, built once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._watched: dict[int, int] = {}  # fd -> pycurl POLL_* currently registered with the loop

    # -- libcurl -> asyncio -------------------------------------------------------------------
    def _on_socket(self, what: int, fd: int, multi, socketp) -> None:
        pc, loop = self._pycurl, self._loop
        prev = self._watched.get(fd, pc.POLL_NONE)
        want_in = what in (pc.POLL_IN, pc.POLL_INOUT)
        want_out = what in (pc.POLL_OUT, pc.POLL_INOUT)
        had_in = prev in (pc.POLL_IN, pc.POLL_INOUT)
        had_out = prev in (pc.POLL_OUT, pc.POLL_INOUT)
        if want_in and not had_in:
            loop.add_reader(fd, self._action, fd, pc.CSELECT_IN)
        elif had_in and not want_in:
            loop.remove_reader(fd)
        if want_out and not had_out:
            loop.add_writer(fd, self._action, fd, pc.CSELECT_OUT)
        elif had_out and not want_out:
            loop.remove_writer(fd)
        if what == pc.POLL_REMOVE:
            self._watched.pop(fd, None)
        else:
            self._watched[fd] = what

    def _on_timer(self, timeout_ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout_ms >= 0 and self._loop is not None:
            self._timer = self._loop.call_later(timeout_ms / 1000.0, self._action, self._pycurl.SOCKET_TIMEOUT, 0)

    def _action(self, fd: int, events: int) -> None:
        try:
            self._multi.socket_action(fd, events)
        except self._pycurl.error:
            pass  # per-transfer failures arrive through info_read below
        self._collect()

    def _collect(self) -> None:
        multi = self._multi
        while True:
            queued, done, failed = multi.info_read()
            for curl in done:
                self._finish(curl, 0)
            for curl, errno, _msg in failed:
                self._finish(curl, errno)
            if not queued:
                return

    def _finish(self, curl, errno: int) -> None:
        call = self._by_curl[curl]
        self._multi.remove_handle(curl)
        fut = call.future
        if errno:
            pc = self._pycurl
            result = ("DEADLINE_EXCEEDED" if errno == pc.E_OPERATION_TIMEDOUT else "UNAVAILABLE"), None
        else:
            result = self._result(call)
        call.reset()
        self._idle.append(call)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _result(self, call: _CurlCall) -> tuple[str, bytes | None]:
        if call.status is None:  # no grpc-status at all: map the HTTP status as gRPC clients do
            code = call.curl.getinfo(self._pycurl.RESPONSE_CODE)
            return (_HTTP_TO_GRPC.get(code, "UNKNOWN") if code != 200 else "INTERNAL"), None
        if call.status != b"0":
            return grpc_status_name(call.status), None
        data = b"".join(call.body)
        if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
            return "INTERNAL", None  # truncated, compressed (never asked for) or several messages
        return "OK", data[5:]

    # -- public -------------------------------------------------------------------------------
    def _new_call(self) -> _CurlCall:
        pc = self._pycurl
        curl = pc.Curl()
        call = _CurlCall(curl)
        curl.setopt(pc.URL, self.url)
        curl.setopt(pc.HTTP_VERSION, pc.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE)
        curl.setopt(pc.POST, 1)
        curl.setopt(pc.HTTPHEADER, self._headers)
        curl.setopt(pc.PIPEWAIT, 1)  # wait for the first connection and multiplex on it, not a connect storm
        curl.setopt(pc.TIMEOUT_MS, max(1, int(self.timeout_s * 1000)))
        curl.setopt(pc.NOSIGNAL, 1)
        curl.setopt(pc.TCP_NODELAY, 1)
        curl.setopt(pc.HEADERFUNCTION, call.on_header)
        curl.setopt(pc.WRITEFUNCTION, call.body.append)
        self._by_curl[curl] = call
        return call

    def _frame(self, payload: bytes) -> bytes:
        frame = self._frames.get(payload)
        if frame is None:
            frame = b"\x00" + len(payload).to_bytes(4, "big") + payload
            if len(self._frames) < 64:
                self._frames[payload] = frame
        return frame

    async def send(self, payload: bytes) -> tuple[str, bytes | None]:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        call = self._idle.pop() if self._idle else self._new_call()
        frame = self._frame(payload)
        if call.frame is not frame:
            call.curl.setopt(self._pycurl.POSTFIELDS, frame)  # pycurl keeps a reference: no copy
            call.frame = frame
        fut = call.future = self._loop.create_future()
        # add_handle asks for a 0 ms timer (_on_timer): the transfer starts on the next loop turn, and
        # all send()s of one turn share that one socket_action
        self._multi.add_handle(call.curl)
        try:
            return await fut
        except asyncio.CancelledError:
            if call.future is fut:  # still in flight: take it back so the handle can be reused
                self._multi.remove_handle(call.curl)
                call.reset()
                self._idle.append(call)
            raise

    async def close(self) -> None:
        for fd in list(self._watched):
            if self._loop is not None:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
        self._watched.clear()
        if self._timer is not None:
            self._timer.cancel()
        for call in list(self._by_curl.values()):
            if call.future is not None:
                self._multi.remove_handle(call.curl)
                if not call.future.done():
                    call.future.set_result(("CANCELLED", None))
            call.curl.close()
        self._by_curl.clear()
        self._idle.clear()
        self._multi.close()


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer


class RestTransport:
    """HTTP/1.1 keep-alive client on asyncio streams; a pool of at most `connections` sockets, one
    request per socket at a time (like a wrk connection).

    Why not a general HTTP library: the request bytes are fixed, so we pre-build them once, and the
    response side only needs status, Content-Length (or chunked) and keep-alive. Measured here, h11
    (the pinned sans-IO library we used first) cost ~40% of the client's CPU per request; on a 2-core
    machine that CPU comes straight out of the server under test. Anything unexpected in a response
    is a counted "protocol_error", never a silent success.
    """

    name = "rest"

    def __init__(self, target: str, path: str, *, connections: int = 64, timeout_s: float = 30.0) -> None:
        self.target = target
        self.host, _, port = target.rpartition(":")
        self.port = int(port)
        self.path = path
        self.timeout_s = timeout_s
        self._limit = max(1, connections)
        self._idle: list[_Conn] = []  # open keep-alive connections not in use
        self._slots: asyncio.Semaphore | None = None  # at most `connections` requests (sockets) at once
        self._requests: dict[bytes, bytes] = {}  # payload -> full request bytes, built once

    def with_path(self, path: str) -> "RestTransport":
        self.path = path
        self._requests.clear()
        return self

    def _request(self, payload: bytes) -> bytes:
        req = self._requests.get(payload)
        if req is None:
            head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.target}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n").encode("ascii")
            req = head + payload
            if len(self._requests) < 64:
                self._requests[payload] = req
        return req

    async def _roundtrip(self, conn: _Conn, payload: bytes) -> tuple[int, bytes, bool]:
        """-> (status, body, reusable)."""
        conn.writer.write(self._request(payload))
        r = conn.reader
        head = await r.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or len(head) < 12:
            raise _ProtocolError(f"bad status line {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        reusable = head.startswith(b"HTTP/1.1") and b"\r\nconnection: close" not in lower
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.index(b"\r\n", i + 2)
            body = await r.readexactly(int(lower[i + 17:j]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await r.readuntil(b"\r\n")  # end of (empty) trailer section
                    break
                parts.append((await r.readexactly(size + 2))[:-2])
            body = b"".join(parts)
        else:  # body delimited by connection close
            body, reusable = await r.read(), False
        return status, body, reusable

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Conn(reader, writer)

    async def send(self, payload: bytes) -> tuple[str, bytes | None]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)  # created lazily: binds to the running loop
        async with self._slots:
            return await self._send(payload)

    async def _send(self, payload: bytes) -> tuple[str, bytes | None]:
        try:
            conn = self._idle.pop() if self._idle else await self._connect()
        except OSError:
            return "connection_error", None
        try:
            status, body, reusable = await asyncio.wait_for(self._roundtrip(conn, payload), self.timeout_s)
        except asyncio.TimeoutError:
            conn.writer.close()
            return "timeout", None
        except (OSError, asyncio.IncompleteReadError):
            conn.writer.close()
            return "connection_error", None
        except (_ProtocolError, ValueError, asyncio.LimitOverrunError):
            conn.writer.close()
            return "protocol_error", None
        except BaseException:
            conn.writer.close()
            raise
        if reusable:
            self._idle.append(conn)
        else:
            conn.writer.close()
        return str(status), (body if status == 200 else None)

    async def close(self) -> None:
        for c in self._idle:
            c.writer.close()
        self._idle.clear()


class _ProtocolError(Exception):
    pass


def ok(status: str) -> bool:
    return status in ("OK", "200")


GRPC_CLIENTS = ("aio", "curl")
# The default gRPC client: libcurl's, because it is the one whose figures agree with an independent C++
# client (Triton's perf_analyzer) on the same server; grpc.aio adds its own per-call cost to every
# latency (README, "Measurement fidelity").
DEFAULT_GRPC_CLIENT = "curl"
_GRPC_CLIENT_NAMES = {"aio": "grpc.aio", "curl": "libcurl"}


def client_name(kind: str, grpc_client: str = DEFAULT_GRPC_CLIENT) -> str:
    """What a result row's `client` says sent the requests (grpc.aio | libcurl | asyncio-http1)."""
    return "asyncio-http1" if kind == "rest" else _GRPC_CLIENT_NAMES[grpc_client]


def make_transport(kind: str, target: str, rest_path: str = "", *, concurrency: int = 64,
                   timeout_s: float = 30.0, grpc_channels: int = 1, grpc_client: str = DEFAULT_GRPC_CLIENT,
                   grpc_method: str = PREDICT_METHOD) -> Transport:
    """grpc_method: the gRPC method path (Predict, Classify or Regress); REST's rest_path says the same."""
    if kind == "grpc":
        if grpc_client == "curl":
            return CurlGrpcTransport(target, timeout_s=timeout_s, method=grpc_method)
        if grpc_client != "aio":
            raise ValueError(f"unknown gRPC client {grpc_client!r} ({'|'.join(GRPC_CLIENTS)})")
        return GrpcTransport(target, channels=grpc_channels, timeout_s=timeout_s, method=grpc_method)
    if kind == "rest":
        return RestTransport(target, rest_path, connections=max(concurrency, 1), timeout_s=timeout_s)
    raise ValueError(f"unknown transport {kind!r} (grpc|rest)")
