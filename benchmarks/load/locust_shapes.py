"""Step ramp for Locust (add with `-f benchmarks/load/locustfile.py,benchmarks/load/locust_shapes.py`).

Settings (environment): BENCH_STEP_USERS users added per step (default 4), BENCH_STEP_SECONDS
step length (default 10), BENCH_STEPS number of steps (default 4), BENCH_STEP_SPAWN_RATE (default
= step users per second). The test stops after the last step.
"""
from __future__ import annotations

import os

from locust import LoadTestShape


class StepRampShape(LoadTestShape):
    step_users = int(os.environ.get("BENCH_STEP_USERS", "4"))
    step_seconds = float(os.environ.get("BENCH_STEP_SECONDS", "10"))
    steps = int(os.environ.get("BENCH_STEPS", "4"))
    spawn_rate = float(os.environ.get("BENCH_STEP_SPAWN_RATE", os.environ.get("BENCH_STEP_USERS", "4")))

    def tick(self):
        t = self.get_run_time()
        step = int(t // self.step_seconds)
        if step >= self.steps:
            return None
        return (step + 1) * self.step_users, self.spawn_rate
