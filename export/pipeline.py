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
from typing import TYPE_CHECKING, Any, Callable, Sequence

from export.data import DATASETS
from export.contract import (ASSETS_EXTRA, KERAS_FILE, MANIFEST_FILE, WARMUP_FILE, check_model_name, list_versions,
                             model_dir, new_version_dir, next_version)
from export.catalog import MODEL_NAMES

if TYPE_CHECKING:
    from export.endpoints import Endpoint


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
    check_output(Path(config.out_dir), config.models, config.version)


def check_output(out: Path, names: Sequence[str], version: int | None) -> None:
    """The models root is writable (created if missing) and a requested version is free for every model."""
    if version is not None and version < 1:
        raise ExportError(f"--version must be a positive integer, got {version}")
    try:
        for name in names:
            check_model_name(name)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise ExportError(f"output directory {out} is not writable: {exc.strerror or exc}") from exc
    if version is not None:
        for name in names:
            if version in list_versions(model_dir(out, name)):
                raise ExportError(f"{name} version {version} already exists in {model_dir(out, name)}")


def _next_version(out: Path, model: str, requested: int | None) -> int:
    return requested if requested is not None else next_version(model_dir(out, model))


def version_manifest(name: str, version: int, endpoints: Sequence[Endpoint], *, n_features: int = 0,
                     keras_file: bool = True, **fields: Any) -> dict:
    """What every exported version records beside its SavedModel (assets.extra/, contract.MANIFEST_FILE)."""
    import keras
    import tensorflow as tf

    from export.endpoints import expected_signatures

    return {"model": name, "version": version, **({"n_features": n_features} if n_features else {}), **fields,
            "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
            "signatures": {k: asdict(v) for k, v in expected_signatures(endpoints, n_features).items()},
            "endpoints": [ep.to_dict() for ep in endpoints],
            "keras_file": KERAS_FILE if keras_file else None, "warmup_file": WARMUP_FILE,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_manifest(staging: Path, manifest: dict) -> None:
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def _stage_model(name: str, data, config: ExportConfig, staging: Path, version: int) -> dict:
    from export.models import ReconstructingRegressor
    from export.signatures import write_saved_model
    from export.train import TrainConfig, train_model
    from export.warmup import rows_to_batches, warmup_requests, write_warmup_file

    model, report = train_model(name, data, TrainConfig(epochs=config.epochs, seed=config.seed))
    endpoints = write_saved_model(model, data.n_features, staging)
    (staging / ASSETS_EXTRA).mkdir(parents=True, exist_ok=True)
    model.save(staging / KERAS_FILE)
    write_warmup_file(staging / WARMUP_FILE, warmup_requests(name, endpoints, rows_to_batches(data.x_val)))
    write_manifest(staging, version_manifest(
        name, version, endpoints, n_features=data.n_features,
        dataset=data.name,
        dataset_args={"name": config.dataset, "features": config.features, "seed": config.seed},
        feature_names=data.feature_names, n_train=int(len(data.x_train)), n_val=int(len(data.x_val)),
        metrics=report.as_dict(), has_add_loss=isinstance(model, ReconstructingRegressor),
        custom_gradients=name == "softplus_regressor"))
    return report.as_dict()


def export_models(config: ExportConfig) -> list[ExportResult]:
    """Train and export every requested model; return what was published."""
    validate(config)
    from export.data import load_dataset

    data = load_dataset(config.dataset, features=config.features, seed=config.seed)
    print(f">> dataset {data.name}: {len(data.x_train)} train / {len(data.x_val)} validation rows, "
          f"{data.n_features} features", flush=True)
    jobs = [(name, config.version, lambda staging, version, _n=name: _stage_model(_n, data, config, staging, version))
            for name in config.models]
    return publish_versions(Path(config.out_dir), jobs, config.verify)


# Writes one version into an empty staging directory (which it creates) and returns its summary metrics.
StageFn = Callable[[Path, int], dict]


def publish_versions(out: Path, jobs: Sequence[tuple[str, int | None, StageFn]], verify: bool,
                     imports: Sequence[str] = ()) -> list[ExportResult]:
    """Stage each (model, requested version, stage) job, verify all in one fresh process (which first imports
    ``imports``), then rename each into place and rewrite the model configs. On any failure nothing is left:
    no staging directory, and no model directory this call created."""
    from export.model_config import write_model_configs
    from export.verify import verify_in_fresh_process

    staged: list[_Staged] = []
    created: list[Path] = []
    try:
        for name, requested, stage in jobs:
            version = _next_version(out, name, requested)
            base = model_dir(out, name)
            if not base.exists():
                created.append(base)
            base.mkdir(parents=True, exist_ok=True)
            # A dot-directory: TF Serving only considers integer-named directories, so it never looks here.
            staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=base))
            shutil.rmtree(staging)  # ExportArchive wants to create the directory itself
            item = _Staged(name, version, staging, new_version_dir(out, name, version))
            staged.append(item)
            start = time.perf_counter()
            item.metrics = stage(staging, version)
            item.seconds = time.perf_counter() - start
            mae = f", val MAE {item.metrics['val_mae']:.2f}" if "val_mae" in item.metrics else ""
            print(f">> {name} v{version}: staged in {item.seconds:.1f}s{mae}", flush=True)
        if verify:
            print(f">> verifying {len(staged)} version(s) in a fresh process", flush=True)
            verify_in_fresh_process([s.staging for s in staged], imports)
        results = []
        for item in staged:
            if item.target.exists():  # someone published it meanwhile: never overwrite a version
                raise ExportError(f"{item.target} appeared while exporting; refusing to overwrite it")
            os.rename(item.staging, item.target)  # atomic on one filesystem
            results.append(ExportResult(item.model, item.version, str(item.target), item.metrics, item.seconds))
        staged.clear()
        created.clear()
        write_model_configs(out)
        return results
    finally:
        for item in staged:  # anything not published is removed: no half-written versions
            shutil.rmtree(item.staging, ignore_errors=True)
        for base in created:  # and no empty model directory a config would list; rmdir, because another
            try:              # exporter may have published into it meanwhile, and its version stays
                base.rmdir()
            except OSError:
                pass
