"""Faults we inject on disk: broken versions, scratch model trees, and sentinels that reveal filesystem access.

A serving system meets broken versions in real life when a copy is interrupted, a disk fills up or someone
drops the wrong directory in place. Each writer below produces one of those states *non-atomically on
purpose* (a real export publishes atomically; see export/pipeline.py), next to healthy versions, so a test
can check that the server refuses that one version with a clear status and keeps serving the others.

Nothing here imports TensorFlow: the corruptions are plain file operations on a copy of a good version.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from export.contract import (LOCAL_MODEL_CONFIG_FILE, SAVED_MODEL_FILE, find_version_dir, latest_version_dir,
                             list_versions, new_version_dir, next_version, version_dirs)

VARIABLES_DIR = "variables"


# ------------------------------------------------------------------------------------------------ scratch trees
def copy_version(src_version_dir: Path, dst_version_dir: Path) -> Path:
    """Publish a copy of a version the way export does: copy into a dot-directory, then one rename.

    The server must never see a half-copied healthy version (that is a different fault, written below).
    """
    dst = Path(dst_version_dir)
    staging = dst.parent / f".copy-{dst.name}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src_version_dir, staging)
    os.rename(staging, dst)
    return dst


def make_scratch_models(src_models_dir: Path, dst_models_dir: Path, model: str = "residual_regressor",
                        versions: int = 2) -> Path:
    """A private models tree holding only `model`'s newest `versions` versions, with its own configs.

    Fault tests add and break versions; doing that in the user's artifacts/models (or in a fixture shared
    with other tests) would change what everybody else serves. Versions keep their numbers and directory names.
    """
    src = Path(src_models_dir) / model
    have = version_dirs(src)
    if not have:
        raise FileNotFoundError(f"no versions of {model} under {src}: export the models first (make export)")
    dst_root = Path(dst_models_dir)
    (dst_root / model).mkdir(parents=True, exist_ok=True)
    for found in have[-versions:]:
        if find_version_dir(dst_root / model, found.version) is None:
            copy_version(found.path, dst_root / model / found.path.name)
    # Fewer versions exported than the policy keeps (a fresh `make export` has only v1): publish copies of
    # the newest under the next numbers, so the policy's window is full and a rollout must unload the
    # oldest version (what the rollout phase checks).
    while len(list_versions(dst_root / model)) < versions:
        copy_version(have[-1].path, new_version_dir(dst_root, model, next_version(dst_root / model)))
    write_configs(dst_root)
    return dst_root


def write_configs(models_dir: Path) -> Path:
    """models.config + models.local.config for whatever is under models_dir (export's own writer)."""
    from export.model_config import write_model_configs  # imports the protos only, not TensorFlow

    write_model_configs(Path(models_dir))
    return Path(models_dir) / LOCAL_MODEL_CONFIG_FILE


# ------------------------------------------------------------------------------------------------ broken versions
@dataclass(frozen=True)
class BrokenVersion:
    kind: str
    version: int
    path: Path
    description: str


def _truncate(path: Path, keep_fraction: float = 0.5) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(max(1, int(size * keep_fraction)))


def _truncated_pb(good: Path, dst: Path) -> str:
    shutil.copytree(good, dst)
    _truncate(dst / SAVED_MODEL_FILE)
    return "saved_model.pb cut to half its size (an interrupted copy)"


def _missing_variables(good: Path, dst: Path) -> str:
    shutil.copytree(good, dst)
    shutil.rmtree(dst / VARIABLES_DIR)
    return "variables/ directory missing (graph without weights)"


def _garbage_pb(good: Path, dst: Path) -> str:
    shutil.copytree(good, dst)
    # Deterministic junk that is not a valid protobuf (0xff starts an invalid wire-type 7 field).
    (dst / SAVED_MODEL_FILE).write_bytes(bytes([0xFF, 0xFF, 0xFF, 0x07]) * 1024)
    return "saved_model.pb replaced by junk bytes (wrong file dropped in place)"


def _empty_dir(good: Path, dst: Path) -> str:
    dst.mkdir(parents=True)
    return "empty version directory (mkdir done, copy never started)"


def _half_written(good: Path, dst: Path) -> str:
    # A copy abandoned half-way: the graph file partly written, the variables never arrived.
    dst.mkdir(parents=True)
    data = (good / SAVED_MODEL_FILE).read_bytes()
    (dst / SAVED_MODEL_FILE).write_bytes(data[: len(data) // 3])
    return "abandoned copy: a third of saved_model.pb, no variables/"


def _truncated_variables(good: Path, dst: Path) -> str:
    shutil.copytree(good, dst)
    for f in (dst / VARIABLES_DIR).glob("variables.data-*"):
        _truncate(f, 0.25)
    return "variables data shard truncated (disk filled up during the copy)"


BROKEN_KINDS: dict[str, Callable[[Path, Path], str]] = {
    "truncated_pb": _truncated_pb,
    "missing_variables": _missing_variables,
    "garbage_pb": _garbage_pb,
    "empty_dir": _empty_dir,
    "half_written": _half_written,
    "truncated_variables": _truncated_variables,
}


def write_broken_version(model_dir: Path, kind: str, good_version_dir: Path | None = None,
                         version: int | None = None) -> BrokenVersion:
    """Write one broken version of `kind` into model_dir (default: the next version number).

    Built beside the target and renamed into place, so the server sees the broken state at once and
    not a copy in progress (which a correct server would rightly wait for).
    """
    if kind not in BROKEN_KINDS:
        raise ValueError(f"unknown broken-version kind {kind!r} (choose from {', '.join(BROKEN_KINDS)})")
    model_dir = Path(model_dir)
    if good_version_dir is None:
        latest = latest_version_dir(model_dir)
        if latest is None:
            raise FileNotFoundError(f"no healthy version under {model_dir} to copy from")
        good_version_dir = latest.path
    version = version if version is not None else next_version(model_dir)
    existing = find_version_dir(model_dir, version)
    if existing is not None:
        raise FileExistsError(f"{existing.path} exists; refusing to overwrite a version")
    target = new_version_dir(model_dir.parent, model_dir.name, version)
    staging = model_dir / f".broken-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    description = BROKEN_KINDS[kind](Path(good_version_dir), staging)
    os.rename(staging, target)
    return BrokenVersion(kind, version, target, description)


# ------------------------------------------------------------------------------------------------ sentinels
@dataclass
class Sentinel:
    """Files outside the models root that a path-traversal bug would read or create.

    `bait` is a complete, loadable copy of a real model version under `root/bait_model/1`: if a hostile model
    name ever became a path, the server could load and serve it, which a test sees as a non-NOT_FOUND answer.
    `must_not_exist` are paths nothing may create.
    """

    root: Path
    bait_model: Path
    must_not_exist: list[Path]

    def created(self) -> list[Path]:
        return [p for p in self.must_not_exist if os.path.lexists(p)]

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of everything under root: a write or creation changes it."""
        out = {}
        for dirpath, dirs, files in os.walk(self.root):
            for name in dirs + files:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                out[os.path.relpath(p, self.root)] = (st.st_size, st.st_mtime_ns)
        return out


def make_sentinel(root: Path, good_version_dir: Path) -> Sentinel:
    root = Path(root)
    bait = root / "bait_model"
    bait.mkdir(parents=True, exist_ok=True)
    if not (bait / "1").exists():
        copy_version(good_version_dir, bait / "1")
    never = [root / "created_by_server", root / "bait_model" / "created_by_server", root.parent / "created_by_server"]
    return Sentinel(root, bait, never)
