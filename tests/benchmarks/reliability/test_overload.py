"""Overload and deadlines against an embedded server with a deliberately small batch queue.

The queue holds one batch of 8 rows and one batch thread runs, so 64 concurrent streams are far more than it
admits on any machine: the excess must be refused fast (RESOURCE_EXHAUSTED), memory must not grow with the
backlog that a naive queue would build, admitted requests must finish in bounded time, and the server must
serve normally as soon as the load drops. A lone request waits up to batch_timeout (200 ms) for company, so
a 50 ms deadline must end it with DEADLINE_EXCEEDED *on the server* (its own counter says so).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability import client, faults, scenarios
from benchmarks.reliability.cli import OVERLOAD_BATCHING
from benchmarks.targets.managed import ManagedServer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server(exported_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("rel_overload")
    models = faults.make_scratch_models(exported_models_dir, root / "models")
    batching = root / "batching.config"
    batching.write_text(OVERLOAD_BATCHING)
    s = ManagedServer("embedded", models_dir=models, models=(client.MODEL,), log_path=root / "server.log",
                      extra_args=["--enable-batching", "--batching-parameters-file", str(batching),
                                  "--file-system-poll-wait-seconds", "0"])
    s.start()
    client.wait_settled(s.grpc_target)
    yield s
    s.stop()


def test_overload_is_refused_fast_with_bounded_memory_and_recovers(server: ManagedServer) -> None:
    # 1.5 s: the queue is full and refusing within the first batch timeout (200 ms); what a longer overload would
    # add are the refusal p99 and RSS growth as figures, which `make reliability` measures over its own span.
    o = scenarios.overload(server.grpc_target, server.proc.pid, payload=client.predict_payload(), concurrency=64,
                           seconds=1.5, recovery_requests=10, timeout_s=10.0)
    errors = o.load["errors"]
    assert o.rejected > 0, f"64 streams never filled a 1-batch queue? {o.load}"
    assert set(errors) == {"RESOURCE_EXHAUSTED"}, f"only queue-full refusals expected, got {errors}"
    assert o.load["ok"] > 0, "nothing was admitted"
    # an admitted request queued past the 10 s deadline would be DEADLINE_EXCEEDED, refused by the check above.
    # How fast refusals come (p99) and how far RSS grows are figures: `make reliability` reports them in its
    # overload row and judges them there (refusal p99 < 1 s, RSS growth < 25 %).
    assert o.reject_p99_ms > 0 and o.rss_growth_pct == o.rss_growth_pct, (o.reject_p99_ms, o.memory)  # measured
    assert o.recovery_failed == 0, o.recovery_errors
    assert client.check_valid_request(server.grpc_target, server.rest_target) is None


def test_per_request_deadline_is_honoured_by_the_server(server: ManagedServer) -> None:
    d = scenarios.deadline_honoured(server.grpc_target, server.rest_target, deadline_ms=50)
    assert d.client_code == "DEADLINE_EXCEEDED", d
    assert d.server_deadline_exceeded >= 1, "the server did not end the request itself"
    # how long after the 50 ms deadline the client heard back is a figure of the reliability run's deadline row
    v, preds = client.predict(server.grpc_target, timeout=10)  # without a deadline it is served
    assert preds.shape == (1, 1)
