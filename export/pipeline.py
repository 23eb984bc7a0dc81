"""Train, trace, verify and publish: the whole of ``make export``.

Publishing is atomic per version: everything is written into a hidden staging directory beside the
version directories, verified there in a fresh process, and only then renamed to ``<version>``. TF
Serving polls the base path and must never see half a model; a failure leaves nothing behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from export.data import DATASETS
from export.contract import (ASSETS_EXTRA, KERAS_FILE, MANIFEST_FILE, WARMUP_FILE, list_versions, model_dir,
                             new_version_dir, next_version)
from export.catalog import MODEL_NAMES


class ExportError(RuntimeError):
    """A problem with the request (bad name, existing version, unwritable directory): one clear line."""


@dataclass(frozen=True)
class ExportConfig:
    models: tuple[str, ...] = MODEL_NAMES
    dataset: str = "diabetes"
    features: int = 16  # synthetic only
    out_dir: Path = Path("artifacts/models")
    version: int | None = None  # None: max existing + 1
    epochs: int = 40
    seed: int = 42
    verify: bool = True


@dataclass
class ExportResult:
    model: str
    version: int
    path: str
    metrics: dict
    seconds: float


@dataclass
class _Staged:
    model: str
    version: int
    staging: Path
    target: Path
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0


def validate(config: ExportConfig) -> None:
    """Fail fast, before TensorFlow is imported, on anything the user can fix."""
    unknown = [m for m in config.models if m not in MODEL_NAMES]
    if unknown:
        raise ExportError(f"unknown model {unknown[0]!r} (choose from {', '.join(MODEL_NAMES)})")
    if not config.models:
        raise ExportError("no models to export")
    if config.dataset not in DATASETS:
        raise ExportError(f"unknown dataset {config.dataset!r} (choose from {', '.join(DATASETS)})")
    if config.version is not None and config.version < 1:
        raise ExportError(f"--version must be a positive integer, got {config.version}")
    out = Path(config.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise ExportError(f"output directory {out} is not writable: {exc.strerror or exc}") from exc
    if config.version is not None:
        for name in config.models:
            if config.version in list_versions(model_dir(out, name)):
                raise ExportError(f"{name} version {config.version} already exists in {model_dir(out, name)}")


def _next_version(out: Path, model: str, requested: int | None) -> int:
    return requested if requested is not None else next_version(model_dir(out, model))


def _stage_model(name: str, data, config: ExportConfig, staging: Path, version: int) -> dict:
    import tensorflow as tf
    import keras

    from export.endpoints import endpoints_of, expected_signatures
    from export.models import ReconstructingRegressor
    from export.signatures import write_saved_model
    from export.train import TrainConfig, train_model
    from export.warmup import warmup_requests, write_warmup_file

    model, report = train_model(name, data, TrainConfig(epochs=config.epochs, seed=config.seed))
    write_saved_model(model, data.n_features, staging)
    (staging / ASSETS_EXTRA).mkdir(parents=True, exist_ok=True)
    model.save(staging / KERAS_FILE)
    signatures = expected_signatures(model, data.n_features)
    write_warmup_file(staging / WARMUP_FILE, warmup_requests(name, endpoints_of(model), data.x_val))
    manifest = {
        "model": name,
        "version": version,
        "dataset": data.name,
        "dataset_args": {"name": config.dataset, "features": config.features, "seed": config.seed},
        "n_features": data.n_features,
        "feature_names": data.feature_names,
        "n_train": int(len(data.x_train)),
        "n_val": int(len(data.x_val)),
        "metrics": report.as_dict(),
        "has_add_loss": isinstance(model, ReconstructingRegressor),
        "custom_gradients": name == "softplus_regressor",
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "signatures": {k: asdict(v) for k, v in signatures.items()},
        "keras_file": KERAS_FILE,
        "warmup_file": WARMUP_FILE,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest["metrics"]


def export_models(config: ExportConfig) -> list[ExportResult]:
    """Train and export every requested model; return what was published."""
    validate(config)
    from export.data import load_dataset
    from export.model_config import write_model_configs
    from export.verify import verify_in_fresh_process

    out = Path(config.out_dir)
    data = load_dataset(config.dataset, features=config.features, seed=config.seed)
    print(f">> dataset {data.name}: {len(data.x_train)} train / {len(data.x_val)} validation rows, "
          f"{data.n_features} features", flush=True)
    staged: list[_Staged] = []
    try:
        for name in config.models:
            version = _next_version(out, name, config.version)
            base = model_dir(out, name)
            base.mkdir(parents=True, exist_ok=True)
            # A dot-directory: TF Serving only considers integer-named directories, so it never looks here.
            staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=base))
            shutil.rmtree(staging)  # ExportArchive wants to create the directory itself
            item = _Staged(name, version, staging, new_version_dir(out, name, version))
            staged.append(item)
            start = time.perf_counter()
            item.metrics = _stage_model(name, data, config, staging, version)
            item.seconds = time.perf_counter() - start
            print(f">> {name} v{version}: staged in {item.seconds:.1f}s, val MAE {item.metrics['val_mae']:.2f}", flush=True)
        if config.verify:
            print(f">> verifying {len(staged)} version(s) in a fresh process", flush=True)
            verify_in_fresh_process([s.staging for s in staged])
        results = []
        for item in staged:
            if item.target.exists():  # someone published it meanwhile: never overwrite a version
                raise ExportError(f"{item.target} appeared while exporting; refusing to overwrite it")
            os.rename(item.staging, item.target)  # atomic on one filesystem
            results.append(ExportResult(item.model, item.version, str(item.target), item.metrics, item.seconds))
        staged.clear()
        write_model_configs(out)
        return results
    finally:
        for item in staged:  # anything not published is removed: no half-written versions
            shutil.rmtree(item.staging, ignore_errors=True)
