"""Every command the Makefile and README name exists and its --help teaches (exit 0, says what it does)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

CLIS = [
    (["export", "--help"], "--models"),
    (["export", "verify", "--help"], "fresh process"),
    (["serving", "--help"], "launch"),
    (["serving", "serve", "--help"], "--mode"),
    (["serving", "launch", "--help"], "--server"),
    (["benchmarks", "--help"], "compare"),
    (["benchmarks", "suite", "--help"], "--quick"),
    (["benchmarks", "demo", "--help"], "--models-dir"),
    (["benchmarks", "locust", "--help"], "--workers"),
    (["benchmarks", "compare", "--help"], "--threshold"),
    (["benchmarks", "reliability", "--help"], "--soak-seconds"),
]


@pytest.mark.parametrize("argv, needle", CLIS, ids=[" ".join(a) for a, _ in CLIS])
def test_cli_help(argv, needle):
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert needle in proc.stdout


def test_make_help_lists_every_target():
    makefile = (REPO_ROOT / "Makefile").read_text()
    documented = set(re.findall(r"^([a-z][a-zA-Z_-]*):.*## ", makefile, flags=re.M))
    proc = subprocess.run(["make", "-s", "help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    listed = {line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()}
    phony = set(re.search(r"^\.PHONY: (.*)$", makefile, flags=re.M).group(1).split())
    assert documented == listed
    assert phony <= documented | {"venv"}
    for target in ("demo", "test", "export", "serve", "bench", "loadtest", "compare", "reliability"):
        assert target in listed
