"""One Payload per (model, batch size) for any served model: the manifest fast path or the signature.

The project's own models carry a manifest (n_features) in the models directory: with no --signature/
--shape/--input-data/--method/--feature given, their requests are built as before without asking the
server anything. Every other model is described by the server (GetModelMetadata / REST metadata), and
its requests are built from that signature (inputs.py, examples.py), or from --input-data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmarks.clients import examples, input_data
from benchmarks.clients.inputs import InputOptions, check_shape_names, predict_request_bytes, predict_rest_body, \
    random_inputs, rest_path
from benchmarks.clients.payloads import Payload, build_payload, per_call_ms
from benchmarks.clients.signature import ServedSignature, fetch_signature

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

    def grpc_bytes(self, values: dict[str, np.ndarray]) -> bytes:
        if self.method == "predict":
            return predict_request_bytes(self.sig, values)
        return examples.example_request_bytes(self.sig, self.method, values)

    def rest_body(self, values: dict[str, np.ndarray]) -> bytes:
        if self.method == "predict":
            return predict_rest_body(self.sig, values)
        return examples.example_rest_body(self.sig, values)

    def payload(self, batch: int) -> Payload:
        values = self.values(batch)
        # The encode cost is timed over ~200k elements in all (200 calls at most, 3 at least): a 224x224x3 image
        # batch would otherwise take minutes to time before its first request.
        reps = max(3, min(200, 200_000 // max(1, sum(np.asarray(v).size for v in values.values()))))
        return Payload(self.sig.model, batch, 0, self.sig.name, self.grpc_bytes(values), self.rest_body(values),
                       rest_path(self.sig.model, self.method),
                       per_call_ms(lambda: self.grpc_bytes(values), reps),
                       per_call_ms(lambda: self.rest_body(values), reps),
                       method=self.method, grpc_method=examples.GRPC_METHODS[self.method])


def resolve_method(sig: ServedSignature, requested: str) -> str:
    method = sig.method if requested == "auto" else requested
    if method not in METHODS:
        raise ValueError(f"signature '{sig.name}' of '{sig.model}' has method '{sig.method}'; "
                         f"pass --method {'|'.join(METHODS)}")
    return method


def signature_requests(kind: str, target: str, model: str, opts: InputOptions) -> SignatureRequests:
    """Ask the server for the signature and check the options against it (ValueError naming problems)."""
    sig = fetch_signature(kind, target, model, opts.signature)
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
    return requests


def payload_factory(kind: str, target: str, model: str, n_features: int,
                    opts: InputOptions) -> Callable[[int], Payload]:
    """batch size -> Payload. n_features > 0 (from a manifest or NAME:N) with default options keeps the
    project's fast path; anything else goes through the server's signature."""
    if n_features > 0 and opts.is_default():
        return lambda batch: build_payload(model, batch, n_features, signature=opts.signature)
    return signature_requests(kind, target, model, opts).payload
