"""Async transports for TF Serving's Predict: gRPC (grpc.aio) and REST (aiohttp).

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


class RestTransport:
    name = "rest"

    def __init__(self, target: str, path: str, *, connections: int = 64, timeout_s: float = 30.0) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.target = target
        self.url = f"http://{target}{path}"
        self.timeout_s = timeout_s
        self._connections = connections
        self._session: "aiohttp.ClientSession | None" = None

    def _sess(self):
        if self._session is None:
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, force_close=False),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Content-Type": "application/json"}, skip_auto_headers=("User-Agent",))
        return self._session

    def with_path(self, path: str) -> "RestTransport":
        self.url = f"http://{self.target}{path}"
        return self

    async def send(self, payload: bytes) -> tuple[str, bytes | None]:
        try:
            async with self._sess().post(self.url, data=payload) as resp:
                body = await resp.read()
                return str(resp.status), (body if resp.status == 200 else None)
        except asyncio.TimeoutError:
            return "timeout", None
        except self._aiohttp.ClientConnectionError:
            return "connection_error", None
        except self._aiohttp.ClientError as e:
            return type(e).__name__, None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def ok(status: str) -> bool:
    return status in ("OK", "200")


def make_transport(kind: str, target: str, rest_path: str = "", *, concurrency: int = 64,
                   timeout_s: float = 30.0, grpc_channels: int = 1) -> Transport:
    if kind == "grpc":
        return GrpcTransport(target, channels=grpc_channels, timeout_s=timeout_s)
    if kind == "rest":
        return RestTransport(target, rest_path, connections=max(concurrency, 1), timeout_s=timeout_s)
    raise ValueError(f"unknown transport {kind!r} (grpc|rest)")
