"""Quiet starts: TensorFlow's pre-logging banners and the no-GPU cuInit line are hidden unless asked for."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import pytest

from export.tf_startup import NOISE
from tests.conftest import REPO_ROOT

# One script answers every question asked of a start: its stderr (banners), and on stdout which of scikit-learn
# and Keras `import tensorflow` brought, then that both still import and TensorFlow runs.
SCRIPT = ("import sys; from export.tf_startup import quiet_tensorflow_startup; "
          "quiet_tensorflow_startup(verbose=sys.argv[1] == 'verbose', hide=tuple(sys.argv[2:])); "
          "print('before', file=sys.stderr); import tensorflow as tf; print('after', file=sys.stderr); "
          "print('during', *[m for m in ('sklearn', 'keras') if m in sys.modules]); "
          "tf.config.threading.set_intra_op_parallelism_threads(1); "  # still allowed: no eager context yet
          "import sklearn, keras; print('after', sklearn.__name__, keras.__name__, tf.constant([2.0]).numpy()[0])")


@dataclass(frozen=True)
class Start:
    """How a child starts TensorFlow: the CLIs' --verbose, the server's hidden modules, a user's log level."""

    verbose: bool = False
    hide: tuple[str, ...] = ()
    log_level: str | None = None  # TF_CPP_MIN_LOG_LEVEL as the user set it; None: unset


QUIET = Start()  # the exporter's start
VERBOSE = Start(verbose=True)  # installs no hook: also what a plain `import tensorflow` brings
SERVER = Start(hide=("sklearn",))  # the server's start with --import or in eager mode
# The server's start in graph mode, under a log level the user set (which must win over quiet).
SERVER_GRAPH_USER_LEVEL = Start(hide=("sklearn", "keras"), log_level="0")

Child = Callable[[Start], subprocess.CompletedProcess]


def _run(start: Start) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFSERVE_BENCH_TF_STARTUP")}
    env = {**clean, **({"TF_CPP_MIN_LOG_LEVEL": start.log_level} if start.log_level is not None else {})}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "verbose" if start.verbose else "quiet", *start.hide],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def child() -> Child:
    """Each start runs once per module, whichever tests ask and in any order: a child importing TensorFlow
    costs 3-5 CPU s, and one child answers the questions of every test about its start."""
    done: dict[Start, subprocess.CompletedProcess] = {}

    def run(start: Start) -> subprocess.CompletedProcess:
        if start not in done:
            done[start] = _run(start)
        return done[start]

    return run


@pytest.mark.timeout(400)
def test_banners_hidden_by_default_and_shown_when_asked(child: Child):
    quiet = child(QUIET).stderr
    assert quiet.splitlines()[:2] == ["before", "after"] and not NOISE.search(quiet), quiet
    verbose = child(VERBOSE).stderr
    assert NOISE.search(verbose), verbose  # what the default hides is really printed by TensorFlow here
    assert NOISE.search(child(SERVER_GRAPH_USER_LEVEL).stderr)  # the user's own setting wins


@pytest.mark.parametrize("start, absent", [(SERVER, ["sklearn"]), (SERVER_GRAPH_USER_LEVEL, ["sklearn", "keras"])],
                         ids=["sklearn", "sklearn+keras"])
def test_the_servers_tensorflow_import_skips_hidden_modules_and_leaves_them_importable(child: Child, start: Start,
                                                                                         absent: list[str]):
    present = [m for m in ("sklearn", "keras") if m not in absent]
    assert child(start).stdout.split() == ["during", *present, "after", "sklearn", "keras", "2.0"]


def test_a_plain_tensorflow_import_brings_keras_and_scikit_learn(child: Child):  # what hiding them saves
    assert child(VERBOSE).stdout.split()[:3] == ["during", "sklearn", "keras"]
