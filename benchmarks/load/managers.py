"""The two load managers (perf_analyzer's concurrency and request-rate managers) and the measured point.

`LoadLoop` is the one place a request is sent and recorded into the one `Recorder`. A load manager decides
*when*; both have one interface, `start(loop) -> tasks` (stopped by `loop.stop`) or `run(loop)`, and an
optional budget (`requests`: exactly that many are sent). `ClosedLoop(concurrency)` keeps that many in
flight; `OpenLoop(rate, arrivals)` sends on a schedule fixed in advance (gaps of 1/rate, or seeded Poisson
gaps) and counts a late send's latency from its *intended* time, so a stalled server cannot hide behind a
client that stopped sending (coordinated omission). `measure_point` runs one manager for one point: warm-up,
then windows until perf_analyzer's stability rule holds (the last three windows' throughput and mean latency
within ±stability_pct of their average) or max_windows pass, CPU and the server's Prometheus delta taken over
them; the `MeasuredPoint` becomes a result row in `benchmarks/results/profiler.py`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

from benchmarks.clients.transports import Transport, ok
from benchmarks.measure import prometheus
from benchmarks.measure.cpu_meter import CpuMeter, CpuReading
from benchmarks.measure.recorder import Recorder, Window

ARRIVALS = ("constant", "poisson")
# --calls on the command line -> ClosedLoop.sync_calls (auto: blocking calls at one stream, where the transport can)
CALLS = {"auto": None, "sync": True, "async": False}


class LoadLoop:
    """Sends through `transport`, records into `recorder`; counts what was sent and is still in flight.

    version_of: reads the model version out of a successful response (None: not recorded).
    error_backoff_s: a closed-loop worker pauses this long after a failure -- a dead server fails instantly,
    and without a pause the loop would spin the CPU and starve the window timer (1 ms is far below any
    successful latency we care about).
    """

    def __init__(self, transport: Transport, payloads: list[bytes], recorder: Recorder | None = None, *,
                 error_backoff_s: float = 0.001, version_of: Callable[[bytes], int | None] | None = None) -> None:
        if not payloads:
            raise ValueError("the load loop needs at least one payload")
        self.transport, self.payloads, self.recorder = transport, payloads, recorder or Recorder()
        self.error_backoff_s, self.version_of = error_backoff_s, version_of
        self.sent = self.in_flight = 0
        self.stopping = False
        self._counting = threading.Lock()  # sent/in_flight, when blocking workers count from their threads

    def _begin(self) -> int:
        """Count a request going out; the counters are shared with blocking workers' threads, hence the lock."""
        with self._counting:
            self.sent += 1
            self.in_flight += 1
        return time.perf_counter_ns()

    async def send(self, payload: bytes, started_ns: int | None = None) -> str:
        """One request, recorded. started_ns: when it was due (open loop), so a late send counts as latency."""
        t0 = self._begin()
        if started_ns is not None:
            t0 = started_ns
        body = None
        try:
            status, body = await self.transport.send(payload)
        except asyncio.CancelledError:
            self.recorder.record("CANCELLED_BY_CLIENT", time.perf_counter_ns() - t0)
            self.in_flight -= 1
            raise
        except Exception as exc:  # anything else is still an outcome that must be counted
            status = type(exc).__name__
        self._record(status, body, t0)
        return status

    def send_blocking(self, sender, payload: bytes) -> str:
        """One request through a blocking sender (Transport.open_blocking), on a worker thread; recorded the same
        way."""
        t0 = self._begin()
        body = None
        try:
            status, body = sender.send(payload)
        except Exception as exc:
            status = type(exc).__name__
        self._record(status, body, t0)
        return status

    def _record(self, status: str, body: bytes | None, t0: int) -> None:
        version = self.version_of(body) if self.version_of and body is not None and ok(status) else None
        self.recorder.record(status, time.perf_counter_ns() - t0, version)
        with self._counting:
            self.in_flight -= 1

    async def stop(self, tasks: list[asyncio.Future], timeout_s: float) -> None:
        """Let in-flight requests finish (up to timeout_s), then cancel what is left (recorded as
        CANCELLED_BY_CLIENT before this returns)."""
        self.stopping = True
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for t in late:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class LoadManager:
    """The interface both managers share. requests: the budget (None: send until the loop stops)."""

    requests: int | None = None
    _left: int | None = None
    _taking = threading.Lock()  # the budget is shared by blocking workers' threads (one lock for all: uncontended)

    def _take(self, loop: LoadLoop) -> bool:
        """May one more request start? Not once the loop is stopping or the budget is spent."""
        with self._taking:
            if loop.stopping or (self._left is not None and self._left <= 0):
                return False
            if self._left is not None:
                self._left -= 1
            return True

    async def run(self, loop: LoadLoop) -> None:
        """Send until the request budget is spent (or the loop is stopped)."""
        await asyncio.gather(*self.start(loop))


