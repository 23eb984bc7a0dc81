"""The model zoo (benchmarks/targets/zoo.py) against the oracle, TensorFlow's v1 Session loader.

One embedded server serves the zoo; for every model x signature x sample (batch 1 and 3, the empty-example
error case) the server's gRPC and REST answers (Predict, Classify / Regress / MultiInference where the
signature fits) must equal the Session's. The default suite runs the fast subset (one model per loader
difference); `make zoo` (ZOO=all) runs every model.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.targets.zoo import ZooModel, write_zoo, zoo_models
from tests.server_fixture import running_server

WHOLE_ZOO = os.environ.get("ZOO") == "all"
MODELS = zoo_models(fast_only=not WHOLE_ZOO)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("zoo")
    config = write_zoo(base, MODELS)
    from serving.check_model import ServerClient

    with running_server(config) as server:
        client = ServerClient(server.grpc_target, server.rest_url)
        yield base, client
        client.close()


def _rows(base: Path, client, model: ZooModel):
    from serving.check_model import check_signature
    from serving.session_bundle import SessionBundle

    bundle = SessionBundle(base / model.name / "1")
    rng = np.random.default_rng(0)
    try:
        return [row for name in sorted(bundle.signature_defs)
                for row in check_signature(bundle, client, model.name, name, rng)]
    finally:
        bundle.close()


@pytest.mark.parametrize("model", MODELS, ids=[m.name for m in MODELS])
def test_server_answers_as_the_session_does(zoo, model: ZooModel) -> None:
    from serving.check_model import format_table

    rows = _rows(*zoo, model)
    assert rows, f"{model.name}: no answers compared"
    apis = {r.verdict.api.split(" (")[0] for r in rows}
    assert {"gRPC Predict", "REST predict"} <= apis
    if model.session_fails:
        # The Session refuses every call (as TF Serving does); the embedded server answers them.
        wrong = [r for r in rows if not (r.verdict.problem or "").startswith(
            f"the Session refused it ({model.session_fails}") or "server answered OK" not in r.verdict.problem]
    else:
        wrong = [r for r in rows if r.verdict.problem]
    assert not wrong, format_table(model.name, wrong)


def test_fast_subset_covers_each_loader_difference() -> None:
    """The default run keeps one model of each kind the loaders treat differently."""
    names = {m.name for m in zoo_models(fast_only=True)}
    assert {"tf1_legacy_placeholder", "tf1_parse_sparse", "tf1_vocabulary_table", "tf1_reference_variables",
            "tf1_unknown_shapes", "tf1_strings", "tf2_dtypes", "keras3_export"} <= names
    assert len(zoo_models()) >= 20


def test_inference_apis_are_compared(zoo) -> None:
    """Classify, Regress and MultiInference answers are checked, not only Predict (on the TF1 model the TF2
    loader refuses, which the server runs through a Session)."""
    base, client = zoo
    model = next(m for m in MODELS if m.name == "tf1_legacy_placeholder")
    apis = {r.verdict.api.split(" (")[0] for r in _rows(base, client, model)}
    assert {"gRPC Classify", "REST classify", "gRPC Regress", "REST regress", "gRPC MultiInference"} <= apis
