"""A model the project did not export, served by the embedded server: a TF2 module with four inputs
(float32 [-1,8], int64 [-1,4], bool [-1], string [-1]) and two outputs, written by the test. The load
generators must drive it over gRPC and REST from its signature alone, with zero errors; bad input must
exit 2 naming the problem before any load.
The same module without its string input (`three_inputs`) is served beside it."""
from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from benchmarks.__main__ import main as bench_main
from benchmarks.commands import suite
from benchmarks.requests.tensors import InputOptions
from benchmarks.commands.served import ServedConfig, run_served
from benchmarks.results.schema import RESULTS_JSON, ResultWriter, capture_environment
from tests.server_fixture import faults_in, running_server

MODEL = "multi_input"
WITHOUT_STRING = "three_inputs"
FLOAT_ONLY = "float_only"  # perf_analyzer 2.41's TF Serving client sends int64 inputs without values


def _write_float_only_model(base: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf.function(lambda x: {"score": tf.reduce_sum(x, axis=1, keepdims=True)},
                               input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
    tf.saved_model.save(module, str(base / FLOAT_ONLY / "1"), signatures={"serving_default": module.serve})


def _write_model(base: Path, name: str, with_string: bool) -> None:
    import tensorflow as tf

    specs = [tf.TensorSpec([None, 8], tf.float32, name="x"), tf.TensorSpec([None, 4], tf.int64, name="ids"),
             tf.TensorSpec([None], tf.bool, name="mask")]

    def outputs(x, ids, mask, extra):
        score = tf.reduce_sum(x, axis=1) + tf.cast(tf.reduce_sum(ids, axis=1) + tf.cast(mask, tf.int64), tf.float32)
        return {"score": (score + extra)[:, None], "ids_max": tf.reduce_max(ids, axis=1)}

    module = tf.Module()
    if with_string:
        module.serve = tf.function(lambda x, ids, mask, tag: outputs(
            x, ids, mask, tf.cast(tf.strings.length(tag), tf.float32)),
            input_signature=specs + [tf.TensorSpec([None], tf.string, name="tag")])
    else:
        module.serve = tf.function(lambda x, ids, mask: outputs(x, ids, mask, 0.0), input_signature=specs)
    tf.saved_model.save(module, str(base / name / "1"), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def multi_input_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("any_model")
    _write_model(base, MODEL, with_string=True)
    _write_model(base, WITHOUT_STRING, with_string=False)
    _write_float_only_model(base)
    config = base / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{m}" base_path: "{base / m}" model_platform: "tensorflow" }}\n'
        for m in (MODEL, WITHOUT_STRING, FLOAT_ONLY)) + "}\n")
    with running_server(config) as server:
        yield server


# `suite --quick` measures 4 closed-loop points of up to 2.5 s per API at full speed, then 2 s of LoadGen: its three
# runs here took 48 s and over half of this module's 84 CPU s (client and server). The suite tests check its wiring
# (which server, which endpoints, what the rows, the report and the recorded command say), not figures: the same
# steps with one brief point and a short LoadGen run per API show that as well.
BRIEF_QUICK = dataclasses.replace(suite.QUICK, served_batches=(1,), concurrencies=(1,), window_s=0.2, max_windows=3,
                                  loadgen_qps=(100.0,), loadgen_ms=500)


@pytest.fixture
def brief_quick_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """`suite --quick` runs BRIEF_QUICK, the plan it reads when it starts (re-runs in this test included)."""
    monkeypatch.setattr(suite, "QUICK", BRIEF_QUICK)


def _rest_target(server) -> str:
    return server.rest_url.removeprefix("http://")


def _run(tmp_path, server, model: str, kind: str, grpc_client: str):
    target = server.grpc_target if kind == "grpc" else _rest_target(server)
    w = ResultWriter(tmp_path / "run", capture_environment(server_kind="embedded"))
    return run_served(ServedConfig(kind=kind, target=target, models=[(model, 0)], batch_sizes=(1, 5),
                                   concurrencies=(2,), window_s=0.3, fixed_windows=2, warmup_s=0.1,
                                   grpc_client=grpc_client, server_label="embedded", progress=False,
                                   inputs=InputOptions(int_range=(0, 50), string_length=7)), w)


CLIENTS = [("grpc", "aio"), ("grpc", "curl"), ("rest", "aio")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind,grpc_client", CLIENTS)
def test_multi_input_model_runs_from_its_signature_with_zero_errors(tmp_path, multi_input_server, kind, grpc_client):
    rows = _run(tmp_path, multi_input_server, MODEL, kind, grpc_client)
    assert [r.batch_size for r in rows] == [1, 5]
    for row in rows:
        assert row.n > 0 and row.errors == 0 and row.errors_by_code == {}, row.warnings
        assert row.stable is None and faults_in(row.warnings) == [], row.warnings  # 2 windows: stability not judged
    doc = json.loads((tmp_path / "run" / RESULTS_JSON).read_text())
    assert len(doc["results"]) == 2


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind,grpc_client", CLIENTS)
def test_float_int64_bool_inputs_run_with_zero_errors(tmp_path, multi_input_server, kind, grpc_client):
    for row in _run(tmp_path, multi_input_server, WITHOUT_STRING, kind, grpc_client):
        assert row.n > 0 and row.errors == 0 and row.errors_by_code == {}, row.warnings
        assert row.stable is None and faults_in(row.warnings) == [], row.warnings  # 2 windows: stability not judged


@pytest.mark.timeout(300)
def test_bad_input_exits_2_naming_the_problem_before_any_load(tmp_path, multi_input_server, capsys):
    target = multi_input_server.grpc_target
    common = ["--target", target, "--models-dir", str(tmp_path / "none"), "--results-dir", str(tmp_path / "res"),
              "--batch-sizes", "1", "--concurrency", "1", "--window-seconds", "0.2", "--max-windows", "2", "--no-progress"]

    assert bench_main(["grpc", "--models", "nope", MODEL, *common]) == 2
    err = capsys.readouterr().err
    assert "model 'nope' is not served by" in err and f"these answer: {MODEL}" in err

    # over REST, with a models directory: the message lists what the directory has
    (tmp_path / "dir" / "exported_one" / "1").mkdir(parents=True)
    rest = ["--rest-target", _rest_target(multi_input_server), "--models-dir", str(tmp_path / "dir"),
            "--results-dir", str(tmp_path / "res")]
    assert bench_main(["rest", "--models", "nope", *rest]) == 2
    assert "the models directory names: exported_one" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()  # nothing was started, no run directory

    assert bench_main(["grpc", "--models", MODEL, "--shape", "image:3,3", *common]) == 2
    assert "--shape names input 'image'" in capsys.readouterr().err

    bad = tmp_path / "bad.json"
    bad.write_text('{"instances": [{"x": [1, 2]}]}')
    assert bench_main(["grpc", "--models", MODEL, "--input-data", str(bad), *common]) == 2
    assert "missing: ['ids', 'mask', 'tag']" in capsys.readouterr().err

    # float32 [batch, 10] (the project's own request shape) does not fit this model: the probe fails and
    # the run stops with the server's own message instead of timing failures
    assert bench_main(["grpc", "--models", f"{MODEL}:10", *common]) == 2
    err = capsys.readouterr().err
    assert "probe request failed with INVALID_ARGUMENT" in err and "--allow-errors" in err

    # --allow-errors measures anyway and counts the rejections by status
    assert bench_main(["grpc", "--models", f"{MODEL}:10", "--allow-errors", "--run-id", "errs", *common]) == 0
    row = json.loads((tmp_path / "res" / "errs" / RESULTS_JSON).read_text())["results"][0]
    assert row["n"] == 0 and row["errors"] > 0 and set(row["errors_by_code"]) == {"INVALID_ARGUMENT"}


@pytest.mark.timeout(300)
def test_locust_drives_the_model_from_its_signature_with_zero_errors(tmp_path, multi_input_server):
    """Locust users build the same requests as our client (one local worker process, both transports)."""
    code = bench_main(["locust", "--server", "none", "--target", multi_input_server.grpc_target,
                       "--rest-target", _rest_target(multi_input_server), "--metrics-url",
                       multi_input_server.metrics_url, "--model", WITHOUT_STRING, "--batch-size", "3",
                       "--int-range", "0,50", "--workers", "1", "--users", "2", "--spawn-rate", "4",
                       "--run-time", "2s", "--no-ours", "--models-dir", str(tmp_path / "none"),
                       "--results-dir", str(tmp_path), "--run-id", "loc", "--no-progress"])
    assert code == 0
    rows = json.loads((tmp_path / "loc" / RESULTS_JSON).read_text())["results"]
    assert [r["scenario"] for r in rows] == ["locust-grpc", "locust-rest"]
    for r in rows:
        assert r["n"] > 0 and r["errors"] == 0 and r["batch_size"] == 3, r["warnings"]
        counts = r["extra"]["request_counts"]
        assert counts["master"] == counts["workers_sum"] == r["n"] and counts["server"] >= r["n"], counts


@pytest.mark.timeout(300)
def test_locust_bad_input_exits_2_before_any_load(tmp_path, multi_input_server, capsys):
    common = ["locust", "--server", "none", "--target", multi_input_server.grpc_target, "--rest-target",
              _rest_target(multi_input_server), "--models-dir", str(tmp_path / "none"),
              "--results-dir", str(tmp_path / "res"), "--run-time", "2s"]
    assert bench_main([*common, "--model", "nope"]) == 2
    assert "model 'nope' is not served by" in capsys.readouterr().err
    assert bench_main([*common, "--model", MODEL, "--shape", "image:3,3"]) == 2
    assert "--shape names input 'image'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"instances": [{"x": [1, 2]}]}')
    assert bench_main([*common, "--model", MODEL, "--input-data", str(bad)]) == 2
    assert "missing: ['ids', 'mask', 'tag']" in capsys.readouterr().err
    assert bench_main([*common, "--model", MODEL, "--input-data", str(tmp_path / "absent.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert bench_main([*common, "--model", WITHOUT_STRING, "--n-features", "10"]) == 2  # float32 [b, 10] does not fit
    err = capsys.readouterr().err
    assert "probe request failed with INVALID_ARGUMENT" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "res").exists()  # no run directory, no Locust process: nothing was sent


def _perf_analyzer_or_skip():
    from benchmarks.measure import perf_analyzer_tool

    try:
        return perf_analyzer_tool.find()
    except perf_analyzer_tool.PerfAnalyzerMissing as e:
        pytest.skip(f"perf_analyzer cannot run here: {e}")


@pytest.mark.timeout(300)
def test_perf_analyzer_crosscheck_writes_its_rows_beside_ours(tmp_path, multi_input_server, capsys):
    """A real perf_analyzer run (it builds its inputs from the metadata too) beside grpc.aio."""
    _perf_analyzer_or_skip()
    code = bench_main(["perf-analyzer", "--target", multi_input_server.grpc_target, "--models", FLOAT_ONLY,
                       "--models-dir", str(tmp_path / "none"), "--results-dir", str(tmp_path), "--run-id", "pa",
                       "--concurrency", "1", "--clients", "aio", "--window-seconds", "0.5", "--max-windows", "4",
                       "--no-progress"])
    assert code == 0
    rows = json.loads((tmp_path / "pa" / RESULTS_JSON).read_text())["results"]
    pa, ours = rows
    assert pa["client"] == "perf_analyzer" and ours["client"] == "grpc.aio"
    assert (pa["batch_size"], pa["concurrency"], pa["model"]) == (ours["batch_size"], ours["concurrency"], ours["model"])
    # parsed from perf_analyzer's own CSV (or, when it never stabilised, its per-window lines)
    assert pa["p50_ms"] > 0 and pa["throughput_rps"] > 0 and "--service-kind=tfserving" in pa["extra"]["perf_analyzer"]["command"]
    if pa["stable"]:  # which of the two depends on the machine's load; each is checked in full
        assert pa["n"] > 0 and pa["p50_ms"] <= pa["p90_ms"] <= pa["p99_ms"] and pa["warnings"] == []
    else:
        assert pa["p90_ms"] is None and pa["warnings"][0].startswith("unstable: perf_analyzer found no 3 agreeing")
    assert ours["errors"] == 0 and ours["n"] > 0 and ours["extra"]["calls"] == "async"  # grpc.aio: no blocking calls
    table_md = (tmp_path / "pa" / "crosscheck.md").read_text()
    assert "| grpc | 1 | 1 | grpc.aio | async | perf_analyzer |" in table_md and "p50 ratio" in capsys.readouterr().out


def test_perf_analyzer_missing_exits_2_saying_what_to_install(monkeypatch, tmp_path, capsys):
    from benchmarks.measure import perf_analyzer_tool

    monkeypatch.setattr(perf_analyzer_tool, "_binary", lambda: None)
    assert bench_main(["perf-analyzer", "--models", "m", "--results-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "perf_analyzer not found" in out and "tritonclient==2.41.0" in out and "libb64-0d" in out
    assert not any(tmp_path.iterdir())  # no run directory for a run that could not start


@pytest.mark.timeout(300)
def test_suite_measures_an_external_server_without_starting_one(tmp_path, multi_input_server, brief_quick_suite):
    """make bench TARGET=... REST_TARGET=... MODEL=...: the served part of the suite, requests from the
    model's signature, rows labelled with the external server."""
    code = bench_main(["suite", "--quick", "--server", "none", "--target", multi_input_server.grpc_target,
                       "--rest-target", _rest_target(multi_input_server), "--models", WITHOUT_STRING,
                       "--server-label", "other-server", "--skip-inprocess", "--models-dir", str(tmp_path / "none"),
                       "--results-dir", str(tmp_path), "--run-id", "ext", "--no-progress"])
    assert code == 0
    rows = json.loads((tmp_path / "ext" / RESULTS_JSON).read_text())["results"]
    assert {r["kind"] for r in rows} == {"grpc", "rest"} and {r["model"] for r in rows} == {WITHOUT_STRING}
    assert {r["scenario"] for r in rows} == {"closed", "server"}
    assert all(r["server"] == "other-server" and r["errors"] == 0 and r["n"] > 0 for r in rows)
    assert not list(tmp_path.glob("ext/*-server.log"))  # no server was started


@pytest.mark.timeout(300)
def test_suite_without_rest_target_says_so_names_the_server_and_records_a_command_that_reruns(
        tmp_path, multi_input_server, brief_quick_suite, capsys):
    """make bench TARGET=host:port (no REST_TARGET) passes --rest-target '': the empty argument must survive."""
    code = bench_main(["suite", "--quick", "--server", "none", "--target", multi_input_server.grpc_target,
                       "--rest-target", "", "--server-label", "other-server", "--models", WITHOUT_STRING,
                       "--models-dir", str(tmp_path / "none"), "--results-dir", str(tmp_path), "--run-id", "first",
                       "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert ">> [1/3] in-process: skipped (no exported model under" in out
    assert ">> [2/3] server: other-server, already running (--server none): none started" in out
    assert ">> REST: skipped, no endpoint given (--rest-target (make bench REST_TARGET=host:port))" in out
    report = (tmp_path / "first" / "report.md").read_text()
    assert f"- server: other-server (external; gRPC {multi_input_server.grpc_target}) ·" in report
    command = json.loads((tmp_path / "first" / RESULTS_JSON).read_text())["environment"]["command"]
    assert "--rest-target ''" in command
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "benchmarks"]
    argv[argv.index("--run-id") + 1] = "again"
    assert bench_main(argv[3:]) == 0
    rows = json.loads((tmp_path / "again" / RESULTS_JSON).read_text())["results"]
    assert rows and {r["kind"] for r in rows} == {"grpc"} and all(r["server"] == "other-server" for r in rows)
