"""`python -m serving check-model PATH [--signature S] [--samples N]`: does the embedded server answer a
SavedModel exactly as TensorFlow's v1 Session loader (what tensorflow_model_server runs) answers it?

The model is loaded both ways: into a Session (serving/execution/session_bundle.py, the oracle) and by a throwaway
embedded server (`python -m serving serve` on free loopback ports). Seeded inputs built from each signature
(serving/cli/oracle.py) go to the server over gRPC and REST: Predict always, Classify / Regress /
MultiInference where the signature can answer them. A table per signature gives, per API and batch, the
largest absolute and relative difference from the Session's answer and any disagreement. Exit 0: every
answer agrees; 1: a mismatch; 2: bad arguments or a model neither loader can load.

The wire side is written here from the API documents (TensorProto, TF Serving's REST JSON), not borrowed
from the server, so a server-side conversion bug shows up as a mismatch.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.cli.oracle import CLASSIFY, REGRESS, Outcome, Sample, Verdict, build_samples, compare, inference_method, \
    oracle_outcome

LISTENING = re.compile(r"listening: gRPC (\S+):(\d+), REST (\S+):(\d+)")
_MAX_MESSAGE = 64 << 20


class ServerClient:
    """Predict / Classify / Regress / MultiInference over gRPC and REST, answers as Outcomes."""

    def __init__(self, grpc_target: str, rest_url: str) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._grpc = grpc
        self._channel = grpc.insecure_channel(grpc_target, options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.rest_url = rest_url.rstrip("/")

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any) -> tuple[Any, Outcome | None]:
        try:
            return method(request, timeout=120), None
        except self._grpc.RpcError as exc:
            return None, Outcome(None, exc.code().name, exc.details() or "")

    def predict_grpc(self, model: str, signature: str, inputs: dict[str, np.ndarray],
                     version: int | None = None) -> Outcome:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = model, signature
        if version is not None:
            request.model_spec.version.value = version
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response, error = self._call(self._stub.Predict, request)
        return error or Outcome({k: tf.make_ndarray(v) for k, v in response.outputs.items()})

    def predict_rest(self, model: str, signature: str, inputs: dict[str, np.ndarray],
                     dtypes: dict[str, np.dtype]) -> Outcome:
        body = {"signature_name": signature, "inputs": {k: _to_json(v) for k, v in inputs.items()}}
        doc, error = self._post(f"/v1/models/{model}:predict", body)
        if error:
            return error
        outputs = doc["outputs"] if len(dtypes) > 1 else {next(iter(dtypes)): doc["outputs"]}
        return Outcome({k: _from_json(v, dtypes[k], k) for k, v in outputs.items()})

    def infer_grpc(self, model: str, signature: str, method: str, examples: list[bytes]) -> Outcome:
        from tensorflow_serving.apis import classification_pb2, regression_pb2

        message = classification_pb2.ClassificationRequest if method == CLASSIFY else regression_pb2.RegressionRequest
        request = message()
        request.model_spec.name, request.model_spec.signature_name = model, signature
        _fill_examples(request.input, examples)
        response, error = self._call(self._stub.Classify if method == CLASSIFY else self._stub.Regress, request)
        return error or Outcome(_result_outputs(response.result, method))

    def multi_inference_grpc(self, model: str, tasks: dict[str, str], examples: list[bytes]) -> dict[str, Outcome]:
        from tensorflow_serving.apis import inference_pb2

        request = inference_pb2.MultiInferenceRequest()
        for signature, method in tasks.items():
            task = request.tasks.add()
            task.model_spec.name, task.model_spec.signature_name, task.method_name = model, signature, method
        _fill_examples(request.input, examples)
        response, error = self._call(self._stub.MultiInference, request)
        if error:
            return {s: error for s in tasks}
        return {r.model_spec.signature_name: Outcome(_result_outputs(
            r.classification_result if r.WhichOneof("result") == "classification_result" else r.regression_result,
            tasks[r.model_spec.signature_name])) for r in response.results}

    def infer_rest(self, model: str, signature: str, method: str, examples: list[bytes]) -> Outcome:
        from tensorflow.core.example import example_pb2

        rows = [_example_json(example_pb2.Example.FromString(e)) for e in examples]
        verb = "classify" if method == CLASSIFY else "regress"
        doc, error = self._post(f"/v1/models/{model}:{verb}", {"signature_name": signature, "examples": rows})
        if error:
            return error
        results = doc["results"]
        if method == REGRESS:
            return Outcome({"outputs": np.asarray(results, np.float32)})
        return Outcome({"classes": np.array([[c[0].encode() for c in row] for row in results], dtype=object),
                        "scores": np.asarray([[c[1] for c in row] for row in results], np.float32)})

    def _post(self, path: str, body: dict[str, Any]) -> tuple[Any, Outcome | None]:
        import requests

        response = requests.post(self.rest_url + path, data=json.dumps(body), timeout=120)
        doc = response.json()
        if response.status_code != 200:
            return None, Outcome(None, _REST_CODES.get(response.status_code, str(response.status_code)),
                                 doc.get("error", ""))
        return doc, None


_REST_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE"}


def _fill_examples(request_input: Any, examples: list[bytes]) -> None:
    for serialized in examples:
        request_input.example_list.examples.add().ParseFromString(serialized)


def _result_outputs(result: Any, method: str) -> dict[str, np.ndarray]:
    if method == REGRESS:
        return {"outputs": np.asarray([r.value for r in result.regressions], np.float32)}
    rows = [list(c.classes) for c in result.classifications]
    return {"classes": np.array([[c.label.encode() for c in row] for row in rows], dtype=object),
            "scores": np.asarray([[c.score for c in row] for row in rows], np.float32)}


def _to_json(value: np.ndarray) -> Any:
    if value.dtype == object:
        return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])(value).tolist()
    return value.tolist()


def _from_json(value: Any, dtype: np.dtype, name: str) -> np.ndarray:
    if dtype != object:
        return np.asarray(value, dtype=dtype)
    decode = (lambda v: base64.b64decode(v["b64"])) if name.endswith("_bytes") else (lambda v: v.encode())
    arr = np.asarray(value, dtype=object)
    return np.vectorize(decode, otypes=[object])(arr) if arr.size else arr


def _example_json(example: Any) -> dict[str, Any]:
    """TF Serving's REST example format: floats with a decimal point, ints as ints, bytes as b64."""
    row = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        row[key] = ([{"b64": base64.b64encode(v).decode()} for v in values] if kind == "bytes_list" else
                    [float(v) for v in values] if kind == "float_list" else values)
    return row


