"""tensorflow_model_server's command-line conventions, for `python -m serving serve` (serving/cli/serve_flags.py).

TF Serving parses its flags with tensorflow::Flags (model_servers/main.cc): `--flag=value` or `--flag value`,
booleans as a bare `--flag` or `--flag=true|false` (also 1/0). This module holds what argparse does not do by
itself: those booleans, the `--grpc_channel_arguments` list, `--version`, and the TF Serving flags the
embedded server cannot honour, each refused with a one-line reason instead of being silently ignored.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_TRUE = ("true", "1")
_FALSE = ("false", "0")


def parse_bool(text: str) -> bool:
    """A tensorflow::Flags boolean: true/false or 1/0 (any case)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


class BoolFlag(argparse.Action):
    """`--flag`, `--flag=true|false`, `--flag true|false` (TF Serving's boolean syntax)."""

    def __init__(self, option_strings: Sequence[str], dest: str, default: bool = False, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", const="true", default=default, metavar="true|false",
                         **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option_string: str | None = None) -> None:
        try:
            setattr(namespace, self.dest, parse_bool(value))
        except ValueError as exc:
            parser.error(f"argument {option_string}: {exc}")


def parse_grpc_channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    """`k=v,k=v` as TF Serving reads it (server.cc): a value that parses as a 32-bit int is passed as an int,
    anything else as a string. An entry without '=' is an error here (TF Serving would crash on it)."""
    out: list[tuple[str, int | str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
        try:
            number = int(raw)
            value: int | str = number if -2**31 <= number < 2**31 else raw
        except ValueError:
            value = raw
        out.append((key.strip(), value))
    return tuple(out)


def version_text() -> str:
    """What `--version` prints, in tensorflow_model_server's two-line shape."""
    def version_of(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return (f"TensorFlow ModelServer: tfserve-bench embedded server {version_of('tfserve-bench')} "
            f"(TF Serving API {version_of('tensorflow-serving-api')})\n"
            f"TensorFlow Library: {version_of('tensorflow')}\n")


class VersionFlag(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", const="true", default=False, metavar="true|false",
                         **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option_string: str | None = None) -> None:
        if parse_bool(value):
            sys.stdout.write(version_text())  # stdout, as tensorflow_model_server prints it
            parser.exit(0)


@dataclass(frozen=True)
class UnsupportedFlag:
    """A tensorflow_model_server flag the embedded server cannot honour. `same_as_embedded` lists values that
    describe what it does anyway (e.g. `--num_load_threads=0`: loads are serial), so they are accepted."""

    name: str
    reason: str
    same_as_embedded: tuple[str, ...] = ()


UNSUPPORTED_FLAGS = (
    UnsupportedFlag("per_process_gpu_memory_fraction", "the embedded server runs TensorFlow on CPU only; GPU "
                    "options apply to real TF Serving (make serve SERVER=tfserving)"),
    UnsupportedFlag("ssl_config_file", "TLS is not implemented: gRPC and REST are plaintext"),
    UnsupportedFlag("use_alts_credentials", "ALTS credentials are not implemented: gRPC is plaintext", ("false",)),
    UnsupportedFlag("platform_config_file", "only the TensorFlow SavedModel platform is served"),
    UnsupportedFlag("tensorflow_session_config_file", "a session ConfigProto is not read; use "
                    "--tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism for threads"),
    UnsupportedFlag("saved_model_tags", "only the MetaGraph tagged 'serve' is loaded", ("serve",)),
    UnsupportedFlag("enable_per_model_batching_parameters", "batching_params.pbtxt inside a SavedModel is not "
                    "read; all models batch with --batching_parameters_file", ("false",)),
    UnsupportedFlag("num_load_threads", "versions load one at a time (TF Serving's default, 0)", ("0",)),
    UnsupportedFlag("num_unload_threads", "versions unload one at a time (TF Serving's default, 0)", ("0",)),
    UnsupportedFlag("num_request_iterations_for_warmup", "each warmup record is replayed once", ("0", "1")),
    UnsupportedFlag("flush_filesystem_caches", "there is no filesystem cache to flush (models are read with "
                    "TensorFlow's Python loader)"),
    UnsupportedFlag("remove_unused_fields_from_bundle_metagraph", "the MetaGraphDef is not kept in memory "
                    "after load, so there is nothing to strip"),
    UnsupportedFlag("rest_api_enable_cors_support", "CORS headers are not sent", ("false",)),
    UnsupportedFlag("enable_signature_method_name_check", "not implemented", ("false",)),
    UnsupportedFlag("xla_cpu_compilation_enabled", "XLA is chosen per server with --mode xla (every signature "
                    "compiled), not per model", ("false",)),
    UnsupportedFlag("enable_profiler", "the TensorFlow profiler service is not served", ("false",)),
    UnsupportedFlag("enable_grpc_healthcheck_service", "the grpc.health.v1 service is always on (the project's "
                    "readiness checks use it)", ("true",)),
    UnsupportedFlag("prefer_tflite_model", "TF Lite models are not served", ("false",)),
    UnsupportedFlag("use_tflite_model", "TF Lite models are not served", ("false",)),
    UnsupportedFlag("num_tflite_pools", "TF Lite models are not served"),
    UnsupportedFlag("num_tflite_interpreters_per_pool", "TF Lite models are not served"),
    UnsupportedFlag("thread_pool_factory_config_file", "custom inference thread pools are not implemented"),
)


def _normalised(value: str | None) -> str:
    text = "true" if value is None else value.strip().lower()
    return {"1": "true", "0": "false"}.get(text, text) if text in _TRUE + _FALSE else text


class RefuseFlag(argparse.Action):
    """Refuse an UnsupportedFlag with its reason (argparse prints it on one line and exits 2)."""

    def __init__(self, option_strings: Sequence[str], dest: str, flag: UnsupportedFlag, **kwargs: Any) -> None:
        self.flag = flag
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                         **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option_string: str | None = None) -> None:
        accepted = {_normalised(v) for v in self.flag.same_as_embedded}
        if _normalised(value) in accepted:
            return
        hint = f" (accepted: --{self.flag.name}={'|'.join(self.flag.same_as_embedded)})" \
            if self.flag.same_as_embedded else ""
        parser.error(f"--{self.flag.name} is not supported by the embedded server: {self.flag.reason}{hint}")


def add_unsupported_flags(parser: argparse.ArgumentParser) -> None:
    for flag in UNSUPPORTED_FLAGS:
        parser.add_argument(f"--{flag.name}", action=RefuseFlag, flag=flag, dest=f"unsupported_{flag.name}")