@dataclass
class ClosedLoop(LoadManager):
    """`concurrency` workers, each keeping one request in flight until the loop stops or `requests` are sent.

    sync_calls: each worker a thread making blocking calls on a connection of its own (Transport.open_blocking),
    as perf_analyzer makes synchronous calls by default, instead of a task on the event loop. None (default):
    only at concurrency 1, where the loop has nothing to interleave and its turns are pure cost (~30-40 µs of a
    0.3-0.6 ms batch-1 call here; docs/performance.md, "Client fidelity"), and only for a transport that offers
    blocking calls (the REST and libcurl clients; grpc.aio does not).
    """

    concurrency: int
    requests: int | None = None
    sync_calls: bool | None = None

    def blocking(self, loop: LoadLoop) -> bool:
        """Will this manager's workers make blocking calls through `loop`'s transport?"""
        can = hasattr(loop.transport, "open_blocking")
        return can and (self.sync_calls if self.sync_calls is not None else self.concurrency == 1)

    def start(self, loop: LoadLoop) -> list[asyncio.Future]:
        loop.stopping, self._left = False, self.requests
        workers = range(max(1, self.concurrency))
        if not self.blocking(loop):
            return [asyncio.create_task(self._worker(loop, i)) for i in workers]
        # A thread per worker (the loop's default executor has fewer threads than a point may have workers).
        # Cancelling a worker's future does not stop its thread: it ends after its call in flight, once the loop
        # is stopping.
        pool = ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="load-worker")
        running = asyncio.get_running_loop()
        futures = [running.run_in_executor(pool, self._blocking_worker, loop, i) for i in workers]
        pool.shutdown(wait=False)  # the threads end with their workers
        return futures

    async def _worker(self, loop: LoadLoop, first: int) -> None:
        k = first
        while self._take(loop):
            status = await loop.send(loop.payloads[k % len(loop.payloads)])
            k += 1
            if not ok(status) and loop.error_backoff_s:
                await asyncio.sleep(loop.error_backoff_s)

    def _blocking_worker(self, loop: LoadLoop, first: int) -> None:
        sender = loop.transport.open_blocking()  # type: ignore[attr-defined]
        k = first
        try:
            while self._take(loop):
                status = loop.send_blocking(sender, loop.payloads[k % len(loop.payloads)])
                k += 1
                if not ok(status) and loop.error_backoff_s:
                    time.sleep(loop.error_backoff_s)
        finally:
            sender.close()


@dataclass
class OpenLoop(LoadManager):
    """Requests at `rate`/s on a schedule (constant or seeded Poisson gaps), latency from the intended time."""

    rate: float
    arrivals: str = "constant"
    max_in_flight: int | None = None  # None: no cap
    seed: int = 0
    requests: int | None = None
    dropped: int = field(default=0, init=False)  # sends skipped because max_in_flight were outstanding

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.arrivals not in ARRIVALS:
            raise ValueError(f"open loop needs rate > 0 and arrivals in {ARRIVALS}, not {self.rate}, {self.arrivals!r}")

    def intended_offsets_ns(self) -> Iterator[int]:
        """Send times from the start, in ns: k/rate, or cumulative exponential gaps of mean 1/rate."""
        rng = random.Random(self.seed)
        t = 0.0
        for k in itertools.count():
            if self.arrivals == "constant":
                yield round(k * 1e9 / self.rate)  # from k, not summed: no drift from rounding
                continue
            yield round(t * 1e9)
            t += rng.expovariate(self.rate)

    def start(self, loop: LoadLoop) -> list[asyncio.Task]:
        loop.stopping, self._left = False, self.requests
        return [asyncio.create_task(self._schedule(loop))]

    async def _schedule(self, loop: LoadLoop) -> None:
        pending: set[asyncio.Task] = set()
        start = time.perf_counter_ns()
        try:
            for k, offset in enumerate(self.intended_offsets_ns()):
                delay = (start + offset - time.perf_counter_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self._take(loop):
                    break
                if self.max_in_flight is not None and len(pending) >= max(1, self.max_in_flight):
                    self.dropped += 1
                    continue
                task = asyncio.create_task(loop.send(loop.payloads[k % len(loop.payloads)], started_ns=start + offset))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending)
        except asyncio.CancelledError:  # stopped past its timeout: what is still out is cut off and recorded
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise



def windows_stable(ws: list[Window], pct: float) -> tuple[bool, float]:
    """(stable?, worst relative deviation in %) over the last three windows."""
    worst = 0.0 if len(ws) >= 3 else math.inf
    for values in ([w.throughput for w in ws[-3:]], [w.mean_ms for w in ws[-3:]]) if len(ws) >= 3 else ():
        avg = sum(values) / 3
        if not avg > 0 or any(math.isnan(v) for v in values):  # no successes in a window: nothing to compare
            return False, math.inf
        worst = max(worst, *(abs(v - avg) / avg * 100 for v in values))
    return worst <= pct, worst


