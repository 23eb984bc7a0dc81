"""The clients' public face: importing this module registers every client (grpc_aio, grpc_curl, rest).

Commands and load policies import from here: make_transport() builds the client a run asked for and
client_name() names it in result rows; base.py holds the Transport protocol and the registry. A new
client's module is imported below, once, and nothing else changes.
"""
from __future__ import annotations

from benchmarks.clients.base import Transport, client_choices, client_name, find_client, make_transport, ok
from benchmarks.clients.grpc_aio import GrpcTransport
from benchmarks.clients.grpc_curl import CurlGrpcTransport
from benchmarks.clients.rest import RestTransport

GRPC_CLIENTS = client_choices("grpc")  # what --grpc-client accepts (aio, curl)
DEFAULT_GRPC_CLIENT = find_client("grpc").choice  # curl: libcurl (see grpc_curl.py for why)

__all__ = ["CurlGrpcTransport", "DEFAULT_GRPC_CLIENT", "GRPC_CLIENTS", "GrpcTransport", "RestTransport", "Transport",
           "client_name", "find_client", "make_transport", "ok"]
