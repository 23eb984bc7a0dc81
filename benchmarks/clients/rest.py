"""The REST client: TF Serving's JSON Predict over HTTP/1.1 keep-alive on asyncio streams."""
from __future__ import annotations

import asyncio

from benchmarks.clients.base import TransportOptions, register_client


READ_LIMIT = 64 * 2**20


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer


@register_client(kind="rest", choice="http1", row_name="asyncio-http1", default=True)
class RestTransport:
    """HTTP/1.1 keep-alive client on asyncio streams; a pool of at most `connections` sockets, one
    request per socket at a time (like a wrk connection).

    Why not a general HTTP library: the request bytes are fixed, so we pre-build them once, and the
    response side only needs status, Content-Length (or chunked) and keep-alive. Measured here, h11
    (the pinned sans-IO library we used first) cost ~40% of the client's CPU per request; on a 2-core
    machine that CPU comes straight out of the server under test. Anything unexpected in a response
    is a counted "protocol_error", never a silent success.
    """

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

    @classmethod
    def from_options(cls, o: TransportOptions) -> "RestTransport":
        return cls(o.target, o.rest_path, connections=o.concurrency, timeout_s=o.timeout_s)

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
        # A reader limit above any response: with the default 64 KiB the stream pauses and resumes the socket
        # every 128 KiB of a large response, an event-loop turn each time.
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=READ_LIMIT)
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
            # asyncio.timeout, not wait_for: wait_for runs the round trip as a task of its own, which cost two
            # extra event-loop turns per request (~15 % of a batch-1 round trip at one connection, measured
            # against wrk: docs/performance.md, "Client fidelity")
            async with asyncio.timeout(self.timeout_s):
                status, body, reusable = await self._roundtrip(conn, payload)
        except TimeoutError:
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
