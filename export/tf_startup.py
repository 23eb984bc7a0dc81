"""Quiet TensorFlow start-up for the three CLIs (and the servers and workers they start).

Importing TensorFlow prints, on every process, banners written before its logging is configured (so
TF_CPP_MIN_LOG_LEVEL does not hold them back): absl's "All log messages before absl::InitializeLog()", oneDNN's
and the CPU-feature notice, twice (two shared libraries print them), and, on a machine without a GPU, an
`E0000 ... failed call to cuInit` line that reads like an error. By default the CLIs hold stderr while TensorFlow
is imported and probes for GPUs, and drop exactly those lines; everything else is written as it came.
`--verbose`, or a TF_CPP_MIN_LOG_LEVEL the user set, shows everything.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from typing import Iterator

MODE_ENV = "TFSERVE_BENCH_TF_STARTUP"  # quiet | verbose: inherited by child processes
NOISE = re.compile(r"All log messages before absl::InitializeLog|oneDNN custom operations are on|cpu_feature_guard|"
                   r"To enable the following instructions:|failed call to cuInit|Unable to register cu\w+ factory|"
                   r"computation placer already registered|Could not find cuda drivers")


def quiet_tensorflow_startup(verbose: bool = False) -> None:
    """Call at the start of a CLI, before anything imports TensorFlow."""
    if verbose:
        os.environ[MODE_ENV] = "verbose"
    mode = os.environ.get(MODE_ENV) or ("verbose" if "TF_CPP_MIN_LOG_LEVEL" in os.environ else "quiet")
    if mode == "verbose":
        return
    os.environ[MODE_ENV] = "quiet"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own INFO and WARNING lines too
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def _stderr_without_banners() -> Iterator[None]:
    """Hold file descriptor 2 (C++ writes there directly) and write it back without the banner lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(True) if not NOISE.search(line)))
            sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Wraps the first `import tensorflow`, wherever it happens, in _stderr_without_banners."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 (importlib's signature)
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: find the real spec through the other finders
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module) -> None:  # noqa: ANN001
            with _stderr_without_banners():
                load(module)
                module.config.list_physical_devices("GPU")  # the cuInit probe, while stderr is still held

        spec.loader.exec_module = exec_module
        return spec
