"""A second gRPC client: Predict over libcurl's HTTP/2 (pycurl), 2-3x less client CPU per call than grpc.aio.

pycurl must load before TensorFlow in a process that uses both: benchmarks/__init__.py imports it first.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from benchmarks.clients.base import TransportOptions, register_client
from export.contract import PREDICT_METHOD

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

    __slots__ = ("curl", "body", "head", "future", "frame", "deadline", "retried")

    def __init__(self, curl) -> None:
        self.curl = curl
        self.body: list[bytes] = []
        self.head = bytearray()  # every header line received, HTTP/2 trailers included
        self.future: asyncio.Future | None = None
        self.frame: bytes | None = None  # the request body POSTFIELDS currently points at
        self.deadline = 0.0  # loop time by which the current call must end (CurlGrpcTransport._tick)
        self.retried = False  # the current call was sent again after its connection was found closed

    def reset(self) -> None:
        """Forget the last call's response so the handle can carry the next one."""
        self.future = None
        self.body.clear()  # cleared in place: WRITEFUNCTION is bound to this list's append
        self.head.clear()  # ... and HEADERFUNCTION to this bytearray's extend
        self.retried = False

    @property
    def status(self) -> bytes | None:
        """The grpc-status value (in the headers of a Trailers-Only reply, else in the trailers), None if none.
        Header lines are collected by bytearray.extend and read once here: a Python callback per line cost
        ~1 µs each, 6-7 lines a call."""
        i = self.head.find(b"grpc-status:")
        if i < 0:
            return None
        return bytes(self.head[i + 12:self.head.find(b"\r\n", i)]).strip()

    def post(self, frame: bytes, pycurl) -> None:
        """Point the request body at `frame` (pycurl keeps a reference: no copy), unless it already is."""
        if self.frame is not frame:
            self.curl.setopt(pycurl.POSTFIELDS, frame)
            self.frame = frame

    def outcome(self, errno: int, pycurl) -> tuple[str, bytes | None] | None:
        """(gRPC status name, response message bytes) of the call libcurl ended with `errno` (0 = completed), or
        None when it is to be sent once more: it went out on a connection the server had already closed while it
        sat idle (GOAWAY, then close; libcurl finds out only when it writes), so nothing reached the server, and
        gRPC's own clients retry a stream that never left them."""
        if errno:
            if errno == pycurl.E_SEND_ERROR and not self.retried and not self.head and not self.body:
                self.retried = True
                return None
            return ("DEADLINE_EXCEEDED" if errno == pycurl.E_OPERATION_TIMEDOUT else "UNAVAILABLE"), None
        status = self.status
        if status is None:  # no grpc-status at all: map the HTTP status as gRPC clients do
            code = self.curl.getinfo(pycurl.RESPONSE_CODE)
            return (_HTTP_TO_GRPC.get(code, "UNKNOWN") if code != 200 else "INTERNAL"), None
        if status != b"0":
            return grpc_status_name(status), None
        data = b"".join(self.body)
        if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
            return "INTERNAL", None  # truncated, compressed (never asked for) or several messages
        return "OK", data[5:]


