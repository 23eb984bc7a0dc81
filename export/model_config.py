"""TF Serving model config (``ModelServerConfig`` text proto) for every exported model.

Two files with one content but different base paths: ``models.config`` for the official container (which
mounts ``artifacts/models`` at ``/models``) and ``models.local.config`` with absolute paths on this
machine for the embedded server. Both are built through the official proto, so they parse by
construction; tests parse them back anyway.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from export.contract import CONTAINER_MODELS_ROOT, LOCAL_MODEL_CONFIG_FILE, MODEL_CONFIG_FILE, list_versions, model_names

# Keep the newest two versions loaded: 'canary' serves the newest while 'stable' keeps the previous one
# (TF Serving's documented canary pattern). A label may only point at a loaded version.
NUM_VERSIONS = 2


def build_model_server_config(models_root: Path, base_root: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name in model_names(models_root):
        versions = list_versions(Path(models_root) / name)
        if not versions:
            continue
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = f"{base_root.rstrip('/')}/{name}"
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = NUM_VERSIONS
        newest = versions[-1]
        stable = versions[-2] if len(versions) >= 2 else newest
        entry.version_labels["stable"] = stable
        entry.version_labels["canary"] = newest
    return config


def write_model_configs(models_root: Path) -> tuple[Path, Path]:
    """Write both config files (atomically: the real server may be polling them) and return their paths."""
    models_root = Path(models_root)
    written = []
    for file_name, base_root in (
        (MODEL_CONFIG_FILE, CONTAINER_MODELS_ROOT),
        (LOCAL_MODEL_CONFIG_FILE, str(models_root.resolve())),
    ):
        text = text_format.MessageToString(build_model_server_config(models_root, base_root))
        target = models_root / file_name
        tmp = target.with_name(f".{file_name}.tmp")
        tmp.write_text(text)
        tmp.replace(target)
        written.append(target)
    return written[0], written[1]


def read_model_config(path: Path) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(Path(path).read_text(), model_server_config_pb2.ModelServerConfig())
