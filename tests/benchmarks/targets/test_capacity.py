"""Load-generator capacity: the no-op servers answer like TF Serving on both APIs, and a brief capacity run
writes well-formed rows, report and plot. (The clients themselves are tested in
tests/benchmarks/clients/test_clients.py, the saturation rule in tests/benchmarks/results/test_profiler.py.)

No throughput is asserted anywhere (a timing verdict on a shared machine is not a test); the capacity
figures themselves come from `python -m benchmarks capacity` and are reported in the README.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest

from benchmarks.commands import capacity
from benchmarks.targets import noop_native as native_noop
from benchmarks.requests import protos
from benchmarks.targets.noop_python import NoopConfig, NoopServer
from benchmarks.requests.payloads import build_payload
from benchmarks.results.plots import write_plots
from benchmarks.results.report import render
from benchmarks.results.schema import RESULTS_JSON, ResultWriter, capture_environment, load_run
from benchmarks.clients.transports import RestTransport
from tests.benchmarks.clients.test_clients import send_with_each_grpc_client

NATIVE_MISSING = native_noop.missing_binaries()
needs_native = pytest.mark.skipif(
    bool(NATIVE_MISSING), reason=f"native no-op server binaries not installed ({', '.join(NATIVE_MISSING)}): "
                                 "apt-get install nghttp2-server nginx-light")


def test_native_noop_files_are_valid_tf_serving_answers(tmp_path):
    root = native_noop.write_docroot(tmp_path / "docroot", batch_size=4)
    framed = (root / native_noop.PREDICT_FILE).read_bytes()
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == len(framed) - 5
    pb = protos.load()
    resp = pb["predict_pb2"].PredictResponse.FromString(framed[5:])
    out = resp.outputs["predictions"]
    assert [d.size for d in out.tensor_shape.dim] == [4, 1] and len(out.tensor_content) == 16
    status = pb["get_model_status_pb2"].GetModelStatusResponse.FromString(
        (root / native_noop.STATUS_FILE).read_bytes()[5:])
    assert status.model_version_status[0].state == pb["get_model_status_pb2"].ModelVersionStatus.AVAILABLE
    conf = native_noop.nginx_conf(tmp_path, "127.0.0.1", 9999, 4, tmp_path / "err.log")
    assert "listen 127.0.0.1:9999" in conf and json.dumps({"predictions": [[0.0]] * 4}) in conf
    if shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin"):
        (tmp_path / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
        check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_capacity_server_choice(monkeypatch, capsys):
    monkeypatch.setattr(native_noop, "missing_binaries", lambda: {"nghttpd": "nghttp2-server"})
    with pytest.raises(FileNotFoundError, match="nghttp2-server"):
        capacity.choose_server("native")
    assert capacity.choose_server("auto") == "python"
    assert "WARNING" in capsys.readouterr().out  # falling back is said, never silent
    monkeypatch.setattr(native_noop, "missing_binaries", lambda: {})
    assert capacity.choose_server("auto") == "native" and capacity.choose_server("python") == "python"
    with pytest.raises(ValueError):
        capacity.choose_server("docker")


@pytest.mark.timeout(120)
@needs_native
def test_native_noop_server_answers_grpc_and_rest():
    p = build_payload("any_model", 1, 10)
    with native_noop.NativeNoopServer(batch_size=1) as srv:
        answers = asyncio.run(send_with_each_grpc_client(srv.grpc_target, p.grpc_bytes))
        assert {status for status, _ in answers.values()} == {"OK"} and len({b for _, b in answers.values()}) == 1

        async def rest(path: str):
            t = RestTransport(srv.rest_target, path, connections=1)
            try:
                return await t.send(p.rest_body)
            finally:
                await t.close()

        status, body = asyncio.run(rest(p.rest_path))
        assert status == "200" and json.loads(body) == {"predictions": [[0.0]]}
        assert asyncio.run(rest("/v1/models/m/versions/2:predict"))[0] == "200"
        assert asyncio.run(rest("/v2/nothing"))[0] == "404"
        assert asyncio.run(rest("/v1/nothing"))[0] == "400"  # a /v1/ path that is no API route is malformed
    assert not srv.procs  # both children reaped


@pytest.mark.timeout(60)
def test_python_noop_rest_errors_are_tf_servings():
    p = build_payload("known", 1, 10)
    with NoopServer(NoopConfig(models=("known",))) as srv:
        async def rest(path: str, body: bytes = p.rest_body):
            t = RestTransport(f"127.0.0.1:{srv.rest_port}", path, connections=1)
            try:
                return (await t.send(body))[0]
            finally:
                await t.close()

        assert asyncio.run(rest(p.rest_path)) == "200"
        assert asyncio.run(rest("/v1/models/known:predict", b'{"nope": 1}')) == "400"  # bad body: INVALID_ARGUMENT
        assert asyncio.run(rest("/v1/models/known:frobnicate")) == "400"  # malformed request, as TF Serving says
        assert asyncio.run(rest("/v1/nothing")) == "400"
        assert asyncio.run(rest("/v1/models/other:predict")) == "404"  # unknown model: NOT_FOUND
        assert asyncio.run(rest("/v2/nothing")) == "404"  # outside the API


def _brief_capacity(tmp_path, server: str):
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="noop"))
    rows = capacity.run_capacity(w, server=server, concurrencies=(4,), window_s=0.3, max_windows=3, progress=False)
    return w, rows


def _check_capacity_rows(tmp_path, rows, server_label: str) -> None:
    assert [(r.kind, r.client) for r in rows] == [("grpc", "libcurl"), ("grpc", "grpc.aio"), ("rest", "asyncio-http1")]  # the default client first
    for r in rows:
        assert r.scenario == "capacity" and r.server == server_label and r.errors == 0 and r.n > 0
        assert r.p50_ms <= r.p99_ms <= r.max_ms and r.throughput_rps > 0
        x = r.extra
        assert x["client_cpu_us_per_request"] > 0 and x["projected_client_ceiling_rps"] > 0
        assert 0 <= x["loop_thread_cpu_percent"] and x["goal_rps"] == capacity.GOAL_RPS
    saved = load_run(tmp_path / "run")
    assert len(saved.rows) == len(rows) and json.loads((tmp_path / "run" / RESULTS_JSON).read_text())["results"]
    made = write_plots(saved.rows, tmp_path / "run")
    assert (tmp_path / "run" / "capacity.png") in made
    assert "## Load-generator capacity" in render("t", saved.environment, saved.rows, made)


@pytest.mark.timeout(180)
def test_brief_capacity_run_against_python_noop_is_well_formed(tmp_path):
    _, rows = _brief_capacity(tmp_path, "python")
    _check_capacity_rows(tmp_path, rows, "noop")


@pytest.mark.timeout(180)
@needs_native
def test_brief_capacity_run_against_native_noop_is_well_formed(tmp_path):
    _, rows = _brief_capacity(tmp_path, "native")
    _check_capacity_rows(tmp_path, rows, "noop-native")
