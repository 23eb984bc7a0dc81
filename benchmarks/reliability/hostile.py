"""Hostile input: Hypothesis strategies, how to send each case, and what a correct answer to it is.

Three families, each case tagged with a `kind` so reports can say what was tried:
  rest   request bodies for POST /v1/models/<m>:predict: random JSON, mutations of a valid body, deep nesting,
         huge numbers, NaN/Infinity tokens, wrong types, huge arrays, invalid UTF-8, bodies over the limit.
         Correct: a 4xx with a JSON {"error": "<string>"} body (413 for an oversized body) -- never a 5xx for
         a client's mistake; 200 only for a body that is in fact a valid request (NaN/Infinity are valid
         numbers in TF Serving's REST API).
  grpc   PredictRequests with random TensorProtos: every dtype, shapes disagreeing with the content, negative
         or enormous dims, unknown rank, missing values, string content, extra/missing/renamed inputs.
         Correct: INVALID_ARGUMENT, or OK exactly when the request is valid by our own independent model of
         validity (`grpc_case_is_valid`), with one prediction per row.
  names  model names and version labels with '..', '/', NUL, odd Unicode, over gRPC and REST (percent-encoded
         and raw). Correct: NOT_FOUND / 404 (a raw path that is not an API path may get 400), never a model
         served from outside the config, never a file created (faults.Sentinel).
Every check returns None when the answer is correct and a one-line problem otherwise, so the same code
serves the property tests (assert) and the `make reliability` report (count).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
from hypothesis import strategies as st

from benchmarks.requests import protos
from export.contract import DEFAULT_SIGNATURE
from export.tensor_proto import fill_tensor_proto

MODEL = "residual_regressor"
INPUT = "inputs"
N_FEATURES = 10

# ------------------------------------------------------------------------------------------------ REST


@dataclass(frozen=True)
class RestCase:
    kind: str
    body: bytes
    valid: bool | None = False  # True: a correct predict request; None: either answer is defensible
    path_model: str = MODEL

    def __repr__(self) -> str:  # Hypothesis prints failing examples: keep them readable
        preview = self.body[:120] + (b"..." if len(self.body) > 120 else b"")
        return f"RestCase(kind={self.kind!r}, {len(self.body)} bytes: {preview!r}, valid={self.valid})"


_finite = st.floats(allow_nan=False, allow_infinity=False, width=32, min_value=-1e6, max_value=1e6)


def _valid_rows(min_rows: int = 1, max_rows: int = 4):
    return st.lists(st.lists(_finite, min_size=N_FEATURES, max_size=N_FEATURES), min_size=min_rows, max_size=max_rows)


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=30)


@st.composite
def rest_random_json(draw) -> RestCase:
    """Any JSON document, or an object with the right top-level keys but arbitrary values."""
    if draw(st.booleans()):
        return RestCase("random_json", _dump(draw(json_values)))
    key = draw(st.sampled_from(["instances", "inputs", "signature_name", "instance", "Instances"]))
    doc = {key: draw(json_values)}
    if draw(st.booleans()):
        doc["signature_name"] = draw(json_scalars)
    return RestCase("random_json", _dump(doc))


@st.composite
def rest_mutated(draw) -> RestCase:
    """A valid body with bytes flipped, deleted, inserted or the body cut short."""
    body = bytearray(_dump({"instances": draw(_valid_rows(1, 2))}))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if not body:
            break
        i = draw(st.integers(0, len(body) - 1))
        if op == "flip":
            body[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del body[i]
        elif op == "insert":
            body[i:i] = draw(st.binary(min_size=1, max_size=4))
        else:
            del body[i:]
    data = bytes(body)
    try:  # a mutation can land on a digit and leave a valid request: then 200 is the right answer
        doc = json.loads(data)
        valid = _is_valid_rows_doc(doc)
    except (ValueError, RecursionError):
        valid = False
    return RestCase("mutated", data, valid)


def _is_valid_rows_doc(doc: Any) -> bool | None:
    """Our own model of a valid predict body (row or columnar, 10 finite-or-NaN/Inf numbers per row)."""
    if not isinstance(doc, dict):
        return False
    keys = set(doc) - {"signature_name"}
    if "signature_name" in doc and doc["signature_name"] not in ("", DEFAULT_SIGNATURE):
        return False
    if keys == {"instances"}:
        rows = doc["instances"]
        if isinstance(rows, list) and rows and all(isinstance(r, dict) and set(r) == {INPUT} for r in rows):
            rows = [r[INPUT] for r in rows]
    elif keys == {"inputs"}:
        rows = doc["inputs"]
        if isinstance(rows, dict) and set(rows) == {INPUT}:
            rows = rows[INPUT]
    else:
        return False

    def number(v: Any) -> bool | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if isinstance(v, int) and abs(v) >= 2**63:
            # TF Serving's parser reads it as a double and accepts it for a float input; a stricter server
            # may refuse integers beyond int64. Either is a defensible answer (never a 5xx).
            return None if abs(v) <= 3.4e38 else False
        return not (isinstance(v, float) and math.isfinite(v) and abs(v) > 3.4028235e38)

    if not (isinstance(rows, list) and len(rows) >= 1
            and all(isinstance(r, list) and len(r) == N_FEATURES for r in rows)):
        return False
    verdicts = [number(v) for r in rows for v in r]
    if any(v is False for v in verdicts):
        return False
    return None if any(v is None for v in verdicts) else True


@st.composite
def rest_deep_nesting(draw) -> RestCase:
    depth = draw(st.sampled_from([33, 64, 500, 999, 1_000, 5_000, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = opener * depth + "1" + closer * depth
    where = draw(st.sampled_from(["instances", "top", "signature_name"]))
    if where == "top":
        text = inner
    else:
        text = '{"%s": %s}' % (where, inner)
    return RestCase("deep_nesting", text.encode())


@st.composite
def rest_huge_numbers(draw) -> RestCase:
    big = draw(st.sampled_from(["1e400", "-1e400", "1" + "0" * 400, "1" + "0" * 5000, "-" + "9" * 30,
                                "18446744073709551616", "9223372036854775808", "1e-400", "3.5e38", "0." + "0" * 400 + "1"]))
    row = ["0.1"] * N_FEATURES
    row[draw(st.integers(0, N_FEATURES - 1))] = big
    text = '{"instances": [[%s]]}' % ",".join(row)
    try:
        valid = _is_valid_rows_doc(json.loads(text))
    except ValueError:  # more digits than Python's int-parsing limit: not a number anyone can use
        valid = False
    if big in ("1e400", "-1e400") and valid:
        valid = None  # overflows a double: TF Serving's parser refuses it, Python's reads it as +-inf
    return RestCase("huge_numbers", text.encode(), valid)


@st.composite
def rest_nan_infinity(draw) -> RestCase:
    tokens = ["NaN", "Infinity", "-Infinity", "nan", "inf", "+Infinity", "-NaN", "Infinityx"]
    row = ["0.5"] * N_FEATURES
    for _ in range(draw(st.integers(1, 3))):
        row[draw(st.integers(0, N_FEATURES - 1))] = draw(st.sampled_from(tokens))
    text = '{"instances": [[%s]]}' % ",".join(row)
    valid = all(t in ("NaN", "Infinity", "-Infinity") or t == "0.5" for t in row)
    return RestCase("nan_infinity", text.encode(), valid)


@st.composite
def rest_wrong_types(draw) -> RestCase:
    bad = draw(st.sampled_from([None, True, "1.0", {"x": 1}, [], [1, 2], "", {"b64": "AAAA"}]))
    shape = draw(st.sampled_from(["in_row", "whole_instances", "row", "inputs", "signature", "object_rows"]))
    row: list[Any] = [0.1] * N_FEATURES
    if shape == "in_row":
        row[draw(st.integers(0, N_FEATURES - 1))] = bad
        doc: Any = {"instances": [row]}
    elif shape == "whole_instances":
        doc = {"instances": bad}
    elif shape == "row":
        doc = {"instances": [row, bad]}
    elif shape == "inputs":
        doc = {"inputs": {INPUT: bad}}
    elif shape == "signature":
        doc = {"instances": [row], "signature_name": bad if bad not in ("", None) else 7}
    else:
        doc = {"instances": [{INPUT: row}, {"other": row}]}
    return RestCase("wrong_types", _dump(doc))


@st.composite
def rest_huge_arrays(draw) -> RestCase:
    """Large but under the body limit: wrong widths, ragged, one enormous row, many tiny rows."""
    form = draw(st.sampled_from(["wide_row", "ragged", "deep_rows", "empty"]))
    if form == "wide_row":
        n = draw(st.sampled_from([11, 10_000, 200_000]))
        text = '{"instances": [[%s]]}' % ",".join(["0"] * n)
    elif form == "ragged":
        text = '{"instances": [%s]}' % ",".join(["[" + ",".join(["0"] * (N_FEATURES + (i % 2))) + "]"
                                                  for i in range(20_000)])
    elif form == "deep_rows":
        text = '{"instances": [%s]}' % ",".join(["[[0]]"] * 50_000)
    else:
        text = '{"instances": [%s]}' % ",".join(["[]"] * 50_000)
    return RestCase("huge_arrays", text.encode())


@st.composite
def rest_invalid_utf8(draw) -> RestCase:
    body = bytearray(_dump({"instances": [[0.1] * N_FEATURES], "signature_name": DEFAULT_SIGNATURE}))
    junk = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xfe\xff"]))
    i = draw(st.integers(0, len(body)))
    body[i:i] = junk
    return RestCase("invalid_utf8", bytes(body))


def oversized_case(limit_bytes: int) -> RestCase:
    """A body one KiB over the server's --max-request-bytes (the server must refuse it without reading it)."""
    n = limit_bytes // 2 + 512
    return RestCase("oversized", b'{"instances": [[' + b"0," * n + b'0]]}')