@dataclass
class WindowPlan:
    """How a point is measured. fixed_windows: exactly this many windows, all reported (no stability search),
    where a fixed duration matters more than stability."""

    window_s: float = 2.0
    max_windows: int = 10
    stability_pct: float = 10.0
    warmup_s: float = 0.5
    fixed_windows: int | None = None
    warmup_requests: int = 0  # sent first by the same manager, budgeted (a budgeted point warms up by these only)


@dataclass
class MeasuredPoint:
    """One point of load: the windows that make its figures, and what it cost (the profiler's input)."""

    load: dict  # the manager's row fields: {"concurrency": c} or {"target_rate": r}
    windows: list[Window]  # the reported windows (the last three, or all fixed ones)
    cpu: CpuReading | None  # over the measured windows; server pids' CPU too when they were given
    server_metrics: dict = field(default_factory=dict)  # Prometheus delta (prometheus.delta), {} if none
    stable: bool | None = None  # None: not judged (a fixed span)
    deviation_pct: float = math.inf
    window_throughputs: list[float] = field(default_factory=list)  # every measured window, req/s
    dropped: int = 0  # open loop: sends skipped at max_in_flight
    calls: str = "async"  # "sync": blocking calls on worker threads (ClosedLoop.sync_calls), "async": on the loop


async def _measure_windows(rec: Recorder, plan: WindowPlan) -> tuple[list[Window], bool, float]:
    windows: list[Window] = []
    stable, dev = False, math.inf
    while len(windows) < (plan.fixed_windows or plan.max_windows):
        await asyncio.sleep(plan.window_s)
        windows.append(rec.rotate())
        stable, dev = windows_stable(windows, plan.stability_pct)
        if stable and plan.fixed_windows is None:
            break
    return windows, stable, dev


async def measure_point(transport: Transport, payloads: list[bytes], manager: LoadManager,
                        plan: WindowPlan = WindowPlan(), *, server_pids: tuple[int, ...] = (),
                        metrics_url: str = "", model: str = "", error_backoff_s: float = 0.001) -> MeasuredPoint:
    """Run `manager` through `transport` for one point (see the module docstring); the transport stays open.
    A manager with a request budget is measured as one span, from the first request to the last answer."""
    loop = LoadLoop(transport, payloads, error_backoff_s=error_backoff_s)
    budgeted = manager.requests is not None
    if plan.warmup_requests:
        await dataclasses.replace(manager, requests=plan.warmup_requests).run(loop)

    async def scrape():  # on a thread: a blocking HTTP call on the event loop would stall requests in flight
        return await asyncio.to_thread(prometheus.scrape, metrics_url)

    before = await scrape() if budgeted else None  # before the first request: nothing sent may be dropped
    tasks = manager.start(loop)
    try:
        if not budgeted:  # a budget is warmed up by warmup_requests only
            await asyncio.sleep(plan.warmup_s)
            before = await scrape()
        loop.recorder.rotate()  # discard warm-up
        cpu = CpuMeter(server_pids)
        if budgeted:
            await asyncio.gather(*tasks)
            windows, stable, dev = [loop.recorder.rotate()], None, math.inf
        else:
            windows, stable, dev = await _measure_windows(loop.recorder, plan)
        reading = cpu.stop()
        server_metrics = prometheus.delta(before, await scrape(), model)
    finally:
        await loop.stop(tasks, max(5.0, getattr(transport, "timeout_s", 30.0)))
    if plan.fixed_windows is not None and plan.fixed_windows < 3:
        stable, dev = None, math.inf  # the rule needs three windows: not judged
    throughputs = [round(w.throughput, 1) for w in windows] if stable is not None else []
    load = {"target_rate": manager.rate} if isinstance(manager, OpenLoop) else {"concurrency": manager.concurrency}
    calls = "sync" if isinstance(manager, ClosedLoop) and manager.blocking(loop) else "async"
    return MeasuredPoint(load, windows if plan.fixed_windows else windows[-3:], reading,
                         server_metrics, stable, dev, throughputs, getattr(manager, "dropped", 0), calls)


def run_point(new_transport: Callable[[], Transport], payloads: list[bytes], manager: LoadManager,
              plan: WindowPlan = WindowPlan(), **kw) -> MeasuredPoint:
    """measure_point on an event loop of its own, with a transport made on it (a transport binds to the loop it
    is created on) and closed after; kw: measure_point's."""
    async def point() -> MeasuredPoint:
        transport = new_transport()
        try:
            return await measure_point(transport, payloads, manager, plan, **kw)
        finally:
            await transport.close()

    # uvloop (libuv) rather than asyncio's own loop: measured against wrk at one connection, batch 1/32/256,
    # two interleaved rounds on a quiet machine, our REST client's p50 went from 1.05-1.29x wrk's to 0.92-1.18x
    # (60-150 us less per request); the gRPC clients run on it unchanged (docs/performance.md, "Client fidelity").
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(point())
