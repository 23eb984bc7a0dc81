"""Shared fixtures. The expensive ones, real exports, are built once per test run, whatever the number of
pytest-xdist workers (tests/shared_fixture.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import benchmarks  # noqa: F401 -- before any TensorFlow import: loads pycurl's libcurl first (see there)
from tests.shared_fixture import shared_dir

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def exported_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All three models exported with short training, residual_regressor twice (v1 and v2).

    Verification is skipped here to keep the session short: tests/export/test_pipeline.py runs the full
    fresh-process verification on its own export.
    """
    from export.pipeline import ExportConfig, export_models

    def build(out: Path) -> None:
        export_models(ExportConfig(out_dir=out, epochs=3, verify=False))
        export_models(ExportConfig(models=("residual_regressor",), out_dir=out, epochs=3, verify=False, seed=7))

    return shared_dir(tmp_path_factory, "models", build)


@pytest.fixture(scope="session")
def own_models(tmp_path_factory: pytest.TempPathFactory):
    """Three models of a user's own (tests/own_models.py), exported and verified through `python -m export`."""
    from tests.own_models import build_and_export, describe

    return describe(shared_dir(tmp_path_factory, "own", build_and_export))
