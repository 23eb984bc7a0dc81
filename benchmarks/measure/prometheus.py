"""Server-side figures from a Prometheus text endpoint (TF Serving: /monitoring/prometheus/metrics).

We scrape before and after a measured point and report the difference, so numbers belong to that
point only: request count by status, mean server-side request latency (TF Serving records µs), and
mean batch size where the batching session exposes it. Parsing uses prometheus_client's parser.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import requests
from prometheus_client.parser import text_string_to_metric_families

from export.contract import (INPUT_BATCH_SIZE, PROCESSED_BATCH_SIZE, REQUEST_COUNT, REQUEST_LATENCY,
                             REQUEST_STAGE_LATENCY, REQUEST_STAGES, RUNTIME_LATENCY)

BATCH_SIZE_NAMES = (PROCESSED_BATCH_SIZE, INPUT_BATCH_SIZE)


@dataclass
class Snapshot:
    # (metric sample name, sorted label items) -> value
    samples: dict[tuple[str, tuple], float] = field(default_factory=dict)

    def total(self, name: str, **match: str) -> float:
        tot = 0.0
        names = (name, name + "_total")  # counters may be exposed with or without the _total suffix
        for (n, labels), v in self.samples.items():
            if n in names and all(dict(labels).get(k) == val for k, val in match.items()):
                tot += v
        return tot

    def by_label(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = {}
        names = (name, name + "_total")
        for (n, labels), v in self.samples.items():
            d = dict(labels)
            if n in names and all(d.get(k) == val for k, val in match.items()):
                out[d.get(label, "")] = out.get(d.get(label, ""), 0.0) + v
        return out


def parse(text: str) -> Snapshot:
    snap = Snapshot()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            snap.samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return snap


def scrape(url: str, timeout_s: float = 5.0) -> Snapshot | None:
    """None when the endpoint is absent or unreachable: server metrics are optional extras."""
    if not url:
        return None
    try:
        r = requests.get(url, timeout=timeout_s)
        if r.status_code != 200:
            return None
        return parse(r.text)
    except requests.RequestException:
        return None


def delta(before: Snapshot | None, after: Snapshot | None, model: str = "") -> dict:
    """Server-side summary of what happened between two scrapes (empty dict when unavailable)."""
    if before is None or after is None:
        return {}
    m = {"model_name": model} if model else {}
    out: dict = {}
    counts = {k: v - before.by_label(REQUEST_COUNT, "status", **m).get(k, 0.0)
              for k, v in after.by_label(REQUEST_COUNT, "status", **m).items()}
    if counts:
        out["request_count_by_status"] = {k: int(v) for k, v in counts.items() if v}
    for name, key in ((REQUEST_LATENCY, "request_latency"), (RUNTIME_LATENCY, "runtime_latency")):
        n = after.total(name + "_count", **m) - before.total(name + "_count", **m)
        s = after.total(name + "_sum", **m) - before.total(name + "_sum", **m)
        if n > 0:
            out[f"{key}_mean_ms"] = s / n / 1000.0  # TF Serving records microseconds
            out[f"{key}_count"] = int(n)
    stages = _stage_means_us(before, after, m)
    if stages:
        out["stage_mean_us"] = stages
    for name in BATCH_SIZE_NAMES:
        n = after.total(name + "_count", **m) - before.total(name + "_count", **m)
        s = after.total(name + "_sum", **m) - before.total(name + "_sum", **m)
        if n > 0:
            out[name.rsplit(":", 1)[1] + "_mean"] = s / n
            out[name.rsplit(":", 1)[1] + "_batches"] = int(n)
    return out


def _stage_means_us(before: Snapshot, after: Snapshot, match: dict[str, str]) -> dict[str, dict[str, float]]:
    """The embedded server's per-stage Predict time (µs, mean over the span) by entrypoint (GRPC / REST)."""
    out: dict[str, dict[str, float]] = {}
    for entrypoint in ("GRPC", "REST"):
        means = {}
        for stage in REQUEST_STAGES:
            sel = dict(match, entrypoint=entrypoint, stage=stage)
            n = after.total(REQUEST_STAGE_LATENCY + "_count", **sel) - before.total(REQUEST_STAGE_LATENCY + "_count", **sel)
            if n > 0:
                means[stage] = round((after.total(REQUEST_STAGE_LATENCY + "_sum", **sel)
                                      - before.total(REQUEST_STAGE_LATENCY + "_sum", **sel)) / n, 1)
        if means:
            out[entrypoint] = means
    return out
