"""What every load-generator client is, and the one registry that names them.

A client is a Transport: it sends pre-built request bytes (benchmarks/requests/) to one endpoint and returns
(status, response bytes). Status is the gRPC status name ("OK", "UNAVAILABLE", ...) for gRPC and the
HTTP code as a string ("200", "503", ...) or a client-side error class ("connection_error", "timeout")
for REST, so errors can be counted by code; ok() says which statuses are successes.

Adding a client is one class: decorate it with @register_client(kind=..., choice=..., row_name=...) and
give it a from_options() constructor; make_transport() then builds it when asked for by that choice,
and result rows name it by row_name. The class must live in a module that benchmarks/clients/transports.py
imports (grpc_aio, grpc_curl and rest are): code that builds clients imports them from there, so the
registry is complete before anyone asks it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, TypeVar

from export.contract import PREDICT_METHOD


class Transport(Protocol):
    target: str

    async def send(self, payload: bytes) -> tuple[str, bytes | None]: ...

    async def close(self) -> None: ...


def ok(status: str) -> bool:
    return status in ("OK", "200")


@dataclass(frozen=True)
class TransportOptions:
    """Everything a command may ask of a client; each client reads the options that apply to it."""

    target: str  # host:port
    rest_path: str = ""  # REST: the :predict path requests go to
    concurrency: int = 64  # REST: connection pool size (one request per connection at a time)
    timeout_s: float = 30.0  # per-request deadline
    grpc_channels: int = 1  # grpc.aio: channels (TCP connections) to spread calls over
    grpc_method: str = PREDICT_METHOD  # gRPC: the method path (Predict, Classify or Regress)


@dataclass(frozen=True)
class ClientSpec:
    kind: str  # the protocol: grpc | rest (a result row's `kind`)
    choice: str  # what the command line calls it (--grpc-client aio|curl)
    row_name: str  # what a result row's `client` says sent the requests (grpc.aio | libcurl | asyncio-http1)
    cls: type  # the Transport class, built with cls.from_options(TransportOptions)
    default: bool  # the kind's client when none is chosen


_CLIENTS: dict[str, dict[str, ClientSpec]] = {}  # kind -> choice -> spec, in registration order

T = TypeVar("T", bound=type)


def register_client(*, kind: str, choice: str, row_name: str, default: bool = False) -> Callable[[T], T]:
    """Class decorator: make a Transport class selectable by (kind, choice) and name its result rows."""

    def register(cls: T) -> T:
        clients = _CLIENTS.setdefault(kind, {})
        if choice in clients:
            raise ValueError(f"{kind} client {choice!r} is registered twice ({clients[choice].cls.__name__}, "
                             f"{cls.__name__})")
        if default and any(s.default for s in clients.values()):
            raise ValueError(f"{kind} has a default client already; {cls.__name__} cannot be a second one")
        clients[choice] = ClientSpec(kind, choice, row_name, cls, default)
        return cls

    return register


def client_choices(kind: str) -> tuple[str, ...]:
    """The registered clients of one kind, by their command-line choice, default first."""
    specs = sorted(_kind(kind).values(), key=lambda s: not s.default)
    return tuple(s.choice for s in specs)


def find_client(kind: str, choice: str | None = None) -> ClientSpec:
    """The client registered as `choice` for `kind`; None = that kind's default (or its only client)."""
    clients = _kind(kind)
    if choice is None:
        spec = next((s for s in clients.values() if s.default), None)
        if spec is None and len(clients) == 1:
            spec = next(iter(clients.values()))
        if spec is None:
            raise ValueError(f"{kind} has several clients and no default: choose one of {'|'.join(clients)}")
        return spec
    if choice not in clients:
        raise ValueError(f"unknown {'gRPC' if kind == 'grpc' else kind.upper()} client {choice!r} "
                         f"({'|'.join(clients)})")
    return clients[choice]


def select_client(kind: str, grpc_client: str | None = None) -> ClientSpec:
    """The client a benchmark of `kind` uses: for gRPC the one --grpc-client names, for any other kind its
    default (only gRPC offers a choice on the command line)."""
    return find_client(kind, grpc_client if kind == "grpc" else None)


def client_name(kind: str, grpc_client: str | None = None) -> str:
    """What a result row's `client` says sent the requests (grpc.aio | libcurl | asyncio-http1)."""
    return select_client(kind, grpc_client).row_name


def make_transport(kind: str, target: str, rest_path: str = "", *, concurrency: int = 64, timeout_s: float = 30.0,
                   grpc_channels: int = 1, grpc_client: str | None = None,
                   grpc_method: str = PREDICT_METHOD) -> Transport:
    """grpc_method: the gRPC method path (Predict, Classify or Regress); for REST, rest_path says the same."""
    spec = select_client(kind, grpc_client)
    return spec.cls.from_options(TransportOptions(target, rest_path, concurrency=max(concurrency, 1),
                                                  timeout_s=timeout_s, grpc_channels=grpc_channels,
                                                  grpc_method=grpc_method))


def _kind(kind: str) -> dict[str, ClientSpec]:
    if kind not in _CLIENTS:
        raise ValueError(f"unknown transport {kind!r} ({'|'.join(_CLIENTS)})")
    return _CLIENTS[kind]
