"""One build of an expensive session fixture for the whole run, also when pytest-xdist runs it in several workers.

`make test` runs the suite in worker processes (pytest-xdist, `--dist loadfile`: a file's tests stay in one
worker, so a module-scoped server is started once). A session-scoped fixture is per worker, though: without this,
each worker would export the models again. `shared_dir` builds the directory once under the run's common temp
root, under a file lock; the other workers wait for it and reuse it. Without xdist it is a plain temp directory.
The fixtures that use it hand out read-only trees: a test that changes files copies them first.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
from filelock import FileLock


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """A directory filled by `build(path)` once per test run, whichever worker asks first."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        path = tmp_path_factory.mktemp(name)
        build(path)
        return path
    root = tmp_path_factory.getbasetemp().parent  # popen-gwN's parent: one per run, common to its workers
    path, done = root / f"shared-{name}", root / f"shared-{name}.built"  # the mark beside, not inside, the tree
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.is_file():
            shutil.rmtree(path, ignore_errors=True)  # a worker that failed half way leaves no half tree behind
            path.mkdir()
            build(path)
            done.touch()
    return path
