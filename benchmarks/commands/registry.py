"""Every `python -m benchmarks` command, in the order --help lists them.

A command is a module exposing ``add_arguments(parser) -> None`` and ``main(args) -> int``; here it gets
its name and one-line help. benchmarks/__main__.py imports a command's module only when that command
runs or its own --help is asked for, so `python -m benchmarks --help` loads none of them (nor
TensorFlow, matplotlib, Locust). A module that serves several commands (served.py: grpc, rest, sweep,
loadgen) reads which one it is building from ``parser.get_default("command")``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

INTERFACE = ("add_arguments", "main")


@dataclass(frozen=True)
class Command:
    name: str  # what follows `python -m benchmarks`
    module: str  # dotted module path, imported lazily
    help: str  # one line for the command list

    def load(self) -> ModuleType:
        module = importlib.import_module(self.module)
        missing = [f for f in INTERFACE if not callable(getattr(module, f, None))]
        if missing:
            names = " and ".join(f"{f}()" for f in missing)
            raise RuntimeError(f"command {self.name!r}: {self.module} does not define {names} "
                               "(every command module exposes add_arguments(parser) and main(args))")
        return module


_C = "benchmarks.commands."
COMMANDS = (
    Command("inprocess", _C + "inprocess",
            "Keras eager / predict_on_batch / tf.function / XLA / SavedModel, per batch size"),
    Command("grpc", _C + "served", "GRPC Predict: closed-loop concurrency sweep (+ optional LoadGen scenarios)"),
    Command("rest", _C + "served", "REST Predict: closed-loop concurrency sweep (+ optional LoadGen scenarios)"),
    Command("sweep", _C + "served", "closed-loop concurrency sweep only (perf_analyzer's stability rule)"),
    Command("loadgen", _C + "served", "MLPerf LoadGen open-loop scenarios only (give --loadgen SCENARIO ...)"),
    Command("capacity", _C + "capacity", "load-generator capacity: drive a no-op server as hard as possible"),
    Command("noop-server", _C + "noop_server",
            "serve a no-op Predict over gRPC and REST (capacity tests, tooling tests)"),
    Command("locust", _C + "locust", "Locust headless load test (gRPC + REST users; --workers N for distributed)"),
    Command("compare", _C + "compare",
            "compare two runs: %% change + bootstrap verdict; exit 1 on a significant regression, 2 when the runs "
            "share no comparable row"),
    Command("suite", _C + "suite", "standard suite: in-process + gRPC + REST (+ LoadGen) against the embedded server"),
    Command("demo", _C + "demo",
            "end to end: export if needed, graph vs eager server, all tables and plots (<10 min)"),
    Command("wrk", _C + "wrk", "cross-check our REST client's p50 against wrk at the same concurrency"),
    Command("perf-analyzer", _C + "perf_analyzer",
            "cross-check: Triton's perf_analyzer beside our gRPC clients, same target, model and points"),
    Command("report", _C + "report", "re-render report.md and plots of an existing run"),
    Command("readme", _C + "readme", "write a run's findings into README.md's results block, naming the run"),
    Command("perf-check", _C + "perf_check",
            "embedded server cost on top of the model: overhead vs in-process + bare gRPC, batching, eager/graph"),
    Command("graph-call", _C + "graph_call",
            "which way of calling a restored SavedModel signature costs least (batch 1)"),
    Command("inference-cpu", _C + "inference_cpu",
            "server CPU per request of Classify, Regress and MultiInference next to Predict (TF1 half-plus-two)"),
    Command("reliability", "benchmarks.reliability.cli",
            "rollout, broken versions, kill/restart, overload, hostile input, soak"),
)


def find(name: str) -> Command | None:
    return next((c for c in COMMANDS if c.name == name), None)
