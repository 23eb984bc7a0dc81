"""Hostile input against one embedded server: REST bodies, gRPC tensors, model names/labels, config reload.

Property-based with Hypothesis, derandomized and bounded (the same cases every run, no shrinking: a failing
case is printed as drawn). The server runs with a 1 MiB body limit and a 1 Mi-element tensor limit, so the
"oversized" and "enormous shape" cases hit limits quickly. After each family a valid request must still be
answered correctly; the families that claim huge sizes must not make the server allocate them. The server's RSS
over all hostile input together is a figure of `make reliability` (its hostile phase), not a test here: a test
that needs every other one to run first passes vacuously alone.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from benchmarks.reliability import client, faults, hostile
from benchmarks.reliability.hostile_run import (GrpcSender, check_config_reload_refused, http_request,
                                                send_name_rest, send_raw_traversal_paths, send_rest)
from benchmarks.reliability.memory import rss_bytes
from benchmarks.targets.managed import ManagedServer

BODY_LIMIT = 1 << 20
MAX_ELEMENTS = 1 << 20
pytestmark = pytest.mark.timeout(300)

BOUNDED = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                   phases=[Phase.explicit, Phase.generate],
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def env(exported_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hostile")
    models = faults.make_scratch_models(exported_models_dir, root / "models")
    sentinel = faults.make_sentinel(root / "outside", models / client.MODEL / "2")
    s = ManagedServer("embedded", models_dir=models, models=(client.MODEL,), log_path=root / "server.log",
                      extra_args=["--max-request-bytes", str(BODY_LIMIT), "--max-tensor-elements", str(MAX_ELEMENTS),
                                  "--file-system-poll-wait-seconds", "0"])
    s.start()
    client.wait_settled(s.grpc_target)
    snapshot = sentinel.snapshot()
    sender = GrpcSender(s.grpc_target, MAX_ELEMENTS)
    yield {"server": s, "sentinel": sentinel, "snapshot": snapshot, "sender": sender}
    sender.close()
    s.stop()


def _valid_after(env) -> None:
    s = env["server"]
    assert s.proc.poll() is None, "the server died"
    problem = client.check_valid_request(s.grpc_target, s.rest_target)
    assert problem is None, problem


# ------------------------------------------------------------------------------------------------ REST
@pytest.mark.parametrize("kind", sorted(hostile.rest_strategies(BODY_LIMIT)))
def test_rest_hostile_bodies_get_4xx_json_errors(env, kind: str) -> None:
    strategy = hostile.rest_strategies(BODY_LIMIT)[kind]

    @settings(BOUNDED, max_examples=25)
    @given(strategy)
    def prop(case: hostile.RestCase) -> None:
        problem = send_rest(env["server"].rest_target, case)
        assert problem is None, problem

    try:
        prop()
    finally:
        _valid_after(env)


def test_rest_deep_nesting_is_a_client_error(env) -> None:
    """F1 in reliability_findings.md: json's RecursionError must be a 400, not a 500."""
    body = b'{"instances": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}"
    status, resp = http_request(env["server"].rest_target, "POST", f"/v1/models/{client.MODEL}:predict", body)
    assert status == 400, (status, resp[:200])
    assert b'"error"' in resp


def test_rest_boolean_in_float_row_is_refused(env) -> None:
    """F2 in reliability_findings.md: `true` in a float32 row must not be silently read as 1.0."""
    body = b'{"instances": [[true, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}'
    status, resp = http_request(env["server"].rest_target, "POST", f"/v1/models/{client.MODEL}:predict", body)
    assert status == 400, (status, resp[:200])


def test_oversized_body_is_refused_without_reading_it(env) -> None:
    s = env["server"]
    rss0 = rss_bytes(s.proc.pid)
    case = hostile.oversized_case(BODY_LIMIT * 8)  # 8 MiB against a 1 MiB limit
    problem = send_rest(s.rest_target, hostile.RestCase("oversized", case.body))
    assert problem is None, problem
    assert rss_bytes(s.proc.pid) - rss0 < 32 * 2**20
    _valid_after(env)


# ------------------------------------------------------------------------------------------------ gRPC
def _every_tensor_case_answered_right(env, sender: GrpcSender, strategy, max_examples: int) -> None:
    """Hypothesis drives `strategy`'s gRPC cases; each must get the answer hostile.py says is right, and the
    server must still answer a valid request afterwards, whatever happened."""

    @settings(BOUNDED, max_examples=max_examples)
    @given(strategy)
    def prop(case: hostile.GrpcCase) -> None:
        problem = sender.send_tensor_case(case)
        assert problem is None, f"{problem}: {case!r}"

    try:
        prop()
    finally:
        _valid_after(env)


def test_grpc_random_tensors_get_invalid_argument(env) -> None:
    sender: GrpcSender = env["sender"]
    s = env["server"]
    rss0 = rss_bytes(s.proc.pid)
    _every_tensor_case_answered_right(env, sender, hostile.grpc_tensor_cases(), max_examples=150)
    # Claimed shapes up to 2**63 were sent: none may have been allocated (1 Mi floats = 4 MiB is the cap).
    assert rss_bytes(s.proc.pid) - rss0 < 64 * 2**20


def test_grpc_wrong_input_sets_get_invalid_argument(env) -> None:
    _every_tensor_case_answered_right(env, env["sender"], hostile.grpc_input_set_cases(), max_examples=40)


def test_grpc_garbage_bytes_do_not_hurt_the_server(env) -> None:
    """Not a TensorProto at all: gRPC itself refuses to parse it; the server must shrug it off."""
    sender: GrpcSender = env["sender"]
    for blob in (b"\xff\xff\xff\x07", b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256)) * 64):
        code, _ = sender.call(sender.raw_predict, blob)
        assert code in ("INVALID_ARGUMENT", "INTERNAL"), code
    _valid_after(env)


# ------------------------------------------------------------------------------------------------ names / paths
def test_hostile_model_names_and_labels_never_reach_the_filesystem(env) -> None:
    sender: GrpcSender = env["sender"]
    s, sentinel = env["server"], env["sentinel"]

    @settings(BOUNDED, max_examples=40)
    @given(st.one_of(st.sampled_from([hostile.NameCase("model_name", n) for n in hostile.TRAVERSAL_NAMES]),
                     hostile.name_cases()))
    def prop(case: hostile.NameCase) -> None:
        problem = sender.send_name_case(case) or send_name_rest(s.rest_target, case)
        assert problem is None, f"{problem}: {case!r}"

    try:
        prop()
    finally:
        _valid_after(env)
    for path, problem in send_raw_traversal_paths(s.rest_target):
        assert problem is None, f"{path}: {problem}"
    assert sentinel.created() == [], "a hostile name created a file outside the models root"
    assert sentinel.snapshot() == env["snapshot"], "files outside the models root were modified"
    open_outside = [f.path for f in __import__("psutil").Process(s.proc.pid).open_files()
                    if f.path.startswith(str(sentinel.root))]
    assert open_outside == []


def test_config_reload_is_refused_without_its_flag(env) -> None:
    s, sentinel = env["server"], env["sentinel"]
    problem = check_config_reload_refused(s.grpc_target, sentinel)
    assert problem is None, problem
    assert client.available_versions(s.grpc_target) == [1, 2], "the served config changed"
    _valid_after(env)
