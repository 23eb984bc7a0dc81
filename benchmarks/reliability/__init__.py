"""Reliability and security under load: rollouts, injected faults, hostile input, soak (`make reliability`).

One module per job:
  cli          `python -m benchmarks reliability`: its arguments and the phases in order
  scenarios    the fault scenarios themselves (capacity, rollout, broken version, kill/restart, overload,
               deadline, soak)
  load         the background gRPC load (closed or open loop) a scenario runs while it injects a fault
  client       synchronous calls between and after faults (version states, one checked request, the
               server's own request counter)
  faults       broken/half-written versions, scratch model directories, filesystem sentinels
  hostile      Hypothesis strategies for hostile REST bodies, gRPC TensorProtos and model names/labels, and
               the checks that say what a correct answer to each is
  hostile_run  sends the hostile cases to a live server and tallies the answers
  memory       resident-memory sampling of the server process (psutil)
  summary      the result dataclasses, the printed table, JSON + Markdown files
"""
