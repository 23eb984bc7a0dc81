"""What a Locust master learns about its workers, kept so a run can say who sent what, when, and on how much CPU.

Each worker ships, with every stats report (every 3 s in Locust), its identity (host, pid), its cumulative
request counts per transport, the times of its first and last request and its CPU seconds since the test
started (process and main thread); the master also keeps the CPU figure each worker's heartbeat carries
(Locust's own, measured every 10 s from the worker's start, the first real figure 20 s in: none on short
runs). A worker that stops heartbeating (killed, network gone) or quits before the test ends is recorded as
lost, with when. From that the summary says: the requests per worker (their sum reconciles with the master's
own count), each worker's CPU and whether it was saturated, and over which intervals how many workers were
sending.

Times are the workers' and the master's `time.time()`: across machines they agree only as well as the clocks do.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from benchmarks.measure.cpu_meter import CPU_SATURATION_PCT


@dataclass
class WorkerRecord:
    client_id: str
    host: str = ""
    pid: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # transport -> cumulative successes + failures
    errors: dict[str, int] = field(default_factory=dict)  # transport -> cumulative failures
    first_request: float | None = None
    last_request: float | None = None
    cpu: list[float] = field(default_factory=list)  # [t0, process s, main thread s, t1, process s, main s]
    cpu_samples: list[float] = field(default_factory=list)  # Locust's own % of one core, from heartbeats
    lost_at: float | None = None  # master's clock when the worker went missing or quit early
    lost_how: str = ""  # missing (no heartbeat) | quit

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}" if self.host else self.client_id

    def cpu_percent(self) -> tuple[float | None, float | None]:
        """(whole process, main thread) in % of one core from the test's start to the worker's last report.
        The main thread is what saturates a Locust worker: its users are greenlets on it."""
        if len(self.cpu) != 6 or self.cpu[3] <= self.cpu[0]:
            return None, None
        wall = self.cpu[3] - self.cpu[0]
        main = (self.cpu[5] - self.cpu[2]) / wall * 100
        return round((self.cpu[4] - self.cpu[1]) / wall * 100, 1), None if math.isnan(main) else round(main, 1)

    def summary(self, t0: float) -> dict:
        process, main = self.cpu_percent()
        samples = self.cpu_samples
        out = {k: v for k, v in asdict(self).items() if k not in ("cpu", "cpu_samples", "first_request",
                                                                  "last_request", "lost_at")}
        out.update(name=self.name, cpu_percent=process, main_thread_cpu_percent=main,
                   saturated=None if main is None else main >= CPU_SATURATION_PCT,
                   locust_cpu_percent_mean=round(sum(samples) / len(samples), 1) if samples else None,
                   sending_from_s=_rel(self.first_request, t0), sending_to_s=_rel(self.last_request, t0),
                   lost_at_s=_rel(self.lost_at, t0))
        return out


def _rel(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 2)


class WorkerLedger:
    def __init__(self) -> None:
        self.workers: dict[str, WorkerRecord] = {}

    def worker(self, client_id: str) -> WorkerRecord:
        return self.workers.setdefault(client_id, WorkerRecord(client_id))

    def record_report(self, client_id: str, report: dict) -> None:
        """`report` is what the worker's locustfile put under "bench_worker": cumulative, so the latest wins."""
        w = self.worker(client_id)
        w.host, w.pid = report.get("host", w.host), int(report.get("pid", w.pid))
        w.requests, w.errors = dict(report.get("requests", {})), dict(report.get("errors", {}))
        firsts = [t for t in (w.first_request, report.get("first_request")) if t is not None]
        w.first_request = min(firsts) if firsts else None
        w.last_request = report.get("last_request", w.last_request)
        w.cpu = list(report.get("cpu", w.cpu))

    def record_cpu(self, client_id: str, cpu_percent: float) -> None:
        """A heartbeat's CPU figure. Locust measures it every 10 s and reports 0 until its first measurement, so a
        0 is no reading (a worker that is sending is never at exactly 0 %)."""
        if cpu_percent > 0:
            self.worker(client_id).cpu_samples.append(float(cpu_percent))

    def record_lost(self, client_id: str, how: str, at: float) -> None:
        w = self.worker(client_id)
        if w.lost_at is None:
            w.lost_at, w.lost_how = at, how

    def summary(self, t0: float) -> dict:
        return {"workers": [w.summary(t0) for w in self.workers.values()],
                "sending_intervals": sending_intervals(
                    [(w.first_request, w.last_request) for w in self.workers.values()], t0)}


def sending_intervals(spans: list[tuple[float | None, float | None]], t0: float) -> list[dict]:
    """[(first, last request time)] per worker -> [{from_s, to_s, workers}]: the stretches of the run (seconds
    after t0) over which the same number of workers were sending."""
    edges = sorted({t for span in spans if None not in span for t in span})
    out: list[dict] = []
    for a, b in zip(edges, edges[1:]):
        n = sum(1 for f, l in spans if f is not None and l is not None and f <= a and l >= b)
        if out and out[-1]["workers"] == n:
            out[-1]["to_s"] = round(b - t0, 2)
        else:
            out.append({"from_s": round(a - t0, 2), "to_s": round(b - t0, 2), "workers": n})
    return out
