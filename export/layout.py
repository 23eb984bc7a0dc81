"""Where exported things live: TF Serving's ``<base_path>/<version>/`` layout plus our extra files.

TF Serving reads integer-named version directories under a model's base path and ignores everything
else, so work in progress is kept in a dot-directory beside them and renamed into place at the end.
Everything we add to a version lives under ``assets.extra/``, which TF Serving copies along but does not
interpret (apart from the warmup file).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MANIFEST_FILE = "assets.extra/tfserve_bench_manifest.json"
KERAS_FILE = "assets.extra/model.keras"
MODEL_CONFIG_FILE = "models.config"  # base_path /models/<name>: what the official container mounts
LOCAL_MODEL_CONFIG_FILE = "models.local.config"  # absolute local base paths: for the embedded server
CONTAINER_MODELS_ROOT = "/models"

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_model_name(name: str) -> str:
    """Model names become directory names: refuse anything that could walk the filesystem."""
    if not _MODEL_NAME.match(name) or ".." in name:
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def model_dir(models_root: Path, model: str) -> Path:
    return Path(models_root) / check_model_name(model)


def version_dir(models_root: Path, model: str, version: int) -> Path:
    return model_dir(models_root, model) / str(int(version))


def list_versions(model_path: Path) -> list[int]:
    """Integer version directories under a model base path, ascending (what TF Serving would see)."""
    path = Path(model_path)
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())


def read_manifest(version_path: Path) -> dict[str, Any]:
    return json.loads((Path(version_path) / MANIFEST_FILE).read_text())


def load_keras_model(version_path: Path):
    """Rebuild the Keras model of an exported version with the same weights (for eager serving)."""
    import keras

    from export import models  # noqa: F401  (registers the custom classes with Keras)

    return keras.models.load_model(Path(version_path) / KERAS_FILE, compile=False)
