"""The reliability report: one dataclass holding every phase's figures, a printed table, JSON + Markdown.

The tables answer in one screen: how much load was held and for how long, which
faults were injected and whether each was survived, which hostile inputs were tried (by kind) and how many
got a wrong answer, how many requests were lost (must be 0), and how much the server's memory grew.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.results.report import table
from benchmarks.results.schema import atomic_write_text, json_safe

REPORT_JSON = "reliability.json"
REPORT_MD = "reliability.md"


@dataclass
class FaultLine:
    """One row of the faults table."""

    fault: str
    injected: str  # what was done
    survived: bool
    requests: int  # requests sent during the fault
    failed: int  # requests that failed and should not have
    detail: str  # the figure that matters (switch-over time, status message, ...)


@dataclass
class ReliabilityReport:
    run_id: str
    environment: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    capacity: dict[str, Any] = field(default_factory=dict)
    faults: list[FaultLine] = field(default_factory=list)
    phases: dict[str, Any] = field(default_factory=dict)  # full figures of every phase (asdict of scenario results)
    hostile: dict[str, Any] = field(default_factory=dict)  # HostileResult.as_dict()
    load_held: list[dict[str, Any]] = field(default_factory=list)  # {"phase", "rps", "seconds", "requests"}
    memory: dict[str, Any] = field(default_factory=dict)  # {"phase": MemoryStats.as_dict()}
    notes: list[str] = field(default_factory=list)

    # -------------------------------------------------------------------------------- verdicts
    @property
    def requests_lost(self) -> int:
        """Requests that failed where the promise is zero failures, plus measurements missing from files."""
        return sum(f.failed for f in self.faults)

    @property
    def hostile_wrong(self) -> int:
        return int(self.hostile.get("failed", 0)) if self.hostile else 0

    @property
    def passed(self) -> bool:
        return self.requests_lost == 0 and all(f.survived for f in self.faults) and self.hostile_wrong == 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["summary"] = {"requests_lost": self.requests_lost, "faults_survived": sum(f.survived for f in self.faults),
                        "faults_injected": len(self.faults), "hostile_wrong_answers": self.hostile_wrong,
                        "hostile_tried": int(self.hostile.get("total", 0)) if self.hostile else 0,
                        "passed": self.passed}
        return json_safe(d)


def render_markdown(r: ReliabilityReport) -> str:
    env = r.environment
    out = [f"# Reliability run {r.run_id}", "",
           f"- machine: {env.get('cpu_model', '?')} · {env.get('cpu_cores_logical', '?')} cores · "
           f"{env.get('memory_gib', '?')} GiB · server: embedded ({env.get('server_mode', 'graph')}) · "
           f"git {str(env.get('git_commit', ''))[:10]}",
           "- settings: " + ", ".join(f"{k}={v}" for k, v in r.settings.items()), "",
           f"**Verdict: {'PASS' if r.passed else 'FAIL'}** — requests lost: **{r.requests_lost}** · faults survived "
           f"{sum(f.survived for f in r.faults)}/{len(r.faults)} · hostile inputs tried "
           f"{r.hostile.get('total', 0) if r.hostile else 0}, wrong answers {r.hostile_wrong}", ""]
    if r.load_held:
        out += ["## Load held", "", table(["phase", "req/s", "seconds", "requests", "failed"],
                                          [[x["phase"], x["rps"], x["seconds"], x["requests"], x.get("failed", 0)]
                                           for x in r.load_held]), ""]
    if r.faults:
        out += ["## Faults injected", "", table(
            ["fault", "what was done", "survived", "requests", "lost", "figure"],
            [[f.fault, f.injected, f.survived, f.requests, f.failed, f.detail] for f in r.faults]), ""]
    if r.hostile:
        if r.hostile.get("skipped"):
            out += ["## Hostile input", "", f"skipped: {r.hostile['skipped']}", ""]
        else:
            tried, fails = r.hostile.get("tried", {}), r.hostile.get("failures", {})
            out += ["## Hostile input (Hypothesis, derandomized)", "", table(
                ["kind", "tried", "wrong answers"], [[k, v, fails.get(k, 0)] for k, v in sorted(tried.items())])]
            out += ["", f"server RSS {r.hostile.get('rss_before_mib')} → {r.hostile.get('rss_after_mib')} MiB; "
                        f"valid request afterwards: "
                        + ", ".join(f"{k} {'ok' if v is None else 'FAILED: ' + v}"
                                    for k, v in r.hostile.get("valid_after", {}).items())
                    + f"; sentinel files created: {len(r.hostile.get('sentinel_created', []))}, "
                      f"changed: {len(r.hostile.get('sentinel_changed', []))}", ""]
            problems = r.hostile.get("problems", {})
            if problems:
                out += ["### Wrong answers (examples)", ""]
                for kind, lst in sorted(problems.items()):
                    out += [f"- **{kind}**: {p}" for p in lst[:3]]
                out += [""]
    if r.memory:
        out += ["## Server memory", "", table(
            ["phase", "start MiB", "end MiB", "peak MiB", "growth %"],
            [[k, m.get("start_mib"), m.get("end_mib"), m.get("peak_mib"), m.get("growth_pct")]
             for k, m in r.memory.items()]), ""]
    if r.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in r.notes] + [""]
    return "\n".join(out)


render_text = render_markdown  # what `make reliability` prints: the same tables, Markdown reads as plain text


def write_report(r: ReliabilityReport, run_dir: Path) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    j, m = run_dir / REPORT_JSON, run_dir / REPORT_MD
    atomic_write_text(j, json.dumps(r.to_dict(), indent=1, allow_nan=False, default=str) + "\n")
    atomic_write_text(m, render_markdown(r) + "\n")
    return j, m


def load_report(path: Path) -> dict[str, Any]:
    p = Path(path)
    return json.loads((p / REPORT_JSON if p.is_dir() else p).read_text())
