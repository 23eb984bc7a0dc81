"""``python -m export keras`` / ``savedmodel``: a model of the user's own through the same path as the project's.

The user's ``.keras`` file is read and checked (export/keras_source.py) before anything is written; then one
version is staged (signatures traced from the model's own inputs, the ``.keras`` file kept for eager mode,
warmup records from the samples, a manifest saying where it came from), verified in a fresh process and
published by the same :func:`export.pipeline.publish_versions` as the project's own models.
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from export.contract import ASSETS_EXTRA, KERAS_FILE, PREDICT_METHOD_NAME, WARMUP_FILE
from export.pipeline import ExportResult, check_output, publish_versions, version_manifest, write_manifest


@dataclass(frozen=True)
class OwnModelConfig:
    source: Path  # the .keras file, or the SavedModel directory
    name: str
    out_dir: Path = Path("artifacts/models")
    version: int | None = None  # None: max existing + 1
    imports: tuple[str, ...] = ()  # modules that register the custom objects
    signatures: tuple[tuple[str, str], ...] = ()  # (signature name, model method) beyond serving_default
    sample_data: Path | None = None  # .npz / .npy / REST JSON; None: seeded inputs
    verify: bool = True


def _provenance(path: Path, kind: str) -> dict[str, Any]:
    path = Path(path).resolve()
    if path.is_file():
        digest, size = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
    else:  # a SavedModel directory: its graph file identifies it
        digest, size = hashlib.sha256((path / "saved_model.pb").read_bytes()).hexdigest(), None
    return {"kind": kind, "path": str(path), "sha256": digest, "bytes": size}


def export_keras(config: OwnModelConfig) -> list[ExportResult]:
    """Load, check, stage, verify and publish one version of the user's Keras model."""
    from export.keras_source import import_modules, load_keras_file, model_endpoints, sample_batches, seeded_batches

    import_modules(config.imports)
    model = load_keras_file(config.source)
    endpoints = model_endpoints(model, dict(config.signatures))
    inputs = endpoints[0].inputs
    batches = sample_batches(config.sample_data, inputs) if config.sample_data else seeded_batches(inputs)
    check_output(Path(config.out_dir), [config.name], config.version)
    source = {**_provenance(config.source, "keras"), "class": f"{type(model).__module__}.{type(model).__qualname__}",
              "imports": list(config.imports),
              "samples": str(Path(config.sample_data).resolve()) if config.sample_data else "seeded"}

    def stage(staging: Path, version: int) -> dict:
        from export.signatures import write_saved_model
        from export.warmup import warmup_requests, write_warmup_file

        traced = write_saved_model(model, 0, staging, endpoints)
        (staging / ASSETS_EXTRA).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config.source, staging / KERAS_FILE)  # byte for byte: the manifest's hash is this file's
        write_warmup_file(staging / WARMUP_FILE, warmup_requests(config.name, traced, batches))
        inputs = {name: asdict(info) for name, info in traced[0].expected().inputs.items()}
        write_manifest(staging, version_manifest(config.name, version, traced, source=source, inputs=inputs,
                                                 structure=endpoints[0].structure))
        return {}

    return publish_versions(Path(config.out_dir), [(config.name, config.version, stage)], config.verify,
                            config.imports)


def import_saved_model(config: OwnModelConfig) -> list[ExportResult]:
    """Bring an existing SavedModel into the layout: the next version, warmup records from its predict
    signatures (seeded inputs), a manifest; verified by loading it in a fresh process. No Keras file: it
    serves in graph and xla mode only."""
    from export.keras_source import saved_model_endpoints, seeded_batches

    endpoints = saved_model_endpoints(config.source)
    check_output(Path(config.out_dir), [config.name], config.version)
    source = _provenance(config.source, "savedmodel")

    def stage(staging: Path, version: int) -> dict:
        from export.warmup import warmup_requests, write_warmup_file

        shutil.copytree(config.source, staging)
        predict = [ep for ep in endpoints if ep.method_name == PREDICT_METHOD_NAME]
        # Each signature warmed up on inputs of its own names and shapes.
        logs = [log for ep in predict for log in warmup_requests(config.name, [ep], seeded_batches(ep.inputs))]
        write_warmup_file(staging / WARMUP_FILE, logs)
        write_manifest(staging, version_manifest(config.name, version, endpoints, keras_file=False, source=source))
        return {}

    return publish_versions(Path(config.out_dir), [(config.name, config.version, stage)], config.verify)
