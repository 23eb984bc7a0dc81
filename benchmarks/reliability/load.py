"""A background gRPC load generator for "load while X happens" experiments.

The benchmark engine (benchmarks/engine.py) answers "how fast"; this one answers "what happened to every
request while we rolled out, broke, killed or overloaded the server". It runs its own asyncio loop in a
thread (so the test or CLI can do the fault in the foreground), sends pre-serialised PredictRequests and,
for every response, records:
  * the status (gRPC code name) and latency: successes into an HdrHistogram, failures counted by status;
  * which model version answered (PredictResponse.model_spec.version): that is how a rollout's switch-over
    is observed from the outside, exactly as a client would see it;
  * per-window tallies (default 1 s), handed to an optional callback as they close, so a result file can be
    flushed while the run is still going (and survive a crash of either side).
Closed loop (`concurrency` workers back to back) or open loop (`rate` requests/s, latency measured from the
*intended* send time so a stalled server cannot hide behind a slowed-down client, as wrk2/LoadGen do).

Reconnection: the channel's reconnect backoff is capped at 0.5 s (gRPC's default grows to 120 s), so when a
killed server comes back the very next attempts reach it.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from benchmarks.measure.histogram import LatencyHistogram
from export.contract import PREDICT_METHOD

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_receive_message_length", 64 * 2**20),
    ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass
class LoadConfig:
    target: str  # host:port of the gRPC endpoint
    payload: bytes  # serialised PredictRequest
    concurrency: int = 4  # closed loop: workers; open loop: cap on requests in flight
    rate: float | None = None  # open loop requests/s; None = closed loop
    timeout_s: float = 10.0  # per-request deadline
    window_s: float = 1.0
    error_backoff_s: float = 0.01  # a dead server fails instantly: do not spin
    track_versions: bool = True


@dataclass
class Window:
    """What happened in one time slice [t0, t1) (seconds since the load started)."""

    index: int
    t0: float
    t1: float
    ok: int
    errors: dict[str, int]
    hist: LatencyHistogram
    versions: dict[int, int]

    @property
    def sent(self) -> int:
        return self.ok + sum(self.errors.values())


@dataclass
class LoadSummary:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    unaccounted: int = 0  # sent but never finished (should be 0 once stopped)
    dropped_open_loop: int = 0  # open loop: sends skipped because `concurrency` were already in flight
    duration_s: float = 0.0
    hist: LatencyHistogram = field(default_factory=LatencyHistogram)
    error_hist: LatencyHistogram = field(default_factory=LatencyHistogram)  # how fast failures came back
    windows: list[Window] = field(default_factory=list)
    version_counts: dict[int, int] = field(default_factory=dict)
    version_first_seen: dict[int, float] = field(default_factory=dict)  # time.monotonic()
    version_last_seen: dict[int, float] = field(default_factory=dict)
    started_at: float = 0.0  # time.monotonic()

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0


class BackgroundLoad:
    """`with BackgroundLoad(cfg) as load: <fault>`; then `load.summary`. Or start()/stop()."""

    def __init__(self, config: LoadConfig, on_window: Callable[[Window], None] | None = None) -> None:
        self.cfg = config
        self.on_window = on_window
        self.summary = LoadSummary()
        self._lock = threading.Lock()
        self._stop_flag = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._in_flight = 0
        # current window
        self._w_ok = 0
        self._w_err: Counter[str] = Counter()
        self._w_hist = LatencyHistogram()
        self._w_versions: Counter[int] = Counter()
        self._w_t0 = 0.0

    # ------------------------------------------------------------------ recording
    def _record(self, status: str, latency_ns: int, version: int | None) -> None:
        now = time.monotonic()
        s = self.summary
        with self._lock:
            if status == "OK":
                s.ok += 1
                s.hist.record_ns(latency_ns)
                self._w_ok += 1
                self._w_hist.record_ns(latency_ns)
                if version is not None:
                    s.version_counts[version] = s.version_counts.get(version, 0) + 1
                    s.version_first_seen.setdefault(version, now)
                    s.version_last_seen[version] = now
                    self._w_versions[version] += 1
            else:
                s.errors[status] = s.errors.get(status, 0) + 1
                s.error_hist.record_ns(latency_ns)
                self._w_err[status] += 1

    def _rotate(self) -> Window:
        now = time.monotonic() - self.summary.started_at
        with self._lock:
            w = Window(len(self.summary.windows), self._w_t0, now, self._w_ok, dict(self._w_err), self._w_hist,
                       dict(self._w_versions))
            self.summary.windows.append(w)
            self._w_ok, self._w_err, self._w_hist, self._w_versions = 0, Counter(), LatencyHistogram(), Counter()
            self._w_t0 = now
        if self.on_window is not None:
            self.on_window(w)
        return w

    def snapshot(self) -> tuple[int, int, dict[str, int]]:
        """(sent, ok, errors) so far, safe to call from any thread (for progress lines)."""
        with self._lock:
            return self.summary.sent, self.summary.ok, dict(self.summary.errors)

    # ------------------------------------------------------------------ the loop
    async def _main(self) -> None:
        import grpc

        from benchmarks.clients import protos

        predict_pb2 = protos.get("predict_pb2")
        cfg = self.cfg
        channel = grpc.aio.insecure_channel(cfg.target, options=CHANNEL_OPTIONS)
        call = channel.unary_unary(PREDICT_METHOD)
        sem = asyncio.Semaphore(max(1, cfg.concurrency))

        def version_of(resp: bytes) -> int | None:
            if not cfg.track_versions:
                return None
            r = predict_pb2.PredictResponse.FromString(resp)
            return r.model_spec.version.value if r.model_spec.HasField("version") else None

        async def one(intended_ns: int | None) -> None:
            t0 = intended_ns if intended_ns is not None else time.perf_counter_ns()
            with self._lock:
                self.summary.sent += 1
                self._in_flight += 1
            try:
                resp = await call(cfg.payload, timeout=cfg.timeout_s)
                status, version = "OK", version_of(resp)
            except grpc.aio.AioRpcError as e:
                status, version = e.code().name, None
            except asyncio.CancelledError:
                status, version = "CANCELLED_BY_CLIENT", None
            except Exception as e:  # anything else is still an outcome we must count
                status, version = type(e).__name__, None
            self._record(status, time.perf_counter_ns() - t0, version)
            with self._lock:
                self._in_flight -= 1
            if status != "OK" and cfg.error_backoff_s and intended_ns is None:
                await asyncio.sleep(cfg.error_backoff_s)

        async def closed_worker() -> None:
            while not self._stop_flag:
                await one(None)

        async def open_sender() -> None:
            interval_ns = int(1e9 / cfg.rate)
            start = time.perf_counter_ns()
            i = 0
            pending: set[asyncio.Task] = set()
            while not self._stop_flag:
                intended = start + i * interval_ns
                delay = (intended - time.perf_counter_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                i += 1
                if sem.locked():
                    with self._lock:
                        self.summary.dropped_open_loop += 1
                    continue

                async def guarded(t: int = intended) -> None:
                    async with sem:
                        await one(t)

                task = asyncio.create_task(guarded())
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending, timeout=cfg.timeout_s + 5)

        async def windows() -> None:
            while not self._stop_flag:
                await asyncio.sleep(cfg.window_s)
                if not self._stop_flag:
                    self._rotate()

        self.summary.started_at = time.monotonic()
        self._w_t0 = 0.0
        self._ready.set()
        ticker = asyncio.create_task(windows())
        if cfg.rate:
            workers = [asyncio.create_task(open_sender())]
        else:
            workers = [asyncio.create_task(closed_worker()) for _ in range(max(1, cfg.concurrency))]
        while not self._stop_flag:
            await asyncio.sleep(0.05)
        await asyncio.wait(workers, timeout=cfg.timeout_s + 10)
        ticker.cancel()
        self.summary.duration_s = time.monotonic() - self.summary.started_at
        self._rotate()  # the last, partial window: nothing measured is dropped
        await channel.close()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as e:  # surfaced by stop()
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    def start(self) -> "BackgroundLoad":
        self._thread = threading.Thread(target=self._run, name="background-load", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        return self

    def stop(self) -> LoadSummary:
        self._stop_flag = True
        if self._thread is not None:
            self._thread.join(timeout=self.cfg.timeout_s + 30)
        if self._error is not None:
            raise RuntimeError(f"load generator failed: {self._error!r}") from self._error
        with self._lock:
            self.summary.unaccounted = self._in_flight
        return self.summary

    def __enter__(self) -> "BackgroundLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_load(config: LoadConfig, seconds: float, on_window: Callable[[Window], None] | None = None,
             progress: Callable[[float, "BackgroundLoad"], None] | None = None) -> LoadSummary:
    """Run a load for `seconds` in the background of this thread, calling `progress` about once a second."""
    load = BackgroundLoad(config, on_window).start()
    try:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            if progress is not None:
                progress(seconds - max(0.0, end - time.monotonic()), load)
    finally:
        summary = load.stop()
    return summary