def rest_strategies(limit_bytes: int | None = None) -> dict:
    """One strategy per REST kind (driven separately so every kind gets its share of examples)."""
    out = {"random_json": rest_random_json(), "mutated": rest_mutated(), "deep_nesting": rest_deep_nesting(),
           "huge_numbers": rest_huge_numbers(), "nan_infinity": rest_nan_infinity(),
           "wrong_types": rest_wrong_types(), "huge_arrays": rest_huge_arrays(), "invalid_utf8": rest_invalid_utf8()}
    if limit_bytes:
        out["oversized"] = st.just(oversized_case(limit_bytes))
    return out


def check_rest_answer(case: RestCase, status: int, body: bytes) -> str | None:
    if status >= 500:
        return f"HTTP {status} (server error) for a client's mistake: {body[:200]!r}"
    if case.valid is None and status == 200:
        return None
    if case.valid:
        if status != 200:
            return f"valid body refused with HTTP {status}: {body[:200]!r}"
        return None
    if case.kind == "oversized" and status != 413:
        return f"oversized body answered HTTP {status}, expected 413"
    if status == 200:
        return f"invalid body accepted with HTTP 200: {body[:200]!r}"
    if not 400 <= status < 500:
        return f"HTTP {status}, expected 4xx"
    try:
        doc = json.loads(body)
    except ValueError:
        return f"HTTP {status} error body is not JSON: {body[:200]!r}"
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str) or not doc["error"]:
        return f"HTTP {status} error body has no 'error' message: {body[:200]!r}"
    return None


