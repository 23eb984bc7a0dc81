"""Debian packages that optional parts of the benchmarks need (native no-op servers, wrk, perf_analyzer's libb64):
installed with apt-get when asked to (root only), never behind the user's back."""
from __future__ import annotations

import os
import subprocess


def apt_install(*packages: str, check: bool = False) -> None:
    """apt-get update, then install `packages`; `check` turns a failed apt-get into CalledProcessError."""
    # keep the caller's environment (proxy settings, PATH); only silence debconf's questions
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=check, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=check, env=env)
