"""Server CPU per request of Classify, Regress and MultiInference next to Predict, on one model
(`python -m benchmarks.commands.inference_cpu`).

The model is the test suite's TF1 half-plus-two (tests/serving/tfs_models.py: y = 0.5x + 2 with predict,
classify and regress signatures over tf.Example), written into a temporary folder and served by the
embedded server in graph mode. For each API and each request size (examples per request) it sends
--requests round trips one at a time over gRPC (raw request bytes, as perf_check's single stream) and
records the server process's CPU per request (psutil user+system over the measured requests), the client's,
and p50/p99; then it calls the server's own gRPC handlers in this process (no transport, no other
process in the figure) and records their CPU per request. Predict feeds x ([n,1] floats) straight to the graph; Classify/Regress/MultiInference send n
tf.Example protos that the server serializes into a string tensor and the graph parses. Each measurement is
repeated --repeats times (fresh server each time, the APIs' order rotated); the median is reported. Writes
artifacts/results/<run-id>/inference_cpu.json and prints a table. Numbers are measurements, not assertions.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.commands.perf_check import Measurement, _median, _Server, _start, _stop, _wait_serving, single_stream
from benchmarks.results.schema import new_run_id

SERVICE = "/tensorflow.serving.PredictionService/"
MODEL = "half_plus_two"
_LISTENING = r"listening: gRPC (\S+):(\d+), REST (?:(\S+):(\d+)|off)"


def request_payloads(n: int) -> dict[str, tuple[str, bytes]]:
    """API name -> (gRPC method path, serialized request) for n examples / rows of x."""
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, inference_pb2, predict_pb2, regression_pb2

    xs = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = MODEL
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(xs.reshape(n, 1)))
    classify, regress = classification_pb2.ClassificationRequest(), regression_pb2.RegressionRequest()
    multi = inference_pb2.MultiInferenceRequest()
    for request, signature in ((classify, "classify_x_to_y"), (regress, "regress_x_to_y")):
        request.model_spec.name, request.model_spec.signature_name = MODEL, signature
        task = multi.tasks.add()
        task.model_spec.name, task.model_spec.signature_name = MODEL, signature
        task.method_name = f"tensorflow/serving/{'classify' if request is classify else 'regress'}"
    for request in (classify, regress, multi):
        for x in xs.tolist():
            request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return {"Predict": ("Predict", predict.SerializeToString()),
            "Classify": ("Classify", classify.SerializeToString()),
            "Regress": ("Regress", regress.SerializeToString()),
            "MultiInference (classify + regress)": ("MultiInference", multi.SerializeToString())}


def _name(api: str, n: int) -> str:
    return f"{api}, {n} example{'s' if n > 1 else ''}"


def measure(config: Path, sizes: list[int], requests: int, repeats: int) -> list[Measurement]:
    runs: dict[str, list[Measurement]] = {_name(api, n): [] for n in sizes for api in request_payloads(n)}
    for rep in range(repeats):
        argv = [sys.executable, "-m", "serving", "serve", "--model-config-file", str(config), "--mode", "graph",
                "--grpc-port", "0", "--rest-port", "0", "--file-system-poll-wait-seconds", "0"]
        proc, match, _ = _start(argv, re.compile(_LISTENING))
        server = _Server(proc, int(match.group(2)), int(match.group(4)) if match.group(4) else None)
        try:
            _wait_serving(server.port)
            for n in sizes:
                apis = list(request_payloads(n).items())
                shift = rep % len(apis)  # each API goes first in some run: the first measured one runs colder
                for api, (method, payload) in apis[shift:] + apis[:shift]:
                    name = _name(api, n)
                    print(f"[inference_cpu] run {rep + 1}/{repeats}: {name}", flush=True)
                    runs[name].append(single_stream(server, payload, requests, name, SERVICE + method))
        finally:
            _stop(proc)
    return [_with_cpu_median(ms) for ms in runs.values()]


def _with_cpu_median(ms: list[Measurement]) -> Measurement:
    """perf_check's median run (by p50), plus the median of the server's CPU per request over all runs: the
    figure this command is about, and the one least disturbed by other work on the machine."""
    out = _median(ms)
    out.detail["server_cpu_us_per_request_median"] = float(np.median([m.server_cpu_us_per_request for m in ms]))
    return out


class _Context:
    """What the servicer methods use of a grpc.aio context, for calling them in this process."""

    def time_remaining(self) -> None:
        return None

    async def abort(self, code: object, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def handler_cpu(base: Path, sizes: list[int], requests: int) -> list[Measurement]:
    """CPU per request of the server's own handler (request parsing, the servicer method, the model call,
    response serialization), called in this process without gRPC: free of transport and of the other
    processes on the machine, so small differences between the APIs show."""
    import asyncio
    import time

    from tensorflow_serving.apis import classification_pb2, inference_pb2, predict_pb2, regression_pb2

    from serving.core import ServingCore
    from serving.grpc_api import PredictionServicer
    from serving.metrics import ServingMetrics
    from serving.model_manager import ModelManager, ModelSource

    core = ServingCore("graph", ServingMetrics(), None, 10**7, enable_warmup=False)
    manager = ModelManager([ModelSource(MODEL, base)], core.load_version, poll_seconds=0)
    core.manager = manager
    manager.start()
    servicer, context = PredictionServicer(core, manager), _Context()
    request_types = {"Predict": predict_pb2.PredictRequest, "Classify": classification_pb2.ClassificationRequest,
                     "Regress": regression_pb2.RegressionRequest, "MultiInference": inference_pb2.MultiInferenceRequest}
    loop = asyncio.new_event_loop()
    out = []
    try:
        for n in sizes:
            for api, (method, payload) in request_payloads(n).items():
                handler, request_type = getattr(servicer, method), request_types[method]

                def one() -> None:
                    response = loop.run_until_complete(handler(request_type.FromString(payload), context))
                    response.SerializeToString()

                for _ in range(min(200, requests)):
                    one()
                cpu0 = time.process_time()
                for _ in range(requests):
                    one()
                per_request = (time.process_time() - cpu0) / requests * 1e6
                out.append(Measurement(f"handler in-process: {_name(api, n)}", detail={"requests": requests},
                                       server_cpu_us_per_request=round(per_request, 1)))
    finally:
        loop.close()
        manager.stop()
    return out


def _use_server_threads() -> str:
    """TensorFlow's thread pools as the server sets them; possible only before TensorFlow starts running."""
    import tensorflow as tf

    from serving.server import tf_thread_counts

    intra, inter = tf_thread_counts(-1, -1)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow already ran in this process (e.g. under pytest): keep its pools
        return "TensorFlow's thread pools were already fixed in this process (not the server's)"
    return f"intra-op {intra}, inter-op {inter} (as the server)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.commands.inference_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="round trips per measurement (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh servers per measurement; median reported")
    parser.add_argument("--sizes", default="1,32", help="examples (rows) per request, comma-separated")
    parser.add_argument("--results-dir", type=Path, default=Path("artifacts/results"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        parser.error("--sizes needs positive integers, e.g. 1,32")
    threads = _use_server_threads()
    from tests.serving.tfs_models import write_half_plus_two_tf1, write_model_config

    with tempfile.TemporaryDirectory(prefix="inference-cpu-") as tmp:
        base = Path(tmp) / MODEL
        write_half_plus_two_tf1(base, version_dir="1")
        config = write_model_config(Path(tmp) / "models.config", {MODEL: base})
        results = measure(config, sizes, args.requests, args.repeats)
        print("[inference_cpu] the server's handlers called in this process", flush=True)
        handlers = handler_cpu(base, sizes, args.requests)
    run_id = new_run_id("inference-cpu")
    out = args.results_dir / run_id / "inference_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run_id": run_id, "model": MODEL, "requests": args.requests, "repeats": args.repeats,
                               "measurements": [asdict(m) for m in results],
                               "handler_in_process": [asdict(m) for m in handlers],
                               "handler_threads": threads}, indent=2))
    print(f"\n{'API, request size':<50} {'server CPU/req (us), median [min-max]':>38} {'p50 (us)':>10}")
    for m in results:
        low, high = m.detail["spread_min_max"]["server_cpu_us_per_request"]
        cpu = f"{m.detail['server_cpu_us_per_request_median']:.0f} [{low:.0f}-{high:.0f}]"
        print(f"{m.name:<50} {cpu:>38} {m.p50_us:>10}")
    for m in handlers:
        print(f"{m.name:<60} {m.server_cpu_us_per_request:>10} us CPU per request")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
