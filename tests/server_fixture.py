"""The embedded server for tests: ManagedServer (benchmarks/targets/managed.py) plus gRPC stubs.

    with running_server(models_dir) as server:           # a dir with models.local.config, or a config file
        stub = server.prediction_stub()
        requests.get(f"{server.rest_url}/v1/models/residual_regressor")

ManagedServer starts it on free ports, waits for the gRPC health service to answer SERVING, and on exit sends
SIGTERM: the server must stop by itself within `stop_timeout` (it is killed otherwise, exit_code -9).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from benchmarks.targets.managed import ManagedServer


@dataclass
class ServerHandle(ManagedServer):
    """A ManagedServer whose gRPC channels the test opens through it (closed before the server stops)."""

    _channels: list[grpc.Channel] = field(default_factory=list, init=False, repr=False)

    def channel(self) -> grpc.Channel:
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        ch = grpc.insecure_channel(self.grpc_target, options=options)
        self._channels.append(ch)
        return ch

    def prediction_stub(self):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel())

    def model_stub(self):
        from tensorflow_serving.apis import model_service_pb2_grpc

        return model_service_pb2_grpc.ModelServiceStub(self.channel())

    def stop(self) -> int | None:
        for ch in self._channels:
            ch.close()
        self._channels.clear()
        return super().stop()


@contextlib.contextmanager
def running_server(models_dir_or_config: Path | str | None, mode: str = "graph", batching_file: Path | str | None = None,
                   extra_args: Sequence[str] = (), ready_timeout: float = 180.0, stop_timeout: float = 60.0,
                   env: dict[str, str] | None = None, serve_args: Sequence[str] | None = None) -> Iterator[ServerHandle]:
    """Run `python -m serving serve` on free ports until the block ends (then SIGTERM and wait).

    `serve_args` replaces the whole `serve` command line (e.g. TF Serving's flags, ports included); the
    other arguments that build one are then unused."""
    source = Path(models_dir_or_config) if models_dir_or_config is not None else None
    is_dir = source is not None and source.is_dir()
    server = ServerHandle("embedded", mode=mode, models_dir=source if is_dir else None,
                          config_file=source if source is not None and not is_dir else None,
                          batching_file=Path(batching_file) if batching_file is not None else None,
                          extra_args=list(extra_args), serve_args=list(serve_args) if serve_args is not None else None,
                          env=dict(env or {}), start_timeout_s=ready_timeout, stop_timeout_s=stop_timeout)
    with server:
        yield server


def tensor_proto(shape, content: bytes | None = None, values=None, dtype: int = 1):
    """A TensorProto that says exactly what a test wants it to (shape, raw tensor_content, float_val, dtype;
    1 = DT_FLOAT), consistent or not: tf.make_tensor_proto would refuse the inconsistent ones the tests send."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    t = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]))
    if content is not None:
        t.tensor_content = content
    if values is not None:
        t.float_val.extend(values)
    return t


# What a closed-loop row may say about the measurement itself on a loaded machine: its windows did not agree, or the
# client ran near saturation. Any other warning (probe, response check, errors) is a fault.
MEASUREMENT_NOTES = ("unstable: last 3 of ", "load generator near saturation")


def faults_in(warnings: list[str]) -> list[str]:
    return [w for w in warnings if not w.startswith(MEASUREMENT_NOTES)]
