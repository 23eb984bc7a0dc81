"""The winner as ready-to-use files in <run>/best/, and the capacity plan for a target request rate.

best/batching_parameters.txt  the --batching_parameters_file (a comment only when the winner runs unbatched)
best/flags.txt                tensorflow_model_server flags, one a line (embedded-only settings as comments)
best/deployment.yaml, hpa.yaml docker/k8s/'s files with the plan's replicas and HPA bounds and the winner's
                              flags (written here; docker/k8s/ itself is not edited)
best/capacity.md              the plan and its arithmetic
Plan: each replica is run at 70 % of the winner's rate under the budget (the HPA's CPU target is 70 % too);
replicas = ceil(target / (0.7 x rate)) is the HPA's minimum, twice that its maximum (a burst of 2 x target).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from benchmarks.results.schema import atomic_write_text
from benchmarks.targets.managed import REPO_ROOT
from benchmarks.tune.launchers import BATCHING_FILE
from benchmarks.tune.space import TrialConfig

K8S = REPO_ROOT / "docker" / "k8s"
HEADROOM = 0.7  # each replica planned at this fraction of its measured rate under the budget
CONTAINER_BATCHING = "/config/batching.config"  # where deployment.yaml mounts the batching file


@dataclass(frozen=True)
class CapacityPlan:
    target_rps: float
    per_replica_rps: float  # the winner's rate under the budget

    @property
    def replicas(self) -> int:
        return max(1, math.ceil(self.target_rps / (HEADROOM * self.per_replica_rps)))

    @property
    def max_replicas(self) -> int:
        return 2 * self.replicas

    def text(self) -> str:
        return (f"target {self.target_rps:g} req/s; one replica holds {self.per_replica_rps:g} req/s within the "
                f"budget, planned at {HEADROOM:.0%} = {HEADROOM * self.per_replica_rps:.0f} req/s -> "
                f"replicas {self.replicas} (HPA minReplicas {self.replicas}, maxReplicas {self.max_replicas})")


def flags_text(config: TrialConfig) -> str:
    lines = [f"# tensorflow_model_server flags of the winner: {config.label()}",
             *config.server_flags(CONTAINER_BATCHING)]
    if config.mode == "xla":
        lines.append("--xla_cpu_compilation_enabled=true")
    extra = config.embedded_flags() + ([f"--mode={config.mode}"] if config.mode != "graph" else [])
    if extra:
        lines.append("# embedded server only (python -m serving serve): " + " ".join(extra))
    return "\n".join(lines) + "\n"


def deployment_text(template: str, config: TrialConfig, replicas: int) -> str:
    """deployment.yaml with `replicas` and the winner's flags in place of the batching ones."""
    text = re.sub(r"(?m)^(\s*replicas:)\s*\d+", rf"\g<1> {replicas}", template, count=1)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "- --monitoring_config_file" in line)
    indent = lines[at][: lines[at].index("-")]
    keep = [line for line in lines if "- --enable_batching" not in line and "- --batching_parameters_file" not in line]
    at = next(i for i, line in enumerate(keep) if "- --monitoring_config_file" in line)
    keep[at + 1:at + 1] = [f"{indent}- {flag}" for flag in config.server_flags(CONTAINER_BATCHING)]
    return "\n".join(keep) + "\n"


def hpa_text(template: str, plan: CapacityPlan) -> str:
    text = re.sub(r"(?m)^(\s*minReplicas:)\s*\d+", rf"\g<1> {plan.replicas}", template, count=1)
    return re.sub(r"(?m)^(\s*maxReplicas:)\s*\d+", rf"\g<1> {plan.max_replicas}", text, count=1)


def write_best(run_dir: Path, config: TrialConfig, plan: CapacityPlan | None, k8s: Path = K8S) -> list[Path]:
    best = Path(run_dir) / "best"
    best.mkdir(parents=True, exist_ok=True)
    files = {BATCHING_FILE: config.batching_text(), "flags.txt": flags_text(config)}
    if plan is not None:
        files["deployment.yaml"] = deployment_text((k8s / "deployment.yaml").read_text(), config, plan.replicas)
        files["hpa.yaml"] = hpa_text((k8s / "hpa.yaml").read_text(), plan)
        files["capacity.md"] = (f"# Capacity plan\n\n{plan.text()}.\n\nThe rate was measured on the tuning machine "
                                "with the load generator beside the server; the batching file goes into the "
                                "ConfigMap's batching.config (docker/k8s/configmap.yaml).\n")
    for name, text in files.items():
        atomic_write_text(best / name, text)
    return [best / name for name in files]