# ------------------------------------------------------------------------------------------ one model
@dataclass
class Row:
    signature: str
    sample: str
    verdict: Verdict


def check_signature(bundle: Any, client: ServerClient, model: str, signature: str,
                    rng: np.random.Generator, repeats: int = 1) -> list[Row]:
    """Every sample of one signature through every API that fits it, each compared with the Session."""
    sig = bundle.signature_defs[signature]
    method = inference_method(sig)
    rows = []
    for sample in build_samples(bundle, signature, rng, repeats):
        expected = oracle_outcome(bundle, signature, sample)
        dtypes = {k: v.dtype for k, v in expected.outputs.items()} if expected.outputs else \
            {k: _np_dtype(info.dtype) for k, info in sig.outputs.items()}
        answers = {"gRPC Predict": client.predict_grpc(model, signature, sample.inputs),
                   "REST predict": client.predict_rest(model, signature, sample.inputs, dtypes)}
        rows += [Row(signature, sample.label, compare(api, expected, got)) for api, got in answers.items()]
        if method and sample.examples is not None:
            rows += _inference_rows(bundle, client, model, signature, method, sample, expected)
    return rows


def _inference_rows(bundle: Any, client: ServerClient, model: str, signature: str, method: str,
                    sample: Sample, expected: Outcome) -> list[Row]:
    word = "Classify" if method == CLASSIFY else "Regress"
    answers = {f"gRPC {word}": client.infer_grpc(model, signature, method, sample.examples),
               f"REST {word.lower()}": client.infer_rest(model, signature, method, sample.examples)}
    # MultiInference: this signature with every other one that reads the same input tensor.
    source = bundle.signature_defs[signature].inputs["inputs"].name
    tasks = {name: inference_method(sd) for name, sd in bundle.signature_defs.items()
             if inference_method(sd) and sd.inputs["inputs"].name == source}
    multi = client.multi_inference_grpc(model, tasks, sample.examples)
    rows = [Row(signature, sample.label, compare(api, expected, _trimmed(got, expected), flatten=True))
            for api, got in answers.items()]
    wants = {name: expected if name == signature else oracle_outcome(bundle, name, sample) for name in tasks}
    failed = next((w for w in wants.values() if w.outputs is None), None)  # one failing task fails the request
    for name, got in multi.items():
        want = failed or wants[name]
        got = _trimmed(got, want)
        rows.append(Row(name, sample.label, compare(f"gRPC MultiInference ({len(tasks)} tasks)", want, got,
                                                    flatten=True)))
    return rows