# ------------------------------------------------------------------------------------------------ gRPC


@dataclass
class GrpcCase:
    kind: str
    request: Any  # PredictRequest
    valid: bool = False
    rows: int = 0
    note: str = ""

    def __repr__(self) -> str:
        inputs = {k: (v.dtype, [d.size for d in v.tensor_shape.dim], len(v.tensor_content), len(v.float_val),
                      len(v.string_val)) for k, v in self.request.inputs.items()}
        return f"GrpcCase(kind={self.kind!r}, valid={self.valid}, inputs={inputs}, note={self.note!r})"


def _types():
    return protos.get("types_pb2")


def all_dtypes() -> list[int]:
    """Every DataType enum value (including the *_REF ones) plus numbers the enum does not define."""
    t = _types()
    return sorted(set(t.DataType.values())) + [-1, 999, 2**31 - 1]


_VALUE_FIELDS = ["float_val", "double_val", "int_val", "int64_val", "bool_val", "string_val", "half_val",
                 "uint32_val", "uint64_val", "dcomplex_val", "scomplex_val"]


def _fill(tensor: Any, field_name: str, n: int) -> None:
    target = getattr(tensor, field_name)
    if field_name == "string_val":
        target.extend([b"x" * 3] * n)
    elif field_name == "bool_val":
        target.extend([True] * n)
    elif field_name in ("float_val", "double_val", "scomplex_val", "dcomplex_val"):
        target.extend([0.25] * n)
    else:
        target.extend([1] * n)


DIM_VALUES = st.one_of(st.integers(-3, 12), st.sampled_from([-2**63, -1, 0, 2**31, 2**40, 2**62, 2**63 - 1]))


