"""Load-generator clients: the registry (one class = one selectable client), every gRPC client agrees with
grpc.aio on status and bytes, libcurl multiplexes and reuses handles, the REST client parses what servers send."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from benchmarks.clients import base
from benchmarks.requests import protos
from benchmarks.requests.payloads import build_payload
from benchmarks.clients.transports import (DEFAULT_GRPC_CLIENT, GRPC_CLIENTS, CurlGrpcTransport, GrpcTransport,
                                           RestTransport, client_name, make_transport)
from benchmarks.targets.noop_python import NoopConfig, NoopServer


async def send_with_each_grpc_client(target: str, payload: bytes,
                                     timeout_s: float = 5.0) -> dict[str, tuple[str, bytes | None]]:
    """One call per registered gRPC client: {--grpc-client choice: (status, response bytes)}."""
    out = {}
    for choice in GRPC_CLIENTS:
        t = make_transport("grpc", target, timeout_s=timeout_s, grpc_client=choice)
        try:
            out[choice] = await t.send(payload)
        finally:
            await t.close()
    return out


def _statuses(answers: dict[str, tuple[str, bytes | None]]) -> set[str]:
    assert set(answers) == set(GRPC_CLIENTS)
    return {status for status, _ in answers.values()}


def test_builtin_clients_keep_their_command_line_and_row_names():
    # libcurl is the default gRPC client (its figures agree with perf_analyzer's); choices list the default first
    assert GRPC_CLIENTS == ("curl", "aio") and DEFAULT_GRPC_CLIENT == "curl"
    assert [client_name("grpc", c) for c in GRPC_CLIENTS] == ["libcurl", "grpc.aio"]
    assert client_name("grpc") == "libcurl"
    assert client_name("rest") == client_name("rest", "curl") == "asyncio-http1"  # --grpc-client is gRPC's only
    assert type(make_transport("grpc", "127.0.0.1:1", grpc_client="curl")) is CurlGrpcTransport
    rest = make_transport("rest", "127.0.0.1:1", "/v1/models/m:predict", concurrency=3, timeout_s=2.0)
    assert type(rest) is RestTransport and rest.path == "/v1/models/m:predict" and rest._limit == 3
    assert [base.find_client("grpc", c).cls for c in GRPC_CLIENTS] == [CurlGrpcTransport, GrpcTransport]
    with pytest.raises(ValueError, match=r"unknown gRPC client 'h3' \(aio\|curl\)"):
        make_transport("grpc", "127.0.0.1:1", grpc_client="h3")
    with pytest.raises(ValueError, match=r"unknown transport 'soap' \(grpc\|rest\)"):
        client_name("soap")


def test_a_client_registered_by_one_class_is_selectable_and_names_its_rows(monkeypatch):
    monkeypatch.setattr(base, "_CLIENTS", {kind: dict(specs) for kind, specs in base._CLIENTS.items()})

    @base.register_client(kind="grpc", choice="echo", row_name="echo-client")
    class EchoTransport:
        def __init__(self, target: str, timeout_s: float) -> None:
            self.target, self.timeout_s = target, timeout_s

        @classmethod
        def from_options(cls, o: base.TransportOptions) -> "EchoTransport":
            return cls(o.target, o.timeout_s)

        async def send(self, payload: bytes) -> tuple[str, bytes | None]:
            return "OK", payload

        async def close(self) -> None:
            pass

    assert base.client_choices("grpc") == ("curl", "aio", "echo")
    t = make_transport("grpc", "10.0.0.1:9", timeout_s=4.0, grpc_client="echo")
    assert type(t) is EchoTransport and (t.target, t.timeout_s) == ("10.0.0.1:9", 4.0)
    assert asyncio.run(t.send(b"x")) == ("OK", b"x")
    assert client_name("grpc", "echo") == "echo-client"
    assert client_name("grpc") == "libcurl"  # the default is unchanged
    with pytest.raises(ValueError, match="registered twice"):
        base.register_client(kind="grpc", choice="echo", row_name="again")(EchoTransport)
    with pytest.raises(ValueError, match="default client already"):
        base.register_client(kind="grpc", choice="other", row_name="other", default=True)(EchoTransport)


@pytest.mark.timeout(60)
def test_every_grpc_client_gives_the_same_status_and_bytes_as_grpc_aio():
    good, unknown = build_payload("known", 3, 10).grpc_bytes, build_payload("other", 1, 10).grpc_bytes
    with NoopServer(NoopConfig(models=("known",))) as s:
        target = f"127.0.0.1:{s.grpc_port}"
        answers = asyncio.run(send_with_each_grpc_client(target, good))
        assert _statuses(answers) == {"OK"} and len({body for _, body in answers.values()}) == 1
        resp = protos.load()["predict_pb2"].PredictResponse.FromString(answers["curl"][1])
        assert [d.size for d in resp.outputs["predictions"].tensor_shape.dim] == [3, 1]
        assert _statuses(asyncio.run(send_with_each_grpc_client(target, unknown))) == {"NOT_FOUND"}
        assert _statuses(asyncio.run(send_with_each_grpc_client(target, b"\xff\xfe not a proto"))) == \
            {"INVALID_ARGUMENT"}
    with NoopServer(NoopConfig(delay_ms=500)) as slow:
        late = asyncio.run(send_with_each_grpc_client(f"127.0.0.1:{slow.grpc_port}", good, timeout_s=0.1))
        assert _statuses(late) == {"DEADLINE_EXCEEDED"}
    with socket.socket() as refusing:  # bound, never listening: connections are refused and no one else gets the port
        refusing.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{refusing.getsockname()[1]}"
        assert _statuses(asyncio.run(send_with_each_grpc_client(target, good))) == {"UNAVAILABLE"}


@pytest.mark.timeout(60)
def test_curl_client_multiplexes_calls_and_reuses_handles():
    p = build_payload("m", 2, 10)
    with NoopServer(NoopConfig(delay_ms=200)) as s:
        async def run():
            t = CurlGrpcTransport(f"127.0.0.1:{s.grpc_port}")

            async def timed():
                status, _ = await t.send(p.grpc_bytes)
                return status, time.perf_counter()
            try:
                first = await asyncio.gather(*(timed() for _ in range(16)))
                second = await asyncio.gather(*(timed() for _ in range(16)))
                return first + second, len(t._by_curl)
            finally:
                await t.close()

        results, handles = asyncio.run(run())
    assert [status for status, _ in results] == ["OK"] * 32
    # 16 calls to a server that sleeps 200 ms per call: in flight together they come back within one delay of
    # each other; one at a time, 200 ms apart (3 s from first to last). 1 s leaves room for a loaded machine.
    answered = [t for _, t in results[:16]]
    assert max(answered) - min(answered) < 1.0, "the 16 calls were not in flight together"
    assert handles == 16  # the second round reused the first round's easy handles


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reply,expected_status,expected_body", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "200", b"hello"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", "200", b"hello"),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", "200", b"hello"),
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}", "503", None),
    (b"SMTP ready\r\n\r\n", "protocol_error", None),
])
@pytest.mark.parametrize("blocking", [False, True], ids=["asyncio", "blocking"])
def test_rest_transport_parses_what_servers_send(reply, expected_status, expected_body, blocking):
    """The same replies through the asyncio connection and the blocking one (ClosedLoop's synchronous calls),
    which share the response parser."""
    async def scenario():
        seen = []

        async def handle(reader, writer):
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                seen.append(await reader.readexactly(n))
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply:
                    break
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        t = RestTransport(f"127.0.0.1:{port}", "/v1/models/m:predict", connections=1)
        if blocking:  # on a thread: the server runs on this loop
            sender = t.open_blocking()
            results = [await asyncio.to_thread(sender.send, b'{"instances":[[1.0]]}') for _ in range(3)]
            sender.close()
        else:
            results = [await t.send(b'{"instances":[[1.0]]}') for _ in range(3)]
        await t.close()
        server.close()
        return results, seen

    results, seen = asyncio.run(scenario())
    assert results == [(expected_status, expected_body)] * 3  # also after reuse / reconnect
    if expected_status != "protocol_error":
        assert seen == [b'{"instances":[[1.0]]}'] * 3


def test_the_probe_reports_the_servers_413_not_a_broken_pipe():
    """A body over the server's --max-request-bytes is answered 413 before it is read, and the connection closed;
    the probe must read that answer rather than fail on sending the rest of the body."""
    from benchmarks.clients.probe import probe
    from benchmarks.requests.payloads import Payload
    from serving.api.rest_api import RestServer

    class _App:
        def handle(self, method, path, body, clock=None):
            return 200, "application/json", b"{}"

    server = RestServer(_App(), "127.0.0.1", 0, 1 << 20)  # type: ignore[arg-type]
    server.start()
    try:
        big = Payload("m", 1, 1, "serving_default", b"", b"[" + b"0," * (8 << 20) + b"0]", "/v1/models/m:predict",
                      0.0, 0.0)
        result = probe("rest", f"127.0.0.1:{server.port}", big, timeout_s=30)
        assert result.status == "413" and not result.ok
        assert result.message == (f"request body of {len(big.rest_body)} bytes exceeds the server's limit of "
                                   f"{1 << 20} bytes (--max-request-bytes)")
        small = Payload("m", 1, 1, "serving_default", b"", b"[0]", "/v1/models/m:predict", 0.0, 0.0)
        assert probe("rest", f"127.0.0.1:{server.port}", small, timeout_s=30).status == "200"
    finally:
        server.stop_accepting()
        server.close()


@pytest.mark.timeout(60)
def test_rest_transport_times_out_a_silent_server_and_keeps_working_after():
    """The deadline (one watchdog for all connections, not a timer per request) ends a request the server never
    answers as "timeout", closes that connection, and the next request on a new connection is answered."""
    async def scenario():
        answer = asyncio.Event()

        async def handle(reader, writer):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
                if answer.is_set():
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    await writer.drain()
                await reader.read()  # silent until the client hangs up
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        t = RestTransport(f"127.0.0.1:{port}", "/v1/models/m:predict", connections=1, timeout_s=0.3)
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = await t.send(b"{}")
        waited = loop.time() - start
        answer.set()
        second = await t.send(b"{}")
        await t.close()
        server.close()
        return first, waited, second

    first, waited, second = asyncio.run(scenario())
    assert first == ("timeout", None)
    assert waited >= 0.3  # not before the deadline (a hang is caught by the test timeout)
    assert second == ("200", b"{}")


@pytest.mark.timeout(60)
def test_curl_client_follows_a_server_that_keeps_closing_its_connections():
    """libcurl's socket stays registered with the loop between calls (parked); a server that closes every
    connection after 100 ms (GOAWAY, then close) makes libcurl open new sockets, often under a number a parked
    socket had: every call, sent back to back and with idle gaps longer than a connection's age, is answered."""
    p = build_payload("m", 1, 10)
    with NoopServer(NoopConfig(max_connection_age_ms=100)) as s:
        async def run():
            t = CurlGrpcTransport(f"127.0.0.1:{s.grpc_port}", timeout_s=5.0)
            statuses, sockets = [], set()
            try:
                loop = asyncio.get_running_loop()
                end = loop.time() + 1.5
                while loop.time() < end:
                    statuses.append((await t.send(p.grpc_bytes))[0])
                    sockets.update(t._watched, t._parked)
                for _ in range(3):
                    await asyncio.sleep(0.3)  # idle past the connection's age: it is closed while parked
                    statuses.append((await t.send(p.grpc_bytes))[0])
                return statuses, loop.time() - end
            finally:
                await t.close()

        statuses, idle_part_s = asyncio.run(run())
    assert len(statuses) > 20 and set(statuses) == {"OK"}, statuses
    assert idle_part_s < 3.0  # no call waited for its 5 s deadline


@pytest.mark.timeout(60)
def test_curl_client_deadline_ends_calls_at_the_deadline_and_reuses_the_handle():
    """The deadline is the client's watchdog (not libcurl's TIMEOUT_MS): each call to a server slower than the
    deadline ends as DEADLINE_EXCEEDED no earlier than the deadline and within a tick after it, and the handle
    taken back from the first call carries the second."""
    p = build_payload("m", 1, 10)
    with NoopServer(NoopConfig(delay_ms=1500)) as s:
        async def run():
            t = CurlGrpcTransport(f"127.0.0.1:{s.grpc_port}", timeout_s=0.3)
            loop = asyncio.get_running_loop()
            out = []
            try:
                for _ in range(2):
                    start = loop.time()
                    out.append(((await t.send(p.grpc_bytes))[0], loop.time() - start))
                return out, len(t._by_curl)
            finally:
                await t.close()

        calls, handles = asyncio.run(run())
    for status, waited in calls:
        assert status == "DEADLINE_EXCEEDED"
        assert 0.3 <= waited < 0.75  # at the deadline (one 30 ms tick late at most, plus a loaded machine)
    assert handles == 1


@pytest.mark.timeout(60)
def test_blocking_rest_connection_times_out_a_silent_server_and_reconnects():
    """The blocking connection's deadline is the kernel's receive timeout: a request the server never answers
    ends as "timeout" at the deadline, and the next one goes out on a new connection and is answered."""
    answer = threading.Event()
    conns = []

    def serve(listener: socket.socket) -> None:
        while True:
            try:
                c, _ = listener.accept()
            except OSError:
                return
            conns.append(c)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"{}"):
                data += c.recv(4096)
            if answer.is_set():
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        threading.Thread(target=serve, args=(listener,), daemon=True).start()
        t = RestTransport(f"127.0.0.1:{listener.getsockname()[1]}", "/v1/models/m:predict", timeout_s=0.3)
        sender = t.open_blocking()
        start = time.perf_counter()
        first = sender.send(b"{}")
        waited = time.perf_counter() - start
        answer.set()
        second = sender.send(b"{}")
        sender.close()
    assert first == ("timeout", None) and 0.29 <= waited < 2.0
    assert second == ("200", b"{}") and len(conns) == 2


