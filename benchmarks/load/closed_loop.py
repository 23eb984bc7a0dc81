"""The load loop: send pre-built requests through a transport, record every response; closed-loop measurement
with windows and perf_analyzer's stability rule on top.

`LoadLoop` is the one place requests are sent and recorded (sweeps, capacity, wrk, the perf check, and the
reliability background load, which adds an open-loop sender). A closed loop keeps exactly `concurrency`
requests in flight: each worker sends, waits, records, repeats, until the loop is stopped or its request
budget is spent.

`run_closed_loop` cuts time into windows; after each window it looks at the last three: the point is
*stable* when their throughput and mean latency all lie within ±stability_pct of the three-window average
(perf_analyzer's rule). It stops at the first stable triple or after max_windows; a point that never
stabilised is reported with stable=False and a warning instead of silently. The reported numbers are the
merged last three windows.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from benchmarks.clients.transports import Transport, ok
from benchmarks.measure.cpu import CPU_SATURATION_PCT, CpuMeter, CpuReading
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.recorder import Recorder, Window, merge


class LoadLoop:
    """Sends through `transport`, records into `recorder`; counts what was sent and is still in flight.

    version_of: reads the model version out of a successful response (None: not recorded).
    error_backoff_s: a closed-loop worker pauses this long after a failure -- a dead server fails instantly,
    and without a pause the loop would spin the CPU and starve the window timer (1 ms is far below any
    successful latency we care about).
    """

    def __init__(self, transport: Transport, payloads: list[bytes], recorder: Recorder, *,
                 error_backoff_s: float = 0.001, version_of: Callable[[bytes], int | None] | None = None) -> None:
        if not payloads:
            raise ValueError("the load loop needs at least one payload")
        self.transport = transport
        self.payloads = payloads
        self.recorder = recorder
        self.error_backoff_s = error_backoff_s
        self.version_of = version_of
        self.sent = 0
        self.in_flight = 0
        self.stopping = False
        self.budget: int | None = None  # requests the closed-loop workers may still start (None: no limit)

    async def send(self, payload: bytes, started_ns: int | None = None) -> str:
        """One request, recorded. started_ns: when it was due (open loop), so a late send counts as latency."""
        t0 = started_ns if started_ns is not None else time.perf_counter_ns()
        self.sent += 1
        self.in_flight += 1
        body = None
        try:
            status, body = await self.transport.send(payload)
        except asyncio.CancelledError:
            self.recorder.record("CANCELLED_BY_CLIENT", time.perf_counter_ns() - t0)
            self.in_flight -= 1
            raise
        except Exception as exc:  # anything else is still an outcome that must be counted
            status = type(exc).__name__
        version = self.version_of(body) if self.version_of and body is not None and ok(status) else None
        self.recorder.record(status, time.perf_counter_ns() - t0, version)
        self.in_flight -= 1
        return status

    def _may_send(self) -> bool:
        if self.stopping:
            return False
        if self.budget is None:
            return True
        if self.budget <= 0:
            return False
        self.budget -= 1
        return True

    async def _worker(self, first: int) -> None:
        k = first
        while self._may_send():
            status = await self.send(self.payloads[k % len(self.payloads)])
            k += 1
            if not ok(status) and self.error_backoff_s:
                await asyncio.sleep(self.error_backoff_s)

    def start_closed(self, concurrency: int) -> list[asyncio.Task]:
        """`concurrency` workers, each keeping one request in flight until stop() or the budget ends."""
        self.stopping = False
        return [asyncio.create_task(self._worker(i)) for i in range(max(1, concurrency))]

    async def run_requests(self, concurrency: int, requests: int) -> None:
        """Exactly `requests` requests at `concurrency` in flight; returns when all are answered."""
        self.budget = requests
        try:
            await asyncio.gather(*self.start_closed(concurrency))
        finally:
            self.budget = None

    async def stop(self, tasks: list[asyncio.Task], timeout_s: float) -> None:
        """Let in-flight requests finish (up to timeout_s), then cancel what is left (recorded as
        CANCELLED_BY_CLIENT before this returns)."""
        self.stopping = True
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for t in late:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def windows_stable(ws: list[Window], pct: float) -> tuple[bool, float]:
    """(stable?, worst relative deviation in %) over the last three windows."""
    if len(ws) < 3:
        return False, math.inf
    last = ws[-3:]
    worst = 0.0
    for values in ([w.throughput for w in last], [w.mean_ms for w in last]):
        if any(math.isnan(v) for v in values):
            return False, math.inf
        avg = sum(values) / 3
        if avg <= 0:
            return False, math.inf
        worst = max(worst, max(abs(v - avg) / avg * 100 for v in values))
    return worst <= pct, worst


@dataclass
class ClosedResult:
    concurrency: int
    hist: LatencyHistogram
    errors: dict[str, int]
    duration_s: float
    windows: int
    stable: bool
    deviation_pct: float
    client_cpu_pct: float
    system_cpu_pct: float
    window_throughputs: list[float] = field(default_factory=list)
    wall_s: float = 0.0  # whole point including warm-up
    loop_cpu_pct: float = 0.0  # the event-loop thread alone (100 = one core); what saturates first
    cpu: CpuReading | None = None  # the measured windows' CPU (server's too, when its pids were given)

    @property
    def saturated(self) -> bool:
        return self.loop_cpu_pct >= CPU_SATURATION_PCT

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    def warnings(self) -> list[str]:
        out = []
        if not self.stable:
            out.append(f"unstable: last 3 of {self.windows} windows differ by up to {self.deviation_pct:.1f}%")
        if self.saturated:
            out.append(f"load generator near saturation (event loop {self.loop_cpu_pct:.0f}% of a core, process "
                       f"{self.client_cpu_pct:.0f}%): numbers may reflect the client, not the server")
        if self.n_errors:
            out.append(f"{self.n_errors} failed requests: {self.errors}")
        return out


async def _measure_windows(rec: Recorder, window_s: float, max_windows: int, stability_pct: float,
                           fixed_windows: int | None) -> tuple[list[Window], bool, float]:
    windows: list[Window] = []
    stable, dev = False, math.inf
    while len(windows) < (fixed_windows or max_windows):
        await asyncio.sleep(window_s)
        windows.append(rec.rotate())
        stable, dev = windows_stable(windows, stability_pct)
        if stable and fixed_windows is None:
            break
    return windows, stable, dev


async def run_closed_loop(transport: Transport, payloads: list[bytes], concurrency: int, *,
                          window_s: float = 2.0, max_windows: int = 10, stability_pct: float = 10.0,
                          warmup_s: float = 0.5, error_backoff_s: float = 0.001,
                          fixed_windows: int | None = None, server_pids: tuple[int, ...] = ()) -> ClosedResult:
    """Drive `concurrency` workers; return merged stats of the last 3 windows (or all, see below).

    fixed_windows: run exactly this many windows and report all of them (no stability search) --
    used where a fixed duration matters more than stability (e.g. fault-injection runs).
    server_pids: also charge these processes' CPU over the measured windows (ClosedResult.cpu.pids_s).
    """
    rec = Recorder()
    loop = LoadLoop(transport, payloads, rec, error_backoff_s=error_backoff_s)
    t_begin = time.perf_counter()
    tasks = loop.start_closed(concurrency)
    try:
        if warmup_s > 0:
            await asyncio.sleep(warmup_s)
        rec.rotate()  # discard warm-up
        cpu = CpuMeter(server_pids)
        windows, stable, dev = await _measure_windows(rec, window_s, max_windows, stability_pct, fixed_windows)
        reading = cpu.stop()
    finally:
        await loop.stop(tasks, max(5.0, getattr(transport, "timeout_s", 30.0)))
    hist, errors = merge(windows if fixed_windows else windows[-3:])
    duration = sum(w.duration_s for w in (windows if fixed_windows else windows[-3:]))
    return ClosedResult(concurrency, hist, errors, duration, len(windows), stable, dev, reading.process_pct,
                        reading.machine_pct, [round(w.throughput, 1) for w in windows],
                        time.perf_counter() - t_begin, reading.thread_pct, reading)
