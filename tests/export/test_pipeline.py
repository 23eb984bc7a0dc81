"""`python -m export` end to end, as a user runs it: publish, verify, configs, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.contract import KERAS_FILE, MANIFEST_FILE, WARMUP_FILE, list_versions
from tests.conftest import REPO_ROOT


def run_export(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def leftovers(root: Path) -> list[Path]:
    """Staging directories or non-integer version entries that TF Serving could trip over."""
    return [p for p in root.rglob(".staging-*")]


@pytest.fixture(scope="module")
def verified_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verified")
    # One epoch: what is checked (layout, manifest, signatures, verification) does not depend on how well it trained
    proc = run_export("--models", "softplus_regressor", "reconstructing_regressor", "--epochs", "1",
                      "--models-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "verified 2 version(s): 2 ok, 0 failed" in proc.stdout
    return out


def test_published_layout_manifest_and_warmup(verified_export: Path):
    from export.warmup import read_warmup_file

    for name in ("softplus_regressor", "reconstructing_regressor"):
        assert list_versions(verified_export / name) == [1]
        vdir = verified_export / name / "1"
        assert (vdir / "saved_model.pb").is_file() and (vdir / "variables").is_dir()
        assert (vdir / KERAS_FILE).is_file()
        manifest = json.loads((vdir / MANIFEST_FILE).read_text())
        assert manifest["model"] == name and manifest["version"] == 1 and manifest["dataset"] == "diabetes"
        assert manifest["n_features"] == 10 and len(manifest["feature_names"]) == 10
        assert manifest["metrics"]["val_mae"] > 0 and manifest["tensorflow_version"].startswith("2.")
        assert manifest["signatures"]["serving_default"]["outputs"] == {"predictions": {"dtype": "float32", "shape": [None, 1]}}
        records = read_warmup_file(vdir / WARMUP_FILE)
        batch_sizes = {r.predict_log.request.inputs["inputs"].tensor_shape.dim[0].size for r in records}
        assert batch_sizes == {1, 8, 64, 256} and len(records) <= 1000
    recon = json.loads((verified_export / "reconstructing_regressor/1" / MANIFEST_FILE).read_text())
    assert set(recon["signatures"]) == {"serving_default", "reconstruct"}
    assert recon["signatures"]["reconstruct"]["outputs"]["reconstruction_error"]["shape"] == [None]
    assert recon["metrics"]["reconstruction_loss"] > 0
    assert leftovers(verified_export) == []


def test_model_configs_parse_into_the_official_proto(verified_export: Path):
    from export.model_config import read_model_config

    container = read_model_config(verified_export / "models.config")
    local = read_model_config(verified_export / "models.local.config")
    by_name = {c.name: c for c in container.model_config_list.config}
    assert set(by_name) == {"softplus_regressor", "reconstructing_regressor"}
    entry = by_name["softplus_regressor"]
    assert entry.base_path == "/models/softplus_regressor" and entry.model_platform == "tensorflow"
    assert entry.model_version_policy.latest.num_versions == 2
    assert dict(entry.version_labels) == {"stable": 1, "canary": 1}
    for c in local.model_config_list.config:
        assert Path(c.base_path).is_absolute() and list_versions(Path(c.base_path)) == [1]


def test_signatures_through_tensorflow_loader(verified_export: Path):
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(str(verified_export / "reconstructing_regressor/1"))
    x = tf.constant(np.zeros((3, 10), np.float32))
    assert loaded.signatures["serving_default"](inputs=x)["predictions"].shape == (3, 1)
    rec = loaded.signatures["reconstruct"](inputs=x)
    assert rec["reconstruction"].shape == (3, 10) and rec["reconstruction_error"].shape == (3,)


def test_verify_command_catches_a_tampered_version(verified_export: Path, tmp_path: Path):
    # Copy one model and damage its weights: the SavedModel no longer equals the eager Keras model.
    root = tmp_path / "models"
    shutil.copytree(verified_export / "softplus_regressor", root / "softplus_regressor")
    import tensorflow as tf

    vdir = root / "softplus_regressor" / "1"
    loaded = tf.saved_model.load(str(vdir))
    for v in loaded.variables:
        v.assign(v + 0.5)
    tf.saved_model.save(loaded, str(tmp_path / "resaved"), signatures=loaded.signatures)
    shutil.rmtree(vdir / "variables")
    shutil.copytree(tmp_path / "resaved" / "variables", vdir / "variables")
    shutil.copy(tmp_path / "resaved" / "saved_model.pb", vdir / "saved_model.pb")
    proc = subprocess.run([sys.executable, "-m", "export", "verify", "--models-dir", str(root)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[FAIL] SavedModel == eager Keras" in proc.stdout
    assert "0 ok, 1 failed" in proc.stdout


def test_next_export_writes_next_version_and_refuses_an_existing_one(verified_export: Path, tmp_path: Path):
    out = tmp_path / "models"  # a copy: the shared export stays at version 1 for the other tests, in any order
    shutil.copytree(verified_export, out)
    proc = run_export("--models", "softplus_regressor", "--version", "1", "--models-dir", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: softplus_regressor version 1 already exists in {out / 'softplus_regressor'}"
    ]
    proc = run_export("--models", "softplus_regressor", "--epochs", "1", "--no-verify", "--models-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list_versions(out / "softplus_regressor") == [1, 2]
    from export.model_config import read_model_config

    entry = {c.name: c for c in read_model_config(out / "models.config").model_config_list.config}
    assert dict(entry["softplus_regressor"].version_labels) == {"stable": 1, "canary": 2}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "nope"], "error: unknown model 'nope' (choose from residual_regressor, reconstructing_regressor, softplus_regressor)"),
        (["--dataset", "mnist"], "error: unknown dataset 'mnist' (choose from diabetes, california, synthetic)"),
        (["--version", "0"], "error: --version must be a positive integer, got 0"),
    ],
)
def test_bad_arguments_fail_fast_with_one_line(args, message, tmp_path):
    proc = run_export(*args, "--models-dir", str(tmp_path / "m"), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert not any((tmp_path / "m").rglob("saved_model.pb"))


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = run_export("--out", str(blocker / "models"), timeout=60)  # the old name still works
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: output directory {blocker / 'models'} is not writable")


def test_failed_verification_publishes_nothing(tmp_path, monkeypatch):
    import export.verify
    from export.pipeline import ExportConfig, export_models

    def refuse(paths, imports=()):
        assert all(p.name.startswith(".staging-") and p.is_dir() for p in paths)
        raise export.verify.VerificationError("planted failure")

    monkeypatch.setattr(export.verify, "verify_in_fresh_process", refuse)
    with pytest.raises(export.verify.VerificationError):
        export_models(ExportConfig(models=("softplus_regressor",), out_dir=tmp_path, epochs=1))
    assert not (tmp_path / "softplus_regressor").exists()  # not even the model directory this export created
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "models.config").exists()


def test_a_version_published_while_exporting_is_never_overwritten(tmp_path, monkeypatch):
    import export.verify
    from export.pipeline import ExportConfig, ExportError, export_models

    planted = tmp_path / "softplus_regressor" / "1"

    def publish_meanwhile(paths, imports=()):  # another exporter publishes version 1 while ours is being verified
        planted.mkdir()
        (planted / "theirs").write_text("kept")

    monkeypatch.setattr(export.verify, "verify_in_fresh_process", publish_meanwhile)
    with pytest.raises(ExportError) as refused:
        export_models(ExportConfig(models=("softplus_regressor",), out_dir=tmp_path, epochs=1))
    assert str(refused.value) == f"{planted} appeared while exporting; refusing to overwrite it"
    assert [p.name for p in planted.iterdir()] == ["theirs"] and (planted / "theirs").read_text() == "kept"
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "models.config").exists()


def test_tensorflows_saved_model_cli_reads_an_exported_version(verified_export: Path):
    """The real console script, once (verification calls its `show --all` code in process, to save a TensorFlow
    import per version): TF's own tool lists the signature with its dtype and shape."""
    cli = Path(sys.executable).with_name("saved_model_cli")
    proc = subprocess.run([str(cli if cli.exists() else "saved_model_cli"), "show", "--all", "--dir",
                           str(verified_export / "reconstructing_regressor" / "1")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = proc.stdout
    assert "signature_def['serving_default']" in shown and "signature_def['reconstruct']" in shown
    assert "dtype: DT_FLOAT" in shown and "shape: (-1, 10)" in shown
