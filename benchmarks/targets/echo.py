"""A bare gRPC server that answers TF Serving's Predict with the request bytes: "gRPC and nothing else".

The perf check measures it next to the embedded server, so the served overhead can be split into what gRPC
in Python costs by itself and what the server adds. Two kinds, as the embedded server has had both:
`sync` (grpc.server on a thread pool) and `aio` (grpc.aio on one event loop, the embedded server's kind).
Started by ManagedServer(kind="echo", mode="sync"|"aio"); prints the same "listening:" line as the
embedded server and stops on SIGTERM.

    python -m benchmarks.targets.echo --kind aio --grpc-port 0
"""
from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor

import grpc

from export.contract import PREDICT_METHOD, rpc_name

SERVICE, PREDICT = rpc_name(PREDICT_METHOD)
OPTIONS = [("grpc.so_reuseport", 0)]


def _listening(port: int) -> None:
    print(f"listening: gRPC 127.0.0.1:{port}, REST off", flush=True)


def serve_sync(port: int, threads: int) -> None:
    def echo(request: bytes, _context) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(SERVICE, {PREDICT: grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.server(ThreadPoolExecutor(max_workers=threads), handlers=[handler], options=OPTIONS)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    _listening(bound)
    server.wait_for_termination()  # SIGTERM ends the process


async def serve_aio(port: int) -> None:
    async def echo(request: bytes, _context) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(SERVICE, {PREDICT: grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.aio.server(handlers=[handler], options=OPTIONS)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    _listening(bound)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.targets.echo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=("sync", "aio"), default="aio", help="thread-pool or asyncio gRPC server")
    p.add_argument("--grpc-port", type=int, default=0, help="0 = pick a free one (printed)")
    p.add_argument("--threads", type=int, default=64, help="sync: thread-pool size (default 64)")
    args = p.parse_args(argv)
    if args.kind == "aio":
        asyncio.run(serve_aio(args.grpc_port))
    else:
        serve_sync(args.grpc_port, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
