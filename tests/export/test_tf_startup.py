"""Quiet starts: TensorFlow's pre-logging banners and the no-GPU cuInit line are hidden unless asked for."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from export.tf_startup import NOISE
from tests.conftest import REPO_ROOT

SCRIPT = ("import sys; from export.tf_startup import quiet_tensorflow_startup; "
          "quiet_tensorflow_startup(verbose=sys.argv[1] == 'verbose'); "
          "print('before', file=sys.stderr); import tensorflow as tf; print('after', file=sys.stderr); "
          "tf.config.threading.set_intra_op_parallelism_threads(1)")  # still allowed: no eager context yet


def _stderr(mode: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFSERVE_BENCH_TF_STARTUP")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=180, env={**clean, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


@pytest.mark.timeout(400)
def test_banners_hidden_by_default_and_shown_when_asked():
    quiet = _stderr("quiet")
    assert quiet.splitlines()[:2] == ["before", "after"] and not NOISE.search(quiet), quiet
    verbose = _stderr("verbose")
    assert NOISE.search(verbose), verbose  # what the default hides is really printed by TensorFlow here
    assert NOISE.search(_stderr("quiet", TF_CPP_MIN_LOG_LEVEL="0"))  # the user's own setting wins


@pytest.mark.parametrize("hide, absent", [(("sklearn",), ["sklearn"]), (("sklearn", "keras"), ["sklearn", "keras"])])
def test_the_servers_tensorflow_import_skips_hidden_modules_and_leaves_them_importable(hide, absent):
    script = ("import sys; from export.tf_startup import quiet_tensorflow_startup; "
              f"quiet_tensorflow_startup(hide={hide!r}); import tensorflow; "
              "print('during', *[m for m in ('sklearn', 'keras') if m in sys.modules]); "
              "import sklearn, keras; print('after', sklearn.__name__, keras.__name__, "
              "tensorflow.constant([2.0]).numpy()[0])")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    present = [m for m in ("sklearn", "keras") if m not in absent]
    assert proc.stdout.split() == ["during", *present, "after", "sklearn", "keras", "2.0"]


def test_a_plain_tensorflow_import_brings_keras_and_scikit_learn():  # what hiding them saves
    plain = subprocess.run([sys.executable, "-c", "import sys, tensorflow; print('sklearn' in sys.modules, "
                            "'keras' in sys.modules)"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert plain.stdout.split() == ["True", "True"]
