"""The reference gRPC client: Predict over grpc.aio, one event loop with many calls in flight.

Why asyncio: a Python thread pool with blocking stubs tops out around a couple of thousand req/s
because every call holds the GIL while blocking; one event loop with many calls in flight does not.
"""
from __future__ import annotations

from benchmarks.clients.base import TransportOptions, register_client
from export.contract import GRPC_MESSAGE_OPTIONS, PREDICT_METHOD


@register_client(kind="grpc", choice="aio", row_name="grpc.aio")
class GrpcTransport:
    """The reference gRPC client: grpc.aio unary calls, bytes in and bytes out."""

    def __init__(self, target: str, *, channels: int = 1, timeout_s: float = 30.0,
                 channel_options: tuple[tuple[str, int], ...] = (), method: str = PREDICT_METHOD) -> None:
        import grpc

        self._grpc = grpc
        self.target = target
        self.timeout_s = timeout_s
        opts = [*GRPC_MESSAGE_OPTIONS,
                # separate TCP connections per channel instead of one shared subchannel
                ("grpc.use_local_subchannel_pool", 1), *channel_options]
        self._channels = [grpc.aio.insecure_channel(target, options=opts) for _ in range(max(1, channels))]
        # request_serializer/response_deserializer None = bytes in, bytes out: no proto work while timed.
        self._calls = [ch.unary_unary(method) for ch in self._channels]
        self._i = 0

    @classmethod
    def from_options(cls, o: TransportOptions) -> "GrpcTransport":
        return cls(o.target, channels=o.grpc_channels, timeout_s=o.timeout_s, method=o.grpc_method)

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
