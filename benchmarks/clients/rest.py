"""The REST client: TF Serving's JSON Predict over HTTP/1.1 keep-alive, one asyncio.Protocol per connection."""
from __future__ import annotations

import asyncio

from benchmarks.clients.base import TransportOptions, register_client

MAX_HEAD = 64 * 2**10  # a response head longer than this is not an HTTP server's answer to us


class _Conn(asyncio.Protocol):
    """One keep-alive connection: bytes received are appended to `buf`; a round trip waits on one future per
    batch of bytes the loop delivers. Why not asyncio streams (StreamReader.readuntil / readexactly, what this
    client used first): at batch 1 against one server their extra layers and waiters cost ~30 us of a ~380 us
    round trip, p50 383 vs 353 us here next to wrk's 333 (docs/performance.md, "Client fidelity")."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.deadline = 0.0  # loop time by which the request in flight must be answered
        self.timed_out = False  # closed by the transport's watchdog
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def more(self) -> None:
        """Wait for more bytes; a closed connection that has given all it had is an incomplete read."""
        if self.closed:
            raise asyncio.IncompleteReadError(bytes(self.buf), None)
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        self._waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


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
        self._busy: set[_Conn] = set()  # connections with a request in flight (the watchdog's to check)
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_every = max(0.01, min(0.1, timeout_s / 10))  # a timeout fires at most this much late

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
        conn.buf.clear()
        conn.transport.write(self._request(payload))  # type: ignore[union-attr]
        buf = conn.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_HEAD:
                raise _ProtocolError(f"no end of the response head in {len(buf)} bytes")
            await conn.more()
        head = bytes(buf[:end + 4])
        if not head.startswith(b"HTTP/1.") or len(head) < 12:
            raise _ProtocolError(f"bad status line {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        reusable = head.startswith(b"HTTP/1.1") and b"\r\nconnection: close" not in lower
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.index(b"\r\n", i + 2)
            total = end + 4 + int(lower[i + 17:j])
            while len(buf) < total:
                await conn.more()
            body = bytes(buf[end + 4:total])
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._chunked(conn, end + 4)
        else:  # body delimited by connection close
            while not conn.closed:
                await conn.more()
            body, reusable = bytes(buf[end + 4:]), False
        return status, body, reusable

    @staticmethod
    async def _chunked(conn: _Conn, at: int) -> bytes:
        buf, parts = conn.buf, []
        while True:
            while (eol := buf.find(b"\r\n", at)) < 0:
                await conn.more()
            size = int(bytes(buf[at:eol]).split(b";")[0], 16)
            at = eol + 2
            if size == 0:
                while buf.find(b"\r\n", at) < 0:  # end of the (empty) trailer section
                    await conn.more()
                return b"".join(parts)
            while len(buf) < at + size + 2:
                await conn.more()
            parts.append(bytes(buf[at:at + size]))
            at += size + 2

    async def _connect(self) -> _Conn:
        _, conn = await asyncio.get_running_loop().create_connection(_Conn, self.host, self.port)
        return conn

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
        # The deadline is kept by one watchdog timer for all connections (_watch), not a timer per request:
        # asyncio.timeout (and wait_for, which also runs the round trip as a task of its own) cost ~18 us of a
        # ~375 us batch-1 round trip at one connection (docs/performance.md, "Client fidelity").
        conn.deadline = asyncio.get_running_loop().time() + self.timeout_s
        self._busy.add(conn)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self._watch_every, self._watch)
        try:
            status, body, reusable = await self._roundtrip(conn, payload)
        except (OSError, asyncio.IncompleteReadError):
            conn.close()
            return ("timeout" if conn.timed_out else "connection_error"), None
        except (_ProtocolError, ValueError):
            conn.close()
            return "protocol_error", None
        except BaseException:
            conn.close()
            raise
        finally:
            self._busy.discard(conn)
        if reusable and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
        return str(status), (body if status == 200 else None)

    def _watch(self) -> None:
        """Close every connection whose request is past its deadline (its round trip then ends as "timeout");
        runs every _watch_every seconds while requests are in flight."""
        now = asyncio.get_running_loop().time()
        for conn in [c for c in self._busy if c.deadline <= now]:
            conn.timed_out = True
            conn.close()
        self._watchdog = asyncio.get_running_loop().call_later(self._watch_every, self._watch) if self._busy else None

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for c in self._idle:
            c.close()
        self._idle.clear()


class _ProtocolError(Exception):
    pass
