"""Server CPU per request of Classify, Regress and MultiInference next to Predict, on one model
(`python -m benchmarks inference-cpu`).

The model is TF Serving's half-plus-two as a TF1 SavedModel (benchmarks/targets/tfs_models.py: y = 0.5x + 2
with predict, classify and regress signatures over tf.Example), written into a temporary folder and served by
the embedded server in graph mode. Predict feeds x ([n,1] floats) straight to the graph; Classify, Regress and
MultiInference send n tf.Example protos that the server serializes into a string tensor and the graph parses.

For each API and request size (examples per request):
  * served: --requests gRPC round trips, one in flight (the perf check's single stream: pre-serialised bytes,
    grpc.aio, the load loop), with the server process's CPU per request (psutil user+system over the measured
    requests), the client's, and the latencies. Repeated --repeats times, a fresh server each time and the
    APIs' order rotated (the first one measured runs colder); the row is perf-check's median run, with
    extra.server_cpu_us_per_request_median (the median over the runs: the figure this command is about, and
    the one least disturbed by other work on the machine) and extra.spread_min_max.
  * handler in-process: the server's own gRPC handler (request parse, servicer method, model call, response
    serialization) called in this process, no transport and no other process in the figure, so small
    differences between the APIs show: extra.handler_cpu_us_per_request, extra.handler_p50_us.
One result row per API x size (kind grpc, scenario = the API, batch_size = examples per request) in
<results-dir>/<run-id>/results.json. Numbers are measurements, not assertions.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.commands.common import ListArg, add_run_args, finish_run, open_run
from benchmarks.commands.perf_check import median_row, single_stream, span_row
from benchmarks.measure.calls import time_calls
from benchmarks.results.schema import ResultRow
from benchmarks.targets.managed import ManagedServer
from export.contract import CLASSIFY_METHOD_NAME, PREDICTION_SERVICE, REGRESS_METHOD_NAME

MODEL = "half_plus_two"
SERVER = "embedded-graph"
HANDLER_WARMUP = 200


@dataclass(frozen=True)
class Api:
    label: str  # as tables print it
    scenario: str  # the result row's scenario
    method: str  # the PredictionService method


APIS = (Api("Predict", "predict", "Predict"), Api("Classify", "classify", "Classify"),
        Api("Regress", "regress", "Regress"),
        Api("MultiInference (classify + regress)", "multi-inference", "MultiInference"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=1000, help="round trips (and handler calls) per measurement")
    p.add_argument("--repeats", type=int, default=3, help="fresh servers per measurement; the median is reported")
    p.add_argument("--sizes", action=ListArg, item=int, default=(1, 32),
                   help="examples (rows) per request, comma-separated (default 1,32)")
    add_run_args(p)


def request_payloads(n: int) -> dict[Api, bytes]:
    """Each API's serialized request for n examples / rows of x."""
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, inference_pb2, predict_pb2, regression_pb2

    xs = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = MODEL
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(xs.reshape(n, 1)))
    classify, regress = classification_pb2.ClassificationRequest(), regression_pb2.RegressionRequest()
    multi = inference_pb2.MultiInferenceRequest()
    for request, signature, method_name in ((classify, "classify_x_to_y", CLASSIFY_METHOD_NAME),
                                            (regress, "regress_x_to_y", REGRESS_METHOD_NAME)):
        request.model_spec.name, request.model_spec.signature_name = MODEL, signature
        task = multi.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = MODEL, signature, method_name
    for request in (classify, regress, multi):
        for x in xs.tolist():
            request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return dict(zip(APIS, (r.SerializeToString() for r in (predict, classify, regress, multi))))


def measurement_name(api: Api, n: int) -> str:
    return f"{api.label}, {n} example{'s' if n > 1 else ''}"


# ---------------------------------------------------------------------------------------------- served
def served_rows(server: ManagedServer, sizes: tuple[int, ...], requests: int, rep: int) -> list[ResultRow]:
    """One row per API x size against one started server, the APIs' order rotated by `rep`."""
    rows = []
    for n in sizes:
        apis = list(request_payloads(n).items())
        shift = rep % len(apis)
        for api, payload in apis[shift:] + apis[:shift]:
            name = measurement_name(api, n)
            print(f"[inference-cpu] run {rep + 1}: {name}", flush=True)
            method = f"/{PREDICTION_SERVICE}/{api.method}"
            rows.append(span_row(single_stream(server, payload, requests, method), name,
                                 batch_size=n, model=MODEL, mode="graph", scenario=api.scenario, concurrency=1,
                                 server=SERVER, target=server.grpc_target))
    return rows


