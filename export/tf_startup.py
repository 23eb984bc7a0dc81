"""Quiet TensorFlow start-up for the three CLIs (and the servers and workers they start).

Importing TensorFlow prints, on every process, banners written before its logging is configured (so
TF_CPP_MIN_LOG_LEVEL does not hold them back): absl's "All log messages before absl::InitializeLog()", oneDNN's
and the CPU-feature notice, twice (two shared libraries print them), and, on a machine without a GPU, an
`E0000 ... failed call to cuInit` line that reads like an error. By default the CLIs hold stderr while TensorFlow
is imported and probes for GPUs, and drop exactly those lines; everything else is written as it came.
`--verbose`, or a TF_CPP_MIN_LOG_LEVEL the user set, shows everything.

The server also imports TensorFlow with modules hidden that it does not use (`hide`): TensorFlow's __init__
imports keras.src.optimizers, which imports all of Keras, whose scikit-learn wrappers import scikit-learn when it
is installed (it is: the exporter's datasets come from it). scikit-learn was 0.7-1.6 s of a 4.0-5.1 s `import
tensorflow` measured here, on every server start, for wrapper classes a server never uses. In graph and xla mode
without --import the server hides Keras too: it runs SavedModels, never Keras code, and `import tensorflow` took
2.38-2.57 s instead of 3.15-3.24 s (CPU, three interleaved pairs). TensorFlow catches the ImportError (its
`tf.keras` stays a lazy attribute). Only during that import: a later `import sklearn` or `import keras` works as
usual.
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


def quiet_tensorflow_startup(verbose: bool = False, hide: tuple[str, ...] = ()) -> None:
    """Call at the start of a CLI, before anything imports TensorFlow. hide: top-level modules that look absent
    while TensorFlow is imported (the module docstring says why; the server's CLI, not the exporter's)."""
    if verbose:
        os.environ[MODE_ENV] = "verbose"
    mode = os.environ.get(MODE_ENV) or ("verbose" if "TF_CPP_MIN_LOG_LEVEL" in os.environ else "quiet")
    quiet = mode != "verbose"
    if quiet:
        os.environ[MODE_ENV] = "quiet"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own INFO and WARNING lines too
    if "tensorflow" in sys.modules or not (quiet or hide):
        return
    hook = next((f for f in sys.meta_path if isinstance(f, _TensorflowImport)), None)
    if hook is None:
        sys.meta_path.insert(0, _TensorflowImport(quiet, hide))
    else:
        hook.quiet, hook.hide = hook.quiet or quiet, tuple(dict.fromkeys(hook.hide + hide))


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


class _TensorflowImport(importlib.abc.MetaPathFinder):
    """Wraps the first `import tensorflow`, wherever it happens: in _stderr_without_banners (quiet) and with the
    `hide` modules looking absent."""

    def __init__(self, quiet: bool, hide: tuple[str, ...]) -> None:
        self.quiet, self.hide = quiet, hide

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 (importlib's signature)
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: find the real spec through the other finders
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load, quiet = spec.loader.exec_module, self.quiet
        hide = tuple(m for m in self.hide if m not in sys.modules)

        def exec_module(module) -> None:  # noqa: ANN001
            for name in hide:
                sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
            try:
                with _stderr_without_banners() if quiet else contextlib.nullcontext():
                    load(module)
                    if quiet:
                        module.config.list_physical_devices("GPU")  # the cuInit probe, while stderr is still held
            finally:
                for name in hide:
                    if name in sys.modules and sys.modules[name] is None:
                        del sys.modules[name]

        spec.loader.exec_module = exec_module
        return spec
