"""Command-line flags that say what to send to a served model, shared by grpc/rest/sweep/loadgen and
perf-analyzer, and the check that every named model is served before any load starts."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.requests.tensors import InputOptions, parse_feature, parse_int_range, parse_shape
from benchmarks.requests.discovery import discover_models
from benchmarks.requests.signature import check_models_served
from benchmarks.commands.common import target_of

INPUTS_HELP = """\
Requests for any model: without a manifest in --models-dir (or with any of the flags below), the load
generator asks the server for the model's signature (GetModelMetadata, REST /metadata) and sends every
input with its dtype and shape: -1 in the first dimension is the batch size, other -1s come from --shape;
values are seeded random per dtype, or rows of --input-data cycled to each batch size."""


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inputs", INPUTS_HELP)
    g.add_argument("--signature", default="serving_default", help="signature to call (default serving_default)")
    g.add_argument("--method", choices=["auto", "predict", "classify", "regress"], default="auto",
                   help="API to call; auto = the signature's method_name (default)")
    g.add_argument("--shape", action="append", default=[], metavar="NAME:d1,d2,...",
                   help="dimensions of input NAME after the batch (perf_analyzer's spelling), for its -1s; repeat")
    g.add_argument("--input-data", type=Path, default=None, metavar="FILE",
                   help="request data: a TF Serving REST body (instances, inputs or examples) or perf_analyzer's "
                        "input-data JSON ({\"data\": [...]})")
    g.add_argument("--string-length", type=int, default=16, help="bytes per random string (default 16)")
    g.add_argument("--int-range", default="0,100", metavar="LOW,HIGH",
                   help="random integers (ids) from [LOW, HIGH) (default 0,100)")
    g.add_argument("--feature", action="append", default=[], metavar="NAME:float|int64|bytes[:LENGTH]",
                   help="classify/regress: one tf.Example feature to fill with random values; repeat")
    g.add_argument("--allow-errors", action="store_true",
                   help="measure even when the probe request fails (errors are counted by status); by default "
                        "the run stops with the server's message")


def input_options(args: argparse.Namespace) -> InputOptions:
    """The flags as InputOptions (ValueError, hence exit 2, naming a malformed flag)."""
    if args.string_length < 1:
        raise ValueError(f"--string-length must be >= 1, not {args.string_length}")
    if args.input_data is not None and not Path(args.input_data).is_file():
        raise ValueError(f"--input-data {args.input_data}: no such file")
    return InputOptions(signature=args.signature, method=args.method,
                        shapes=dict(parse_shape(s) for s in args.shape), input_data=args.input_data,
                        string_length=args.string_length, int_range=parse_int_range(args.int_range),
                        features=dict(parse_feature(f) for f in args.feature))


def served_models(args: argparse.Namespace, kind: str) -> list[tuple[str, int]]:
    """(model, n_features) for each model to call; n_features 0 = describe it from the server's signature.
    Checks that the server has every named model first (UnknownModel, one line, before any load)."""
    known = {m.name: m.n_features for m in discover_models(args.models_dir)} if args.models_dir else {}
    if not args.models and not known:
        raise SystemExit(f"error: no models under {args.models_dir}; pass --models NAME "
                         "or export first (python -m export)")
    out = []
    for spec in args.models or sorted(known):
        name, _, nf = spec.partition(":")
        if nf and not nf.isdigit():
            raise ValueError(f"--models {spec!r}: expected NAME or NAME:N_FEATURES")
        out.append((name, int(nf) if nf else known.get(name, args.n_features)))
    check_models_served(kind, target_of(args, kind), [n for n, _ in out], sorted(known))
    return out