def _trimmed(got: Outcome, expected: Outcome) -> Outcome:
    """A ClassificationResult always carries labels and scores (empty or 0 when the signature has no such
    output): keep the ones the signature has."""
    if got.outputs is None or expected.outputs is None:
        return got
    return Outcome({k: v for k, v in got.outputs.items() if k in expected.outputs}, got.code, got.message)


def _np_dtype(enum: int) -> np.dtype:
    import tensorflow as tf

    dtype = tf.as_dtype(enum)
    return np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)


def format_table(model: str, rows: list[Row]) -> str:
    lines = []
    for signature in dict.fromkeys(r.signature for r in rows):
        lines.append(f"\n{model} / {signature}")
        lines.append(f"  {'api':<36} {'sample':<14} {'max abs':>10} {'max rel':>10}  result")
        for r in (r for r in rows if r.signature == signature):
            v = r.verdict
            result = f"MISMATCH: {v.problem}" if v.problem else ("ok (both refused)" if v.errored else "ok")
            lines.append(f"  {v.api:<36} {r.sample:<14} {v.max_abs:>10.3g} {v.max_rel:>10.3g}  {result}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the server
@contextlib.contextmanager
def throwaway_server(name: str, base_path: Path, mode: str = "graph", timeout: float = 300.0) -> Iterator[ServerClient]:
    """`python -m serving serve` for one model on free loopback ports, stopped (SIGTERM) on exit."""
    log = tempfile.NamedTemporaryFile(prefix="check-model-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "serving", "serve", "--mode", mode, "--grpc-port", "0", "--rest-port", "0",
           "--model-name", name, "--model-base-path", str(base_path)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)
    try:
        match = _wait_listening(proc, Path(log.name), timeout)
        client = ServerClient(f"{match[1]}:{match[2]}", f"http://{match[3]}:{match[4]}")
        try:
            yield client
        finally:
            client.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.unlink(log.name)


def _wait_listening(proc: subprocess.Popen, log: Path, timeout: float) -> re.Match:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = LISTENING.search(text)
        if match:
            return match
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded server exited ({proc.returncode}):\n{text[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"the embedded server did not open its ports within {timeout:.0f} s")


@contextlib.contextmanager
def _served_layout(path: Path) -> Iterator[tuple[Path, Path]]:
    """(base path, version dir) for PATH, a version dir or a base path; a SavedModel dir whose name is not a
    version number is served from a temporary base path holding a link to it as version 1."""
    from export.contract import SAVED_MODEL_FILE, version_dirs

    if (path / SAVED_MODEL_FILE).is_file() and not path.name.isdigit():
        with tempfile.TemporaryDirectory(prefix="check-model-") as tmp:
            (Path(tmp) / "1").symlink_to(path)
            yield Path(tmp), path
        return
    if (path / SAVED_MODEL_FILE).is_file():
        yield path.parent, path
        return
    found = version_dirs(path)
    if not found:
        raise ValueError(f"{path}: neither a SavedModel (no saved_model.pb) nor a base path with version dirs")
    yield path, max(found, key=lambda d: d.version).path


def run_check_model(args: argparse.Namespace) -> int:
    if args.samples < 1:
        print("error: --samples must be at least 1", file=sys.stderr)
        return 2
    try:
        with _served_layout(args.path.resolve()) as (base, version_dir):
            return _check(args, base, version_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace, base: Path, version_dir: Path) -> int:
    from serving.execution.session_bundle import SessionBundle

    try:
        bundle = SessionBundle(version_dir)
    except Exception as exc:  # the reference loader cannot load it: nothing to compare with
        print(f"error: {args.path}: the v1 Session loader refused it: {type(exc).__name__}: "
              f"{(str(exc).splitlines() or [''])[0]}", file=sys.stderr)
        return 2
    signatures = args.signature or sorted(bundle.signature_defs)
    unknown = sorted(set(signatures) - set(bundle.signature_defs))
    if unknown:
        print(f"error: no signature {', '.join(unknown)}; the model has {', '.join(sorted(bundle.signature_defs))}",
              file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    rows: list[Row] = []
    try:
        with throwaway_server("model", base, args.mode) as client:
            for signature in signatures:
                rows += check_signature(bundle, client, "model", signature, rng, args.samples)
    except RuntimeError as exc:  # the Session loaded it, the embedded server could not even start
        print(f"MISMATCH: {exc}", file=sys.stderr)
        return 1
    print(format_table(str(args.path), rows))
    bad = sum(1 for r in rows if r.verdict.problem)
    print(f"\n{len(rows)} answers compared with the Session's, {bad} mismatch(es)")
    return 1 if bad else 0
