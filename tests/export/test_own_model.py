"""`python -m export keras` / `savedmodel`: a user's own model through the project's export path, and the
errors a user will hit, each one line naming the cause, with nothing left in --models-dir."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from export.contract import KERAS_FILE, MANIFEST_FILE, WARMUP_FILE, list_versions
from tests.own_models import (FUNCTIONAL, IMPORTED, PACKAGE, SUBCLASSED, OwnModels, functional_model, import_package,
                              run_cli, write_package)


def _manifest(models: OwnModels, name: str) -> dict:
    return json.loads((models.out / name / "1" / MANIFEST_FILE).read_text())


def test_keras_models_are_published_with_provenance_warmup_and_keras_file(own_models: OwnModels) -> None:
    from export.model_config import read_model_config
    from export.warmup import read_warmup_file, warmup_inputs

    m = _manifest(own_models, FUNCTIONAL)
    source = own_models.keras_files[FUNCTIONAL]
    assert m["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert m["source"]["samples"].endswith("functional.npz") and m["structure"] == "dict"
    assert m["keras_version"] and m["tensorflow_version"].startswith("2.")
    assert m["inputs"] == {"features": {"dtype": "float32", "shape": [None, 3]},
                           "token": {"dtype": "int32", "shape": [None, 1]}}
    assert m["signatures"]["serving_default"]["inputs"] == m["inputs"]
    kept = own_models.out / FUNCTIONAL / "1" / KERAS_FILE
    assert kept.read_bytes() == source.read_bytes()  # the eager path serves exactly the file the hash names
    records = [warmup_inputs(r) for r in read_warmup_file(own_models.out / FUNCTIONAL / "1" / WARMUP_FILE)]
    assert sorted(len(x["token"]) for _, x in records) == [1, 8]
    np.testing.assert_array_equal(records[0][1]["token"][:1], own_models.samples[FUNCTIONAL]["token"][:1])

    sub = _manifest(own_models, SUBCLASSED)
    assert sub["source"]["class"] == f"{PACKAGE}.layers.ScaledDense"
    assert sub["source"]["imports"] == [f"{PACKAGE}.layers"]
    assert set(sub["signatures"]) == {"serving_default", "half"}
    assert {e["method"] for e in sub["endpoints"]} == {"__call__", "halve"}
    configs = read_model_config(own_models.out / "models.config").model_config_list.config
    assert sorted(c.name for c in configs) == sorted([FUNCTIONAL, SUBCLASSED, IMPORTED])


def test_savedmodel_import_is_published_without_keras_file(own_models: OwnModels, tmp_path: Path) -> None:
    m = _manifest(own_models, IMPORTED)
    assert m["source"]["kind"] == "savedmodel" and m["keras_file"] is None
    assert not (own_models.out / IMPORTED / "1" / KERAS_FILE).exists()
    assert (own_models.out / IMPORTED / "1" / WARMUP_FILE).is_file()
    # importing again makes the next version beside the first (verification is the fixture's, above)
    from export.own_model import OwnModelConfig, import_saved_model

    out = tmp_path / "models"
    for _ in range(2):
        import_saved_model(OwnModelConfig(own_models.out / IMPORTED / "1", "again", out, verify=False))
    assert list_versions(out / "again") == [1, 2]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A models root that already holds something: a failed export must leave it exactly as it was."""
    out = tmp_path / "models"
    (out / "existing" / "1").mkdir(parents=True)
    (out / "models.config").write_text("model_config_list {}\n")
    return out


def _fails_with(argv: list[str], out: Path, message: str, capsys) -> None:
    from export.cli import main

    before = _tree(out)
    assert main([*argv, "--models-dir", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert _tree(out) == before


def test_a_file_that_is_not_a_keras_archive(out_dir: Path, tmp_path: Path, capsys) -> None:
    fake = tmp_path / "model.keras"
    fake.write_text("not a zip")
    _fails_with(["keras", str(fake), "--name", "m"], out_dir, f"{fake} is not a Keras archive", capsys)
    _fails_with(["savedmodel", str(tmp_path), "--name", "m"], out_dir,
                f"{tmp_path} is not a SavedModel directory (no saved_model.pb in it)", capsys)


def test_an_unregistered_custom_class_is_named_with_the_fix(own_models: OwnModels, out_dir: Path) -> None:
    """A fresh process that was not told to import the package (this one has it imported already)."""
    before = _tree(out_dir)
    proc = run_cli("export", "keras", str(own_models.keras_files[SUBCLASSED]), "--name", "m", "--models-dir", str(out_dir),
                   env=own_models.env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {own_models.keras_files[SUBCLASSED]}: custom class 'ScaledDense' (registered as "
        f"'{PACKAGE}>ScaledDense') is not registered with Keras: pass --import MODULE, the module that defines it")
    assert _tree(out_dir) == before


def test_a_model_without_an_input_shape(out_dir: Path, tmp_path: Path, capsys) -> None:
    layers = import_package(write_package(tmp_path / "site"))
    unbuilt = tmp_path / "unbuilt.keras"
    layers.ScaledDense(2).save(unbuilt)
    _fails_with(["keras", str(unbuilt), "--name", "m", "--import", f"{PACKAGE}.layers"], out_dir,
                "ScaledDense has no defined input shape: call it once on a batch", capsys)


def test_an_input_dtype_tf_serving_cannot_carry(out_dir: Path, tmp_path: Path, capsys) -> None:
    import keras

    z = keras.Input((2,), dtype="complex64", name="z")
    path = tmp_path / "complex.keras"
    keras.Model(z, keras.ops.real(z)).save(path)
    _fails_with(["keras", str(path), "--name", "m"], out_dir,
                "input 'z' has dtype complex64, which TF Serving's APIs cannot carry", capsys)


@pytest.mark.parametrize("samples, message", [
    ({"features": np.zeros((2, 3), np.float32), "tokens": np.zeros((2, 1), np.int32)},
     "holds inputs ['features', 'tokens'], the model takes ['features', 'token']"),
    ({"features": np.zeros((2, 4), np.float32), "token": np.zeros((2, 1), np.int32)},
     "input 'features' has shape [2, 4], the model takes [None, 3]"),
])
def test_samples_that_do_not_fit_the_inputs(samples, message, out_dir: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "functional.keras"
    functional_model().save(path)
    np.savez(tmp_path / "samples.npz", **samples)
    _fails_with(["keras", str(path), "--name", "m", "--sample-data", str(tmp_path / "samples.npz")], out_dir,
                message, capsys)
    (tmp_path / "samples.json").write_text(json.dumps({"instances": [{"features": [1, 2, 3]}]}))
    _fails_with(["keras", str(path), "--name", "m", "--sample-data", str(tmp_path / "samples.json")], out_dir,
                "input names do not match signature", capsys)