@st.composite
def grpc_tensor_cases(draw) -> GrpcCase:
    """A PredictRequest whose single 'inputs' tensor is random in dtype, shape and content."""
    p = protos.load()
    t = _types()
    req = p["predict_pb2"].PredictRequest()
    req.model_spec.name = MODEL
    tensor = req.inputs[INPUT]
    dtype = draw(st.one_of(st.just(t.DT_FLOAT), st.sampled_from(all_dtypes())))
    tensor.dtype = dtype
    kind = "dtype" if dtype != t.DT_FLOAT else "shape_content"
    if draw(st.integers(0, 9)) == 0:
        tensor.tensor_shape.unknown_rank = True
        kind = "unknown_rank"
    dims = draw(st.lists(DIM_VALUES, min_size=0, max_size=4))
    if draw(st.booleans()):  # keep many cases near-valid, so content checks are exercised, not just the rank
        dims = [draw(st.integers(1, 4)), N_FEATURES]
    for d in dims:
        tensor.tensor_shape.dim.add().size = d
    count = math.prod(dims) if dims and all(d >= 0 for d in dims) else (1 if not dims else -1)
    content = draw(st.sampled_from(["tensor_content", "values", "one_value", "none", "string", "both"]))
    if content in ("tensor_content", "both"):
        exact = count > 0 and count * 4 < 1_000_000 and draw(st.booleans())
        nbytes = count * 4 if exact else draw(st.integers(0, 4096))
        tensor.tensor_content = bytes(nbytes)
    if content in ("values", "both"):
        exact = 0 < count < 100_000 and draw(st.booleans())
        n = count if exact else draw(st.integers(0, 64))
        _fill(tensor, draw(st.sampled_from(_VALUE_FIELDS)) if dtype != t.DT_FLOAT or not exact else "float_val", n)
    elif content == "one_value":
        _fill(tensor, "float_val", 1)
    elif content == "string":
        _fill(tensor, "string_val", draw(st.integers(1, 20)))
        kind = "string_content"
    if any(d < 0 for d in dims):
        kind = "negative_dim"
    elif any(d >= 2**31 for d in dims):
        kind = "enormous_dim"
    valid, rows = grpc_case_is_valid(req)
    return GrpcCase(kind, req, valid, rows)


@st.composite
def grpc_input_set_cases(draw) -> GrpcCase:
    """Right tensor, wrong set of inputs: extra unknown inputs, missing input, renamed, empty map."""
    p = protos.load()
    req = p["predict_pb2"].PredictRequest()
    req.model_spec.name = MODEL
    form = draw(st.sampled_from(["extra", "renamed", "empty", "bad_signature", "bad_output_filter"]))

    def good(name: str) -> None:
        fill_tensor_proto(req.inputs[name], np.full((1, N_FEATURES), 0.1, np.float32), typed_fields=True)

    names = st.text(min_size=1, max_size=12)
    if form == "extra":
        good(INPUT)
        for extra in draw(st.lists(names.filter(lambda s: s != INPUT), min_size=1, max_size=3, unique=True)):
            good(extra)
    elif form == "renamed":
        good(draw(names.filter(lambda s: s != INPUT)))
    elif form == "bad_signature":
        good(INPUT)
        req.model_spec.signature_name = draw(names.filter(lambda s: s not in (DEFAULT_SIGNATURE, "reconstruct")))
    elif form == "bad_output_filter":
        good(INPUT)
        req.output_filter.append(draw(names.filter(lambda s: s != "predictions")))
    return GrpcCase("input_set", req, False, 0, form)


def grpc_case_is_valid(req: Any, max_elements: int | None = None) -> tuple[bool, int]:
    """Independent model of a valid request for residual_regressor: float32 [n>=1, 10], values that match."""
    t = _types()
    if set(req.inputs) != {INPUT}:
        return False, 0
    tensor = req.inputs[INPUT]
    if tensor.dtype != t.DT_FLOAT or tensor.tensor_shape.unknown_rank:
        return False, 0
    dims = [d.size for d in tensor.tensor_shape.dim]
    if len(dims) != 2 or dims[1] != N_FEATURES or dims[0] < 1:
        return False, 0
    count = dims[0] * dims[1]
    if max_elements is not None and count > max_elements:
        return False, 0
    if tensor.tensor_content:
        return len(tensor.tensor_content) == 4 * count, dims[0]
    n = len(tensor.float_val)
    return (n == count or n == 1), dims[0]


