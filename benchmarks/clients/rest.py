"""The REST client: TF Serving's JSON Predict over HTTP/1.1 keep-alive, one asyncio.Protocol per connection."""
from __future__ import annotations

import asyncio
import socket
import struct
from typing import Callable

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
        while (answer := parse_response(conn.buf, conn.closed)) is None:
            await conn.more()
        return answer

    def open_blocking(self) -> "BlockingRest":
        """A connection of its own for one thread making blocking calls (ClosedLoop's synchronous calls)."""
        return BlockingRest(self.host, self.port, self._request, self.timeout_s)

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


def parse_response(buf: bytearray, closed: bool) -> tuple[int, bytes, bool] | None:
    """The response at the start of `buf` -> (status, body, reusable), or None while more bytes are needed
    (`closed`: the server has closed the connection, which ends a body that has no length). Shared by the
    asyncio and the blocking connection."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise _ProtocolError(f"no end of the response head in {len(buf)} bytes")
        return None
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
        return (status, bytes(buf[end + 4:total]), reusable) if len(buf) >= total else None
    if b"\r\ntransfer-encoding: chunked" in lower:
        body = _dechunk(buf, end + 4)
        return None if body is None else (status, body, reusable)
    return (status, bytes(buf[end + 4:]), False) if closed else None  # a body delimited by the close


def _dechunk(buf: bytearray, at: int) -> bytes | None:
    """A chunked body starting at `at`, or None if it has not all arrived."""
    parts = []
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return None
        size = int(bytes(buf[at:eol]).split(b";")[0], 16)
        at = eol + 2
        if size == 0:
            return b"".join(parts) if buf.find(b"\r\n", at) >= 0 else None  # the (empty) trailer section ends
        if len(buf) < at + size + 2:
            return None
        parts.append(bytes(buf[at:at + size]))
        at += size + 2


class BlockingRest:
    """One keep-alive connection driven by blocking socket calls, for a thread that makes one call at a time.

    Why: with one request in flight an event loop has nothing to interleave, and its turns cost ~30 µs of a
    ~340 µs batch-1 round trip here; a blocking socket loop is within a few per cent of wrk (docs/performance.md,
    "Client fidelity"). Statuses are the asyncio client's: the HTTP code, "timeout", "connection_error",
    "protocol_error"."""

    def __init__(self, host: str, port: int, request: Callable[[bytes], bytes], timeout_s: float) -> None:
        self.host, self.port, self._request, self.timeout_s = host, port, request, timeout_s
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def send(self, payload: bytes) -> tuple[str, bytes | None]:
        try:
            if self._sock is None:
                self._sock = self._connect()
            sock, buf = self._sock, self._buf
            buf.clear()
            sock.sendall(self._request(payload))
            closed = False
            while (answer := parse_response(buf, closed)) is None:
                if closed:
                    raise ConnectionError("the server closed the connection mid-response")
                chunk = sock.recv(65536)  # not larger: recv allocates its whole size each call
                closed = not chunk
                buf += chunk
        except (TimeoutError, BlockingIOError):  # connect's timeout, or SO_RCVTIMEO/SO_SNDTIMEO ran out
            self.close()
            return "timeout", None
        except OSError:
            self.close()
            return "connection_error", None
        except (_ProtocolError, ValueError):
            self.close()
            return "protocol_error", None
        status, body, reusable = answer
        if not reusable or closed:
            self.close()
        return str(status), (body if status == 200 else None)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The deadline is the kernel's (each send or receive waits at most timeout_s), not Python's socket
        # timeout, which polls before every send and recv: a system call more each (p50 351 -> 348 µs here).
        sock.settimeout(None)
        whole, frac = divmod(self.timeout_s, 1.0)
        wait = struct.pack("ll", int(whole), int(frac * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, wait)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, wait)
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
