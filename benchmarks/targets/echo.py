"""A bare gRPC server that answers TF Serving's Predict with the request bytes: "gRPC and nothing else".

The perf check measures it next to the embedded server, so the served overhead can be split into what gRPC
in Python costs by itself and what the server adds. Two kinds, as the embedded server has had both:
`sync` (grpc.server on a thread pool) and `aio` (grpc.aio on one event loop, the embedded server's kind).
Started by ManagedServer(kind="echo", mode="sync"|"aio"); prints the same "listening:" line as the
embedded server and stops on SIGTERM.

With --canned-from HOST:PORT --model NAME it instead answers GetModelMetadata and Predict with the bytes a real
server returned for that model (fetched once at start, a batch-1 Predict of zeros): a client that checks the
replies, such as perf_analyzer, can then measure what the gRPC server alone costs per call, no model and no
request handling (docs/performance.md, "gRPC vs REST").

    python -m benchmarks.targets.echo --kind aio --grpc-port 0
    python -m benchmarks.targets.echo --kind sync --canned-from 127.0.0.1:8500 --model residual_regressor
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


def canned_replies(target: str, model: str) -> dict[str, bytes]:
    """Method -> the reply bytes a real server gave for `model` (metadata, and a batch-1 Predict of zeros)."""
    from benchmarks.requests.signature import fetch_signature
    from benchmarks.requests.tensors import InputOptions, predict_request_bytes, random_inputs

    from tensorflow_serving.apis import get_model_metadata_pb2  # TensorFlow's protos: only for canned replies

    sig = fetch_signature("grpc", target, model, "serving_default")
    meta_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    meta_request.model_spec.name = model
    with grpc.insecure_channel(target) as channel:
        meta = channel.unary_unary(f"/{SERVICE}/GetModelMetadata")(meta_request.SerializeToString(), timeout=30)
        values = {k: v * 0 for k, v in random_inputs(sig, 1, InputOptions()).items()}
        predict = channel.unary_unary(PREDICT_METHOD)(predict_request_bytes(sig, values), timeout=30)
    return {"GetModelMetadata": meta, PREDICT: predict}


def _handlers(replies: dict[str, bytes] | None, asynchronous: bool) -> grpc.GenericRpcHandler:
    """Predict echoes the request, or every method in `replies` answers its canned bytes."""

    def answer(method: str):
        if asynchronous:
            async def reply(request: bytes, _context) -> bytes:
                return request if replies is None else replies[method]
        else:
            def reply(request: bytes, _context) -> bytes:
                return request if replies is None else replies[method]
        return grpc.unary_unary_rpc_method_handler(reply)

    return grpc.method_handlers_generic_handler(SERVICE, {m: answer(m) for m in (replies or {PREDICT: b""})})


def serve_sync(port: int, threads: int, replies: dict[str, bytes] | None = None) -> None:
    handler = _handlers(replies, asynchronous=False)
    server = grpc.server(ThreadPoolExecutor(max_workers=threads), handlers=[handler], options=OPTIONS)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    _listening(bound)
    server.wait_for_termination()  # SIGTERM ends the process


async def serve_aio(port: int, replies: dict[str, bytes] | None = None) -> None:
    handler = _handlers(replies, asynchronous=True)
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
    p.add_argument("--canned-from", default="", metavar="HOST:PORT",
                   help="answer GetModelMetadata and Predict with this server's replies for --model")
    p.add_argument("--model", default="", help="with --canned-from: the model whose replies to keep")
    args = p.parse_args(argv)
    replies = canned_replies(args.canned_from, args.model) if args.canned_from else None
    if args.kind == "aio":
        asyncio.run(serve_aio(args.grpc_port, replies))
    else:
        serve_sync(args.grpc_port, args.threads, replies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
