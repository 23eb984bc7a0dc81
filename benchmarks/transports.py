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

from .payloads import PREDICT_METHOD

MAX_MESSAGE = 256 * 2**20  # large batches exceed gRPC's default 4 MB receive limit


class Transport(Protocol):
    name: str
    target: str

    async def send(self, payload: bytes) -> tuple[str, bytes | None]: ...

    async def close(self) -> None: ...


class GrpcTransport:
    name = "grpc"

    def __init__(self, target: str, *, channels: int = 1, timeout_s: float = 30.0) -> None:
        import grpc

        self._grpc = grpc
        self.target = target
        self.timeout_s = timeout_s
        opts = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
                # separate TCP connections per channel instead of one shared subchannel
                ("grpc.use_local_subchannel_pool", 1)]
        self._channels = [grpc.aio.insecure_channel(target, options=opts) for _ in range(max(1, channels))]
        # request_serializer/response_deserializer None = bytes in, bytes out: no proto work while timed.
        self._calls = [ch.unary_unary(PREDICT_METHOD) for ch in self._channels]
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


def make_transport(kind: str, target: str, rest_path: str = "", *, concurrency: int = 64,
                   timeout_s: float = 30.0, grpc_channels: int = 1) -> Transport:
    if kind == "grpc":
        return GrpcTransport(target, channels=grpc_channels, timeout_s=timeout_s)
    if kind == "rest":
        return RestTransport(target, rest_path, connections=max(concurrency, 1), timeout_s=timeout_s)
    raise ValueError(f"unknown transport {kind!r} (grpc|rest)")