def test_blocking_curl_calls_give_the_loops_statuses_and_bytes():
    """libcurl's blocking sender (ClosedLoop's synchronous calls at one stream) answers as its event-loop calls
    do: the same OK bytes, NOT_FOUND, INVALID_ARGUMENT, DEADLINE_EXCEEDED past its deadline, UNAVAILABLE when
    nothing listens."""
    good, unknown = build_payload("known", 3, 10).grpc_bytes, build_payload("other", 1, 10).grpc_bytes

    def blocking(target: str, payload: bytes, timeout_s: float = 5.0) -> tuple[str, bytes | None]:
        sender = CurlGrpcTransport(target, timeout_s=timeout_s).open_blocking()
        try:
            return sender.send(payload)
        finally:
            sender.close()

    with NoopServer(NoopConfig(models=("known",))) as s:
        target = f"127.0.0.1:{s.grpc_port}"
        looped = asyncio.run(send_with_each_grpc_client(target, good))["curl"]
        assert blocking(target, good) == looped and looped[0] == "OK"
        assert blocking(target, unknown) == ("NOT_FOUND", None)
        assert blocking(target, b"\xff\xfe not a proto") == ("INVALID_ARGUMENT", None)
    with NoopServer(NoopConfig(delay_ms=500)) as slow:
        assert blocking(f"127.0.0.1:{slow.grpc_port}", good, timeout_s=0.1) == ("DEADLINE_EXCEEDED", None)
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        assert blocking(f"127.0.0.1:{refusing.getsockname()[1]}", good) == ("UNAVAILABLE", None)
