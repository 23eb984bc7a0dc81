"""Reliability and security under load: rollouts, injected faults, hostile input, soak (`make reliability`).

One module per job:
  faults     broken/half-written versions, scratch model directories, filesystem sentinels
  load       a background gRPC load generator (closed or open loop) that records status, latency and the
             model version of every response, window by window
  memory     resident-memory sampling of the server process (psutil)
  hostile    Hypothesis strategies for hostile REST bodies, gRPC TensorProtos and model names/labels, and
             the checks that say what a correct answer to each is
  scenarios  the fault scenarios themselves (rollout, broken version, kill/restart, overload, deadline, soak)
  report     the result dataclasses, the printed table, JSON + Markdown files
  cli        `python -m benchmarks reliability`
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point used by `python -m benchmarks reliability ...` (benchmarks/__main__.py delegates here)."""
    from benchmarks.reliability.cli import main as _main

    return _main(argv)
