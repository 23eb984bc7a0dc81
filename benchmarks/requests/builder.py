"""The one entry point for request building: build_requests(RequestSpec) -> ModelRequests.

    requests = build_requests(RequestSpec(model, kind="grpc", target="host:port", n_features=10))
    p = requests.payload(batch)          # Payload: grpc_bytes, rest_body, rest_path, grpc_method, ...
    problem = requests.check("grpc", response_bytes, batch)   # None when every row was answered

The project's own models carry a manifest (n_features) in the models directory: with n_features > 0 and
default InputOptions (no --signature/--shape/--input-data/--method/--feature), their requests are built
without asking the server anything. Every other model is described by the server (GetModelMetadata / REST
metadata), and its requests are built from that signature (tensors.py, examples.py) or from --input-data
(input_data.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from benchmarks.requests import examples, input_data
from benchmarks.requests.payloads import Payload, build_payload, check_grpc_response, check_rest_response, timed_payload
from benchmarks.requests.signature import ServedSignature, fetch_signature
from benchmarks.requests.tensors import InputOptions, check_shape_names, predict_request_bytes, predict_rest_body, \
    random_inputs

METHODS = ("predict", "classify", "regress")


@dataclass
class SignatureRequests:
    """Builds a model's request bytes for each batch size from its served signature."""

    sig: ServedSignature
    method: str  # predict | classify | regress
    opts: InputOptions
    file_data: dict[str, np.ndarray] | None = None  # rows from --input-data, cycled to each batch size

    def values(self, batch: int) -> dict[str, np.ndarray]:
        if self.file_data is not None:
            return input_data.take_rows(self.file_data, batch)
        if self.method == "predict":
            return random_inputs(self.sig, batch, self.opts)
        return examples.random_features(batch, self.opts)

    def payload(self, batch: int) -> Payload:
        values, sig = self.values(batch), self.sig
        if self.method == "predict":
            encoders = (lambda: predict_request_bytes(sig, values), lambda: predict_rest_body(sig, values))
        else:
            encoders = (lambda: examples.example_request_bytes(sig, self.method, values),
                        lambda: examples.example_rest_body(sig, values))
        return timed_payload(sig.model, batch, sig.name, *encoders, method=self.method)


def resolve_method(sig: ServedSignature, requested: str) -> str:
    method = sig.method if requested == "auto" else requested
    if method not in METHODS:
        raise ValueError(f"signature '{sig.name}' of '{sig.model}' has method '{sig.method}'; "
                         f"pass --method {'|'.join(METHODS)}")
    return method


@dataclass(frozen=True)
class RequestSpec:
    """What to build requests for: a model, the API to ask for its signature, and how to fill the inputs."""

    model: str
    kind: str = "grpc"  # grpc | rest: which API describes the model (unused on the manifest fast path)
    target: str = ""  # host:port of that API
    n_features: int = 0  # > 0 (from a manifest or NAME:N): the project's float-matrix fast path
    options: InputOptions = field(default_factory=InputOptions)


@dataclass
class ModelRequests:
    """A model's requests: payload(batch) builds one batch size's (build it once, before any timed section);
    check() says whether an answer covers every row."""

    model: str
    method: str  # predict | classify | regress
    payload: Callable[[int], Payload]

    def check(self, kind: str, body: bytes, batch: int) -> str | None:
        """A problem with a response, or None when it answers every row of a `batch`-row request."""
        return check_grpc_response(body, batch, self.method) if kind == "grpc" else check_rest_response(body, batch)


def build_requests(spec: RequestSpec) -> ModelRequests:
    """The manifest fast path when it applies, else the server's signature (ValueError naming any problem with
    the options, UnknownModel when the server does not serve the model)."""
    opts = spec.options
    if spec.n_features > 0 and opts.is_default():
        return ModelRequests(spec.model, "predict",
                             lambda batch: build_payload(spec.model, batch, spec.n_features, signature=opts.signature))
    sig = fetch_signature(spec.kind, spec.target, spec.model, opts.signature)
    method = resolve_method(sig, opts.method)
    check_shape_names(sig, opts.shapes)
    file_data = None
    if opts.input_data is not None:
        doc = input_data.load_document(opts.input_data)
        where = f"--input-data {opts.input_data}"
        file_data = (input_data.predict_tensors(doc, sig, opts.shapes, where) if method == "predict"
                     else input_data.example_features(doc, where))
    requests = SignatureRequests(sig, method, opts, file_data)
    requests.values(1)  # fail now, before any load, if the shapes or features cannot be filled
    return ModelRequests(spec.model, method, requests.payload)
