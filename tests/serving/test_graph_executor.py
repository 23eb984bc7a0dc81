"""Graph mode's two executors (serving/execution/runners.py GraphRunner): the v1 Session, TF Serving's route,
wherever a version loads into one and answers a probe as the signature function does, else the TF2 function.

In process, on the project's exported models and on the TF Serving-style models of
benchmarks/targets/tfs_models.py: which executor each signature gets, and that both give the same answers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.targets import tfs_models
from export.contract import find_version_dir
from export.catalog import MODEL_NAMES
from serving.execution.runners import GraphRunner, _probe_inputs, load_runner


def _answers(runner: GraphRunner, rows: int = 5) -> dict[str, dict[str, np.ndarray]]:
    return {name: runner.run(name, _probe_inputs(spec, rows)) for name, spec in runner.signatures.items()}


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_exported_models_run_in_a_session_with_the_functions_answers(exported_models_dir: Path, model: str) -> None:
    version_dir = find_version_dir(exported_models_dir / model, 1).path
    session = GraphRunner(version_dir, model, "session")
    function = GraphRunner(version_dir, model, "function")
    try:
        assert session.executors == {name: "session" for name in session.signatures}
        assert function.executors == {name: "function" for name in function.signatures}
        assert session._loaded is None  # every signature in the Session: the TF2 objects are let go
        got, want = _answers(session), _answers(function)
        assert set(got) == set(want)
        for signature in want:
            for output, value in want[signature].items():
                np.testing.assert_allclose(got[signature][output], value, rtol=1e-5, atol=1e-6)
    finally:
        session.close()
        function.close()


def test_load_runner_passes_the_executor_and_other_modes_ignore_it(exported_models_dir: Path) -> None:
    version_dir = find_version_dir(exported_models_dir / "residual_regressor", 1).path
    runner = load_runner("graph", version_dir, "r", "function")
    assert set(runner.executors.values()) == {"function"}
    runner.close()
    xla = load_runner("xla", version_dir, "r", "session")
    assert xla.mode == "xla" and not hasattr(xla, "executors")
    xla.close()


@pytest.fixture(scope="module")
def tfs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tfs_executors")
    tfs_models.write_half_plus_two_tf1(root / "tf1")
    tfs_models.write_half_plus_two_tf2(root / "tf2")
    tfs_models.write_typed_tf2(root / "typed")
    tfs_models.write_keras_sequential(root / "keras")
    return root


# A Keras 3 model written by tf.saved_model.save (no ExportArchive) loads into a Session without its variables
# ("Could not find variable sequential/y/kernel"), so it keeps the function; TF1 graphs, tf.Module exports and
# tf.Example-parsing signatures run in the Session.
@pytest.mark.parametrize("model, executor", [("tf1", "session"), ("tf2", "session"), ("typed", "session"),
                                             ("keras", "function")])
def test_tf_serving_style_models_keep_their_answers_whichever_executor(tfs_root: Path, model: str,
                                                                       executor: str) -> None:
    version_dir = next(p for p in (tfs_root / model).iterdir() if p.is_dir())
    session = GraphRunner(version_dir, model, "session")
    function = GraphRunner(version_dir, model, "function")
    try:
        assert session.executors == {name: executor for name in session.signatures}
        for name, spec in session.signatures.items():
            probe = _probe_inputs(spec, 3)
            outcomes = []
            for runner in (session, function):
                try:
                    outcomes.append(runner.run(name, probe))
                except Exception as exc:  # tf.Example signatures refuse empty strings: then both must refuse
                    outcomes.append(type(exc).__name__)
            if isinstance(outcomes[1], str):
                assert outcomes[0] == outcomes[1], name
                continue
            assert set(outcomes[0]) == set(outcomes[1]), name
            for output, value in outcomes[1].items():
                if value.dtype == object:
                    assert np.array_equal(outcomes[0][output], value), (name, output)
                else:
                    np.testing.assert_allclose(outcomes[0][output], value, rtol=1e-5, atol=1e-6, err_msg=name)
    finally:
        session.close()
        function.close()
