"""Config reload under load: models added to and removed from a polled --model_config_file while another
model serves a steady load.

The staying model must not fail a single request; the removed one must answer NOT_FOUND once unloaded and
leave no per-model state behind (its execution scheduler, seen from outside as its
`tfserve_bench_model_executions` series, disappears); the added one must become AVAILABLE and answer.
Like scenarios.py this measures and returns a dataclass; tests and the report judge it.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import requests

from benchmarks.measure import prometheus
from benchmarks.reliability import client
from benchmarks.reliability.faults import copy_version
from benchmarks.reliability.load import BackgroundLoad, LoadConfig
from benchmarks.reliability.scenarios import Progress, _quiet, load_figures
from export.contract import EXECUTIONS_METRIC, PROMETHEUS_PATH, latest_version_dir

REMOVED, ADDED = "leaving_model", "arriving_model"
POLL_S = 0.5  # the server's --model_config_file_poll_wait_seconds in this scenario


@dataclass
class ReloadResult:
    staying: str
    removed: str
    added: str
    load: dict[str, Any]  # the staying model's load
    removed_had_state: bool  # before the reload: the removed model had served and had a scheduler
    removed_not_found_s: float  # config written -> removed model answers NOT_FOUND
    removed_message: str
    scheduler_forgot_s: float  # config written -> its scheduler series gone (nan: never)
    added_available_s: float  # config written -> added model AVAILABLE and answering
    problem: str = ""

    @property
    def failed(self) -> int:
        return int(self.load["failed"]) + int(self.load["unaccounted"])

    @property
    def survived(self) -> bool:
        return (self.failed == 0 and not self.problem and self.removed_had_state
                and not math.isnan(self.removed_not_found_s) and not math.isnan(self.scheduler_forgot_s)
                and not math.isnan(self.added_available_s))


class ReloadModels:
    """A private tree with three copies of one model's newest version and the config file naming some."""

    def __init__(self, src_model_dir: Path, root: Path) -> None:
        self.root = Path(root)
        self.bases = {}
        source = latest_version_dir(src_model_dir).path
        for name in (client.MODEL, REMOVED, ADDED):
            self.bases[name] = self.root / name
            if not self.bases[name].exists():
                (self.root / name).mkdir(parents=True)
                copy_version(source, self.bases[name] / source.name)
        self.config = self.root / "models.config"
        self.write_config([client.MODEL, REMOVED])

    def write_config(self, names: list[str]) -> None:
        """Replace the config in one rename: the poller never reads a half-written file."""
        from benchmarks.targets.tfs_models import write_model_config

        staging = self.config.with_suffix(".tmp")
        write_model_config(staging, {n: self.bases[n] for n in names})
        os.replace(staging, self.config)


def scheduled_models(rest_target: str) -> set[str]:
    """Models the server keeps an execution scheduler for (its per-model state), from its metrics."""
    text = requests.get(f"http://{rest_target}{PROMETHEUS_PATH}", timeout=5).text
    return set(prometheus.parse(text).by_label(EXECUTIONS_METRIC, "model_name"))


def _not_found(grpc_target: str, model: str) -> str | None:
    try:
        client.predict(grpc_target, model=model, timeout=10)
    except Exception as exc:  # grpc.RpcError
        if hasattr(exc, "code") and exc.code().name == "NOT_FOUND":
            return exc.details()
    return None


def config_reload_under_load(grpc_target: str, rest_target: str, write_config: Callable[[list[str]], None], *,
                             payload: bytes, concurrency: int = 4, settle_s: float = 1.0, timeout_s: float = 120.0,
                             progress: Progress = _quiet) -> ReloadResult:
    """Serve REMOVED once, then swap it for ADDED in the config while client.MODEL is under load."""
    load = BackgroundLoad(LoadConfig(grpc_target, payload, concurrency=concurrency, track_versions=False)).start()
    waited: dict[str, float] = {}
    problem, message = "", ""
    try:
        time.sleep(settle_s)
        client.predict(grpc_target, model=REMOVED)
        had_state = REMOVED in scheduled_models(rest_target)
        progress(f"reload: config now {client.MODEL} + {ADDED} (was {client.MODEL} + {REMOVED}), under load")
        t0 = time.monotonic()
        write_config([client.MODEL, ADDED])
        checks = {"removed": lambda: _not_found(grpc_target, REMOVED),
                  "added": lambda: client.predict(grpc_target, model=ADDED, timeout=10),
                  "forgot": lambda: REMOVED not in scheduled_models(rest_target)}
        for name, check in checks.items():
            try:
                found = client.wait_for(check, timeout_s, interval_s=0.05, what=f"{name} after the reload")
                waited[name] = time.monotonic() - t0
                message = found if name == "removed" else message
            except TimeoutError as exc:
                problem = f"{problem}; {exc}" if problem else str(exc)
        time.sleep(settle_s)  # keep loading after the reload settled
    finally:
        summary = load.stop()
    nan = math.nan
    return ReloadResult(client.MODEL, REMOVED, ADDED, load_figures(summary), had_state,
                        round(waited.get("removed", nan), 3), message, round(waited.get("forgot", nan), 3),
                        round(waited.get("added", nan), 3), problem)
