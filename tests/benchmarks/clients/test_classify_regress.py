"""Classify and Regress requests (tf.Example rows) against the embedded server, from a SavedModel with
classify and regress signatures written by the test (TF1-style graph: TF Serving's classic
Estimator-export layout, one DT_STRING input of serialized tf.Examples parsed inside the graph).

Request building itself is tested offline in tests/benchmarks/requests/test_model_inputs.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.requests.tensors import InputOptions, parse_feature
from benchmarks.commands.served import ServedConfig, run_served
from benchmarks.results.schema import ResultWriter, capture_environment
from tests.server_fixture import faults_in, running_server

MODEL = "census_like"
FEATURES = dict(parse_feature(f) for f in ("x:float:2", "ids:int64:3"))


def _write_model(path: Path) -> None:
    import tensorflow as tf

    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32),
                                                  "ids": tf.io.FixedLenFeature([3], tf.int64)})
        score = tf.reduce_sum(parsed["x"], 1) + tf.cast(tf.reduce_sum(parsed["ids"], 1), tf.float32)
        scores = tf.stack([score, -score], axis=1)
        classes = tf.tile(tf.constant([["high", "low"]]), [tf.shape(score)[0], 1])
        builder = tf.compat.v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
            "serving_default": tf.compat.v1.saved_model.classification_signature_def(serialized, classes, scores),
            "regress": tf.compat.v1.saved_model.regression_signature_def(serialized, score[:, None])})
        builder.save()


@pytest.fixture(scope="module")
def classify_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("classify")
    _write_model(base / MODEL / "1")
    config = base / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{base / MODEL}" '
                      'model_platform: "tensorflow" }}\n')
    with running_server(config) as server:
        yield server


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["grpc", "rest"])
@pytest.mark.parametrize("signature,method", [("serving_default", "classify"), ("regress", "regress")])
def test_classify_and_regress_run_with_zero_errors(tmp_path, classify_server, kind, signature, method):
    target = classify_server.grpc_target if kind == "grpc" else classify_server.rest_url.removeprefix("http://")
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="embedded"))
    cfg = ServedConfig(kind=kind, target=target, models=[(MODEL, 0)], batch_sizes=(1, 4), concurrencies=(2,),
                       window_s=0.3, fixed_windows=2, warmup_s=0.1, server_label="embedded", progress=False,
                       inputs=InputOptions(signature=signature, features=FEATURES))
    rows = run_served(cfg, w)
    assert [(r.batch_size, r.concurrency, r.kind) for r in rows] == [(1, 2, kind), (4, 2, kind)]
    for row in rows:
        assert row.n > 0 and row.errors == 0 and row.errors_by_code == {}, row.warnings
        assert row.stable is None and faults_in(row.warnings) == [], row.warnings  # 2 windows: stability not judged
