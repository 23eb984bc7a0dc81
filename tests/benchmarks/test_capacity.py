"""Load-generator capacity: the libcurl gRPC client agrees with grpc.aio, the native no-op server
answers like TF Serving on both APIs, and a brief capacity run writes well-formed rows, report and plot.

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
from benchmarks.clients import protos
from benchmarks.load.closed_loop import ClosedResult, run_closed_loop
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.targets.noop_python import NoopConfig, NoopServer
from benchmarks.clients.payloads import build_payload
from benchmarks.results.plots import write_plots
from benchmarks.results.report import render
from benchmarks.results.schema import RESULTS_JSON, ResultWriter, capture_environment, load_run
from benchmarks.targets.managed import free_port
from benchmarks.clients.transports import CurlGrpcTransport, GrpcTransport, RestTransport

NATIVE_MISSING = native_noop.missing_binaries()
needs_native = pytest.mark.skipif(
    bool(NATIVE_MISSING), reason=f"native no-op server binaries not installed ({', '.join(NATIVE_MISSING)}): "
                                 "apt-get install nghttp2-server nginx-light")


async def _send_both(target: str, payload: bytes, timeout_s: float = 5.0) -> dict[str, tuple[str, bytes | None]]:
    out = {}
    for name, cls in (("aio", GrpcTransport), ("curl", CurlGrpcTransport)):
        t = cls(target, timeout_s=timeout_s)
        try:
            out[name] = await t.send(payload)
        finally:
            await t.close()
    return out


@pytest.mark.timeout(60)
def test_curl_client_gives_the_same_status_and_bytes_as_grpc_aio():
    good, unknown = build_payload("known", 3, 10).grpc_bytes, build_payload("other", 1, 10).grpc_bytes
    with NoopServer(NoopConfig(models=("known",))) as s:
        target = f"127.0.0.1:{s.grpc_port}"
        ok = asyncio.run(_send_both(target, good))
        assert ok["aio"][0] == ok["curl"][0] == "OK" and ok["aio"][1] == ok["curl"][1]
        resp = protos.load()["predict_pb2"].PredictResponse.FromString(ok["curl"][1])
        assert [d.size for d in resp.outputs["predictions"].tensor_shape.dim] == [3, 1]
        assert {k: v[0] for k, v in asyncio.run(_send_both(target, unknown)).items()} == \
            {"aio": "NOT_FOUND", "curl": "NOT_FOUND"}
        assert {k: v[0] for k, v in asyncio.run(_send_both(target, b"\xff\xfe not a proto")).items()} == \
            {"aio": "INVALID_ARGUMENT", "curl": "INVALID_ARGUMENT"}
    with NoopServer(NoopConfig(delay_ms=500)) as slow:
        late = asyncio.run(_send_both(f"127.0.0.1:{slow.grpc_port}", good, timeout_s=0.1))
        assert {k: v[0] for k, v in late.items()} == {"aio": "DEADLINE_EXCEEDED", "curl": "DEADLINE_EXCEEDED"}
    gone = asyncio.run(_send_both(f"127.0.0.1:{free_port()}", good))
    assert {k: v[0] for k, v in gone.items()} == {"aio": "UNAVAILABLE", "curl": "UNAVAILABLE"}


@pytest.mark.timeout(60)
def test_curl_client_multiplexes_calls_and_reuses_handles():
    import time

    p = build_payload("m", 2, 10)
    with NoopServer(NoopConfig(delay_ms=200)) as s:
        async def run():
            t = CurlGrpcTransport(f"127.0.0.1:{s.grpc_port}")
            try:
                t0 = time.perf_counter()
                first = await asyncio.gather(*(t.send(p.grpc_bytes) for _ in range(16)))
                wall = time.perf_counter() - t0
                second = await asyncio.gather(*(t.send(p.grpc_bytes) for _ in range(16)))
                return first + second, wall, len(t._by_curl)
            finally:
                await t.close()

        results, wall, handles = asyncio.run(run())
    assert [r[0] for r in results] == ["OK"] * 32
    # 16 calls to a server that sleeps 200 ms each: one at a time would take >= 3.2 s. Behaviour, not
    # speed: the bound is 2x slack over what concurrency allows.
    assert wall < 1.6, f"16 calls took {wall:.2f} s: not in flight together"
    assert handles == 16  # the second round reused the first round's easy handles


def test_saturation_is_judged_on_the_event_loop_thread():
    def result(process_pct: float, loop_pct: float) -> ClosedResult:
        return ClosedResult(8, LatencyHistogram(), {}, 1.0, 3, True, 1.0, process_pct, 50.0, loop_cpu_pct=loop_pct)

    busy_threads = result(130.0, 60.0)  # grpcio's C-core threads add CPU outside the GIL
    assert not busy_threads.saturated and not busy_threads.warnings()
    pinned = result(95.0, 95.0)
    assert pinned.saturated and "event loop 95%" in pinned.warnings()[0]


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
        both = asyncio.run(_send_both(srv.grpc_target, p.grpc_bytes))
        assert both["aio"][0] == both["curl"][0] == "OK" and both["aio"][1] == both["curl"][1]

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
    assert not srv.procs  # both children reaped


def _brief_capacity(tmp_path, server: str):
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="noop"))
    rows = capacity.run_capacity(w, server=server, concurrencies=(4,), window_s=0.3, max_windows=3, progress=False)
    return w, rows


def _check_capacity_rows(tmp_path, rows, server_label: str) -> None:
    assert [(r.kind, r.client) for r in rows] == [("grpc", "grpc.aio"), ("grpc", "libcurl"), ("rest", "asyncio-http1")]
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