# The default gRPC client: its figures agree with an independent C++ client (Triton's perf_analyzer) on the
# same server, where grpc.aio adds its own per-call cost to every latency (README, "Measurement fidelity").
@register_client(kind="grpc", choice="curl", row_name="libcurl", default=True)
class CurlGrpcTransport:
    """gRPC unary Predict over libcurl's HTTP/2 (pycurl), driven by the asyncio loop.

    Why a second gRPC client: grpc.aio costs ~140-210 µs of CPU per call here, which caps one
    load-generator process near 6,000-9,000 req/s even against a server that answers in microseconds.
    libcurl does the HTTP/2 framing, HPACK and flow control in C; what is left in Python per call is
    queueing a reused easy handle, a few header callbacks and resolving a future. Per call at batch 1 and one
    stream the loop makes one epoll_wait, two send()s and two recv()s; the connection's socket stays registered
    between calls and the deadline is one watchdog, not a libcurl timer (docs/performance.md, "Client fidelity").

    The wire format is gRPC's own (PROTOCOL-HTTP2.md): POST to /package.Service/Method over cleartext
    HTTP/2 with prior knowledge, ``content-type: application/grpc``, ``te: trailers``, a grpc-timeout
    header, the message behind a 5-byte length prefix; the call's status comes from the grpc-status
    trailer (or the headers of a Trailers-Only reply). Calls multiplex over as few connections as the
    server's stream limit allows (libcurl opens another when one is full). Not supported: TLS, compression,
    metadata beyond the above -- this is a benchmark client for TF Serving's Predict, not a gRPC library.
    """

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
        self._parked: set[int] = set()  # sockets libcurl stopped watching whose reader is kept (_on_socket)
        self._watchdog: asyncio.TimerHandle | None = None  # ends calls past their deadline (_tick)
        self._tick_s = min(0.1, timeout_s / 10)
        self._adding = False  # inside add_handle (libcurl may ask for a 0 ms timer there)
        self._start_now = False  # ... and it did

    @classmethod
    def from_options(cls, o: TransportOptions) -> "CurlGrpcTransport":
        return cls(o.target, timeout_s=o.timeout_s, method=o.grpc_method)

    # -- libcurl -> asyncio -------------------------------------------------------------------
    # libcurl says POLL_REMOVE for the connection's socket when a call ends and POLL_IN again when the next one
    # starts: two add_reader/remove_reader pairs and their epoll_ctl calls per call, ~35 µs of client CPU at
    # batch 1 (py-spy; docs/performance.md, "Client fidelity"). So a removed socket's reader is parked, not
    # removed: it stays registered until the socket is wanted again (nothing to do) or reads while parked (the
    # server spoke on an idle connection, or closed it: removed then; libcurl reads it when it reuses it).
    # libcurl closes an idle connection by itself only when its idle age is reached (MAXAGE_CONN, set to a day
    # in _new_call) or its pool is full; a number it closed and reuses for a new socket is announced by
    # SOCKOPTFUNCTION before the socket is used, and the stale registration is dropped there.
    def _on_socket(self, what: int, fd: int, multi, socketp) -> None:
        pc, loop = self._pycurl, self._loop
        if what == pc.POLL_REMOVE:
            prev = self._watched.pop(fd, pc.POLL_NONE)
            if prev in (pc.POLL_OUT, pc.POLL_INOUT):
                loop.remove_writer(fd)  # a writable idle socket would wake the loop on every turn
            if prev in (pc.POLL_IN, pc.POLL_INOUT):
                self._parked.add(fd)
            return
        prev = self._watched.get(fd, pc.POLL_NONE)
        if fd in self._parked:
            self._parked.discard(fd)
            prev = pc.POLL_IN  # its reader is still registered
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
        self._watched[fd] = what

    def _on_new_socket(self, fd: int, purpose: int) -> int:
        if fd in self._parked:  # the parked socket was closed and its number now names a new one
            self._parked.discard(fd)
            self._loop.remove_reader(fd)
        return 0  # CURL_SOCKOPT_OK

    def _on_timer(self, timeout_ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout_ms == 0 and self._adding:
            self._start_now = True  # send() runs the transfer as soon as add_handle returns (no loop turn)
        elif timeout_ms >= 0 and self._loop is not None:
            self._timer = self._loop.call_later(timeout_ms / 1000.0, self._action, self._pycurl.SOCKET_TIMEOUT, 0)

    # The deadline is kept here, not by libcurl's TIMEOUT_MS: libcurl would set and clear a timer of its own per
    # call (two more callbacks and a loop timer made and cancelled), ~15 µs per call at batch 1. One watchdog,
    # ticking while calls are in flight, ends the calls past their deadline (at most a tenth of it late).
    def _tick(self) -> None:
        self._watchdog = None
        now, late = self._loop.time(), []
        in_flight = False
        for call in self._by_curl.values():
            if call.future is not None:
                if now >= call.deadline:
                    late.append(call)
                else:
                    in_flight = True
        for call in late:
            fut = call.future
            self._multi.remove_handle(call.curl)
            call.reset()
            self._idle.append(call)
            if not fut.done():
                fut.set_result(("DEADLINE_EXCEEDED", None))
        if in_flight:
            self._watchdog = self._loop.call_later(self._tick_s, self._tick)

    def _action(self, fd: int, events: int) -> None:
        if fd in self._parked:  # an idle connection became readable (GOAWAY, close): libcurl reads it on reuse
            self._parked.discard(fd)
            self._loop.remove_reader(fd)
            return
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
        result = call.outcome(errno, self._pycurl)
        if result is None:  # sent once more, on a new connection
            self._multi.add_handle(curl)
            return
        fut = call.future
        call.reset()
        self._idle.append(call)
        if fut is not None and not fut.done():
            fut.set_result(result)

    # -- public -------------------------------------------------------------------------------
    def _new_call(self) -> _CurlCall:
        call = self._easy()
        curl = call.curl
        curl.setopt(self._pycurl.MAXAGE_CONN, 86_400)  # keep idle connections (and their parked readers) between points
        curl.setopt(self._pycurl.SOCKOPTFUNCTION, self._on_new_socket)
        self._by_curl[curl] = call
        return call

    def _easy(self) -> _CurlCall:
        """An easy handle set up for this target's calls (the loop's handles and the blocking ones)."""
        pc = self._pycurl
        curl = pc.Curl()
        call = _CurlCall(curl)
        curl.setopt(pc.URL, self.url)
        curl.setopt(pc.HTTP_VERSION, pc.CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE)
        curl.setopt(pc.POST, 1)
        curl.setopt(pc.HTTPHEADER, self._headers)
        curl.setopt(pc.PIPEWAIT, 1)  # wait for the first connection and multiplex on it, not a connect storm
        curl.setopt(pc.NOSIGNAL, 1)
        curl.setopt(pc.TCP_NODELAY, 1)
        curl.setopt(pc.HEADERFUNCTION, call.head.extend)
        curl.setopt(pc.WRITEFUNCTION, call.body.append)
        return call

    def open_blocking(self) -> "BlockingCurl":
        """A handle (and connection) of its own for one thread making blocking calls (ClosedLoop's synchronous
        calls); its deadline is libcurl's TIMEOUT_MS."""
        call = self._easy()
        call.curl.setopt(self._pycurl.TIMEOUT_MS, max(1, int(self.timeout_s * 1000)))
        return BlockingCurl(call, self._pycurl, self._frame)

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
        call.post(self._frame(payload), self._pycurl)
        fut = call.future = self._loop.create_future()
        call.deadline = self._loop.time() + self.timeout_s
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._tick_s, self._tick)
        # add_handle asks for a 0 ms timer (_on_timer). Answering it here, not on the next loop turn, saves a
        # turn (and an epoll_wait) per call; sharing one socket_action among the send()s of a turn saved
        # nothing measurable at 8 streams (docs/performance.md, "Client fidelity").
        self._adding, self._start_now = True, False
        try:
            self._multi.add_handle(call.curl)
        finally:
            self._adding = False
        if self._start_now:
            self._action(self._pycurl.SOCKET_TIMEOUT, 0)
        try:
            return await fut
        except asyncio.CancelledError:
            if call.future is fut:  # still in flight: take it back so the handle can be reused
                self._multi.remove_handle(call.curl)
                call.reset()
                self._idle.append(call)
            raise

    async def close(self) -> None:
        for fd in [*self._watched, *self._parked]:
            if self._loop is not None:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
        self._watched.clear()
        self._parked.clear()
        for timer in (self._timer, self._watchdog):
            if timer is not None:
                timer.cancel()
        for call in list(self._by_curl.values()):
            if call.future is not None:
                self._multi.remove_handle(call.curl)
                if not call.future.done():
                    call.future.set_result(("CANCELLED", None))
            call.curl.close()
        self._by_curl.clear()
        self._idle.clear()
        self._multi.close()


class BlockingCurl:
    """One libcurl easy handle driven by curl_easy_perform (which releases the GIL), for a thread that makes one
    call at a time. Why: with one call in flight the event loop has nothing to interleave, and its turns and
    callbacks cost ~40 µs of a ~600 µs batch-1 call here; perform() is within a few per cent of perf_analyzer
    (docs/performance.md, "Client fidelity")."""

    def __init__(self, call: _CurlCall, pycurl, frame: Callable[[bytes], bytes]) -> None:
        self._call, self._pycurl, self._frame = call, pycurl, frame

    def send(self, payload: bytes) -> tuple[str, bytes | None]:
        call, pc = self._call, self._pycurl
        call.post(self._frame(payload), pc)
        call.reset()
        while True:  # twice at most: outcome() asks for one more send only
            try:
                call.curl.perform()
                errno = 0
            except pc.error as exc:
                errno = exc.args[0]
            result = call.outcome(errno, pc)
            if result is not None:
                return result

    def close(self) -> None:
        self._call.curl.close()
