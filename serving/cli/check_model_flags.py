"""`python -m serving check-model`'s flags, apart from the command (serving/cli/check_model.py): building the
parser must not import TensorFlow, which the command's oracle needs (4.4 s for `python -m serving --help` when it
did, 0.3 s without)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_check_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Load a SavedModel into TensorFlow's v1 Session (what tensorflow_model_server runs) and "
                          "into a throwaway embedded server; send seeded inputs built from each signature over gRPC "
                          "and REST (Predict; Classify/Regress/MultiInference where the signature fits) and print, per "
                          "signature, how far each answer is from the Session's. Exit 0: all agree; 1: a mismatch; "
                          "2: bad arguments or not a SavedModel.")
    parser.add_argument("path", type=Path, help="a SavedModel directory, or a base path holding version dirs")
    parser.add_argument("--signature", action="append", default=None, help="check only this signature (repeatable)")
    parser.add_argument("--samples", type=int, default=1, help="seeded inputs per signature and batch size (1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs (0)")
    parser.add_argument("--mode", choices=("graph", "xla"), default="graph", help="the server's mode (graph)")
