"""Config reload under load (benchmarks/reliability/reload.py) against a real embedded server."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.reliability import client
from benchmarks.reliability.reload import ADDED, POLL_S, REMOVED, ReloadModels, config_reload_under_load
from benchmarks.targets.managed import ManagedServer

pytestmark = pytest.mark.timeout(300)


def test_models_swapped_in_the_config_while_another_serves(exported_models_dir: Path, tmp_path: Path) -> None:
    tree = ReloadModels(exported_models_dir / client.MODEL, tmp_path / "reload")
    server = ManagedServer("embedded", config_file=tree.config, models=(client.MODEL,),
                           log_path=tmp_path / "server.log",
                           extra_args=["--model-config-file-poll-wait-seconds", str(POLL_S)])
    with server:
        client.wait_settled(server.grpc_target)
        r = config_reload_under_load(server.grpc_target, server.rest_target, tree.write_config,
                                     payload=client.predict_payload(), concurrency=2, settle_s=0.5)
        assert client.available_versions(server.grpc_target, ADDED)
    assert r.problem == "" and r.load["sent"] > 0 and r.failed == 0, r
    assert r.removed_had_state, "the removed model never had a scheduler: nothing to forget was tested"
    assert r.removed_message == f"Servable not found for request: Latest({REMOVED})"
    assert not math.isnan(r.scheduler_forgot_s) and not math.isnan(r.added_available_s)
    assert r.survived
