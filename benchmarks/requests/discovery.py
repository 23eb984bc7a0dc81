"""The models a models directory holds, read from export's manifests without importing TensorFlow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export import contract
from export.contract import VersionDir

DEFAULT_N_FEATURES = 10  # a version without a manifest: the project's models' usual input width


@dataclass
class ModelInfo:
    name: str
    version_dirs: list[VersionDir]  # ascending, each with its directory as found on disk
    n_features: int  # 0: not one of the project's models; requests follow its served signature
    model_dir: Path | None = None

    @property
    def versions(self) -> list[int]:
        return [v.version for v in self.version_dirs]

    @property
    def latest_dir(self) -> Path | None:
        return self.version_dirs[-1].path if self.version_dirs else None

    def version_dir(self, version: int) -> Path:
        """The directory of one version (zero-padded or not); FileNotFoundError when it is not exported."""
        found = next((v for v in self.version_dirs if v.version == version), None)
        if found:
            return found.path
        raise FileNotFoundError(f"{self.name} has no version {version} under {self.model_dir} "
                                f"(versions: {self.versions})")


def discover_models(models_dir: Path) -> list[ModelInfo]:
    """Models exported under models_dir/<model>/<version>/ (export/contract.py), with the input width their
    latest version's manifest gives."""
    out: list[ModelInfo] = []
    for name in contract.model_names(models_dir):
        model_dir = Path(models_dir) / name
        found = contract.version_dirs(model_dir)
        if found:
            manifest = contract.read_manifest(found[-1].path) if contract.manifest_path(found[-1].path).exists() else {}
            # a manifest without n_features is a model of the user's: 0 = requests from its served signature
            width = manifest.get("n_features", 0 if manifest else DEFAULT_N_FEATURES)
            out.append(ModelInfo(name, found, int(width), model_dir))
    return out