def served_medians(config: Path, run_dir: Path, sizes: tuple[int, ...], requests: int,
                   repeats: int) -> dict[str, ResultRow]:
    """Measurement name -> perf-check's median row over `repeats` fresh servers, plus the median server CPU."""
    runs: dict[str, list[ResultRow]] = {}
    for rep in range(repeats):
        with ManagedServer("embedded", mode="graph", config_file=config, models=(MODEL,), start_timeout_s=240,
                           extra_args=["--file-system-poll-wait-seconds", "0"],
                           log_path=run_dir / f"{SERVER}.log") as server:
            for row in served_rows(server, sizes, requests, rep):
                runs.setdefault(row.extra["measurement"], []).append(row)
    medians = {}
    for name, rows in runs.items():
        cpu = statistics.median(r.extra["server_cpu_us_per_request"] for r in rows)
        row = median_row(rows)
        row.extra["server_cpu_us_per_request_median"] = round(cpu, 1)
        medians[name] = row
    return medians


# ---------------------------------------------------------------------------------------------- in-process
class _Context:
    """What the servicer methods use of a grpc.aio context, for calling them in this process."""

    def time_remaining(self) -> None:
        return None

    async def abort(self, code: object, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def handler_costs(base: Path, sizes: tuple[int, ...], requests: int) -> dict[str, dict]:
    """Measurement name -> CPU per request and p50 of the server's own gRPC handler called in this process."""
    from tensorflow_serving.apis import classification_pb2, inference_pb2, predict_pb2, regression_pb2

    from serving.api.grpc_api import PredictionServicer
    from serving.cli.serve_flags import ServerConfig
    from serving.cli.server import build_parts
    from serving.lifecycle.model_manager import ModelSource

    request_types = {"Predict": predict_pb2.PredictRequest, "Classify": classification_pb2.ClassificationRequest,
                     "Regress": regression_pb2.RegressionRequest, "MultiInference": inference_pb2.MultiInferenceRequest}
    cfg = ServerConfig(enable_model_warmup=False, file_system_poll_wait_seconds=0)  # the server's defaults otherwise
    parts = build_parts(cfg, [ModelSource(MODEL, base)])
    manager = parts.manager
    manager.start()
    servicer, context, loop = PredictionServicer(parts.core, manager), _Context(), asyncio.new_event_loop()
    costs = {}
    try:
        for n in sizes:
            for api, payload in request_payloads(n).items():
                handler, request_type = getattr(servicer, api.method), request_types[api.method]

                def one() -> None:
                    loop.run_until_complete(handler(request_type.FromString(payload), context)).SerializeToString()

                t = time_calls(one, requests, warmup=min(HANDLER_WARMUP, requests))
                costs[measurement_name(api, n)] = {"handler_cpu_us_per_request": round(t.cpu_us_per_call, 1),
                                                   "handler_p50_us": round(t.hist.summary().p50_ms * 1000, 1)}
    finally:
        loop.close()
        manager.stop()
    return costs


def use_server_threads() -> dict:
    """TensorFlow's thread pools as the server sets them; possible only before TensorFlow starts running."""
    import tensorflow as tf

    from serving.cli.server import tf_thread_counts

    intra, inter = tf_thread_counts(-1, -1)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow already ran in this process (e.g. under pytest): its pools stay
        return {"as_server": False, "note": "TensorFlow's thread pools were already fixed in this process"}
    return {"as_server": True, "intra_op": intra, "inter_op": inter}


# ---------------------------------------------------------------------------------------------- main
def print_table(rows: list[ResultRow]) -> None:
    print(f"\n{'API, request size':<46} {'server CPU/req (us), median [min-max]':>38} {'p50 (us)':>9} "
          f"{'handler CPU/req (us)':>21}")
    for r in rows:
        x = r.extra
        low, high = x["spread_min_max"]["server_cpu_us_per_request"]
        cpu = f"{x['server_cpu_us_per_request_median']:.0f} [{low:.0f}-{high:.0f}]"
        print(f"{x['measurement']:<46} {cpu:>38} {r.p50_ms * 1000:>9.0f} {x['handler_cpu_us_per_request']:>21}")


def main(args: argparse.Namespace) -> int:
    if args.requests < 1 or args.repeats < 1:
        print("error: --requests and --repeats must be positive", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads = use_server_threads()
    from benchmarks.targets.tfs_models import write_half_plus_two_tf1, write_model_config

    w = open_run(args, "inference-cpu", server_kind="embedded", server_mode="graph")
    with tempfile.TemporaryDirectory(prefix="inference-cpu-") as tmp:
        base = write_half_plus_two_tf1(Path(tmp) / MODEL, version_dir="1").parent
        config = write_model_config(Path(tmp) / "models.config", {MODEL: base})
        print("[inference-cpu] the server's handlers called in this process", flush=True)
        handlers = handler_costs(base, args.sizes, args.requests)
        served = served_medians(config, w.run_dir, args.sizes, args.requests, args.repeats)
    for name, row in served.items():
        row.extra.update(handlers[name], handler_tf_threads=threads)
        w.append(row)
    print_table(w.rows)
    finish_run(w)
    return 0
