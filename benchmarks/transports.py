"""Async transports for TF Serving's Predict: gRPC (grpc.aio) and REST (asyncio streams + h11).

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
    __slots__ = ("reader", "writer", "h")

    def __init__(self, reader, writer, h) -> None:
        self.reader, self.writer, self.h = reader, writer, h


class RestTransport:
    """HTTP/1.1 keep-alive client on asyncio streams, with h11 (already a pinned dependency) doing the
    protocol work. A pool of at most `connections` sockets; one request per socket at a time, like
    a browser or wrk connection."""

    name = "rest"

    def __init__(self, target: str, path: str, *, connections: int = 64, timeout_s: float = 30.0) -> None:
        import h11

        self._h11 = h11
        self.target = target
        self.host, _, port = target.rpartition(":")
        self.port = int(port)
        self.path = path
        self.timeout_s = timeout_s
        self._limit = max(1, connections)
        self._idle: list[_Conn] = []  # open keep-alive connections not in use
        self._slots: asyncio.Semaphore | None = None  # at most `connections` requests (sockets) at once

    def with_path(self, path: str) -> "RestTransport":
        self.path = path
        return self

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Conn(reader, writer, self._h11.Connection(self._h11.CLIENT))

    async def _roundtrip(self, conn: _Conn, payload: bytes) -> tuple[int, bytes]:
        h11 = self._h11
        h = conn.h
        data = h.send(h11.Request(method="POST", target=self.path, headers=[
            ("Host", self.target), ("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]))
        data += h.send(h11.Data(data=payload)) + h.send(h11.EndOfMessage())
        conn.writer.write(data)
        status, chunks = 0, []
        while True:
            ev = h.next_event()
            if ev is h11.NEED_DATA:
                h.receive_data(await conn.reader.read(65536))
                continue
            if isinstance(ev, h11.Response):
                status = ev.status_code
            elif isinstance(ev, h11.Data):
                chunks.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                break
            elif isinstance(ev, h11.ConnectionClosed):
                raise ConnectionResetError("server closed the connection mid-response")
        return status, b"".join(chunks)

    async def send(self, payload: bytes) -> tuple[str, bytes | None]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)  # created lazily: binds to the running loop
        async with self._slots:
            return await self._send(payload)

    async def _send(self, payload: bytes) -> tuple[str, bytes | None]:
        h11 = self._h11
        try:
            conn = self._idle.pop() if self._idle else await self._connect()
        except OSError:
            return "connection_error", None
        try:
            status, body = await asyncio.wait_for(self._roundtrip(conn, payload), self.timeout_s)
        except asyncio.TimeoutError:
            conn.writer.close()
            return "timeout", None
        except (OSError, h11.ProtocolError):
            conn.writer.close()
            return "connection_error", None
        except BaseException:
            conn.writer.close()
            raise
        if conn.h.our_state is h11.DONE and conn.h.their_state is h11.DONE:
            conn.h.start_next_cycle()
            self._idle.append(conn)
        else:  # server asked to close (Connection: close) or HTTP/1.0: do not reuse
            conn.writer.close()
        return str(status), (body if status == 200 else None)

    async def close(self) -> None:
        for c in self._idle:
            c.writer.close()
        self._idle.clear()


def ok(status: str) -> bool:
    return status in ("OK", "200")


def make_transport(kind: str, target: str, rest_path: str = "", *, concurrency: int = 64,
                   timeout_s: float = 30.0, grpc_channels: int = 1) -> Transport:
    if kind == "grpc":
        return GrpcTransport(target, channels=grpc_channels, timeout_s=timeout_s)
    if kind == "rest":
        return RestTransport(target, rest_path, connections=max(concurrency, 1), timeout_s=timeout_s)
    raise ValueError(f"unknown transport {kind!r} (grpc|rest)")