def check_grpc_answer(case: GrpcCase, code: str, response: Any | None, max_elements: int | None = None) -> str | None:
    valid, rows = grpc_case_is_valid(case.request, max_elements) if case.kind != "input_set" else (False, 0)
    if valid:
        if code != "OK":
            return f"valid request answered {code}"
        out = response.outputs.get("predictions") if response is not None else None
        dims = [d.size for d in out.tensor_shape.dim] if out is not None else None
        if dims != [rows, 1]:
            return f"valid request answered with output shape {dims}, expected [{rows}, 1]"
        return None
    if code != "INVALID_ARGUMENT":
        return f"invalid request answered {code}, expected INVALID_ARGUMENT"
    return None


# ------------------------------------------------------------------------------------------------ names / paths

TRAVERSAL_NAMES = [
    "..", "../..", "../bait_model", "../../bait_model", "residual_regressor/../../bait_model",
    "residual_regressor/1", "residual_regressor/..", "/etc/passwd", "/", "./residual_regressor",
    "residual_regressor\x00", "\x00", "residual_regressor\x00../bait_model", "%2e%2e", "..%2fbait_model",
    "．．/bait_model", "residual_regressor\u202e", "RESIDUAL_REGRESSOR", "residual_regressor ", "ｒｅｓｉｄｕａｌ",
    "..\\bait_model", "C:\\Windows", "~", "~root", "$HOME", "bait_model", "created_by_server",
    "../created_by_server", "../../created_by_server", "residual_regressor/../created_by_server",
]


@dataclass(frozen=True)
class NameCase:
    kind: str  # model_name | version_label
    name: str
    label: str = ""

    def __repr__(self) -> str:
        return f"NameCase({self.kind}, name={self.name!r}, label={self.label!r})"


_odd_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24)


@st.composite
def name_cases(draw) -> NameCase:
    pieces = draw(st.lists(st.one_of(st.sampled_from(["..", "/", "\x00", ".", "\\", "%2f", "bait_model",
                                                      "created_by_server", "residual_regressor", "\u2215", "\uff0e"]),
                                     _odd_text), min_size=1, max_size=5))
    name = draw(st.one_of(st.sampled_from(TRAVERSAL_NAMES), st.just("".join(pieces))))
    if name == MODEL:
        name = name + "/.."
    if draw(st.booleans()):
        return NameCase("model_name", name)
    return NameCase("version_label", MODEL, name)


def rest_paths_for(case: NameCase) -> list[tuple[str, str]]:
    """(method, path) pairs a client could send for this name: percent-encoded (the honest form)."""
    name = quote(case.name, safe="")
    if case.kind == "version_label":
        base = f"/v1/models/{MODEL}/labels/{quote(case.label, safe='')}"
    else:
        base = f"/v1/models/{name}"
    return [("GET", base), ("GET", base + "/metadata"), ("POST", base + ":predict")]


def check_name_grpc(code: str) -> str | None:
    # INVALID_ARGUMENT is also an honest refusal (e.g. a label that is not a label); never OK or a server error.
    if code in ("NOT_FOUND", "INVALID_ARGUMENT"):
        return None
    return f"hostile model name/label answered {code}, expected NOT_FOUND"


def check_name_rest(status: int, body: bytes) -> str | None:
    if status in (404, 400):
        try:
            if isinstance(json.loads(body).get("error"), str):
                return None
        except (ValueError, AttributeError):
            pass
        return f"HTTP {status} without a JSON error body: {body[:120]!r}"
    return f"hostile model name/label answered HTTP {status}, expected 404: {body[:160]!r}"


@dataclass
class Tally:
    """Cases tried and problems found, by kind (what the report prints)."""

    tried: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)  # a few examples per kind

    def add(self, kind: str, problem: str | None, example: Any = None) -> None:
        self.tried[kind] = self.tried.get(kind, 0) + 1
        if problem:
            self.failures[kind] = self.failures.get(kind, 0) + 1
            lst = self.problems.setdefault(kind, [])
            if len(lst) < 5:  # keep a few examples per kind, not thousands
                lst.append(f"{problem} <- {example!r}"[:500])

    @property
    def total(self) -> int:
        return sum(self.tried.values())

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def merge(self, other: "Tally") -> "Tally":
        for k, v in other.tried.items():
            self.tried[k] = self.tried.get(k, 0) + v
        for k, v in other.failures.items():
            self.failures[k] = self.failures.get(k, 0) + v
        for k, v in other.problems.items():
            self.problems.setdefault(k, []).extend(v[: max(0, 5 - len(self.problems.get(k, [])))])
        return self
