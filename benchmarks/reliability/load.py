"""A background gRPC load for "load while X happens" experiments, on the benchmarks' own load loop.

The benchmarks' measured points answer "how fast"; this answers "what happened to every request while we
rolled out, broke, killed or overloaded the server". It runs the same load managers
(benchmarks/load/managers.py) and Recorder in an asyncio loop on a thread of its own (so the test or CLI can
do the fault in the foreground), sends a pre-serialised PredictRequest and, for every response, records:
  * the status (gRPC code name) and latency: successes into an HdrHistogram, failures counted by status;
  * which model version answered (PredictResponse.model_spec.version): that is how a rollout's switch-over
    is observed from the outside, exactly as a client would see it;
  * per-window tallies (default 1 s), handed to an optional callback as they close, so a result file can be
    flushed while the run is still going (and survive a crash of either side).
Closed loop (`concurrency` workers back to back) or open loop (`rate` requests/s at constant gaps, at most
`concurrency` in flight, latency measured from the *intended* send time).

Reconnection: the channel's reconnect backoff is capped at 0.5 s (gRPC's default grows to 120 s), so when a
killed server comes back the very next attempts reach it.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from benchmarks.clients.transports import GrpcTransport
from benchmarks.load.managers import ClosedLoop, LoadLoop, OpenLoop
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.recorder import Recorder, Totals, Window, merge
from export.contract import GRPC_MESSAGE_OPTIONS

RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)
CHANNEL_OPTIONS = [  # the reliability client's blocking channels: the same reconnection as the load
    *RECONNECT_OPTIONS,
    *GRPC_MESSAGE_OPTIONS,
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

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0


def _version_reader() -> Callable[[bytes], int | None]:
    from benchmarks.requests import protos

    response_type = protos.get("predict_pb2").PredictResponse

    def version_of(resp: bytes) -> int | None:
        r = response_type.FromString(resp)
        return r.model_spec.version.value if r.model_spec.HasField("version") else None

    return version_of


class BackgroundLoad:
    """`with BackgroundLoad(cfg) as load: <fault>`; then `load.summary`. Or start()/stop()."""

    def __init__(self, config: LoadConfig, on_window: Callable[[Window], None] | None = None) -> None:
        self.cfg = config
        self.on_window = on_window
        self.recorder = Recorder()
        self.windows: list[Window] = []
        self.summary = LoadSummary()
        self._sender: LoadLoop | None = None
        self._manager: ClosedLoop | OpenLoop | None = None
        self._stop_flag = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _rotate(self) -> Window:
        w = self.recorder.rotate()
        self.windows.append(w)
        if self.on_window is not None:
            self.on_window(w)
        return w

    def totals(self) -> Totals:
        """Everything recorded so far (incl. model versions seen), safe to call from any thread."""
        return self.recorder.totals()

    def snapshot(self) -> tuple[int, int, dict[str, int]]:
        """(sent, ok, errors) so far, safe to call from any thread (for progress lines)."""
        t = self.recorder.totals()
        sent = self._sender.sent if self._sender else 0
        return sent, t.ok, dict(t.errors)

    async def _windows(self) -> None:
        while not self._stop_flag:
            await asyncio.sleep(self.cfg.window_s)
            if not self._stop_flag:
                self._rotate()

    async def _main(self) -> None:
        cfg = self.cfg
        transport = GrpcTransport(cfg.target, timeout_s=cfg.timeout_s, channel_options=RECONNECT_OPTIONS)
        self.recorder = Recorder()  # its clock starts with the load: window times are seconds since now
        loop = self._sender = LoadLoop(transport, [cfg.payload], self.recorder, error_backoff_s=cfg.error_backoff_s,
                                       version_of=_version_reader() if cfg.track_versions else None)
        self._ready.set()
        ticker = asyncio.create_task(self._windows())
        self._manager = (OpenLoop(cfg.rate, max_in_flight=cfg.concurrency) if cfg.rate
                         else ClosedLoop(cfg.concurrency))
        workers = self._manager.start(loop)
        while not self._stop_flag:
            await asyncio.sleep(0.05)
        await loop.stop(workers, cfg.timeout_s + 10)
        ticker.cancel()
        self._rotate()  # the last, partial window: nothing measured is dropped
        await transport.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by stop()
            self._error = e
            self._ready.set()

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
        self.summary = self._summarise()
        return self.summary

    def _summarise(self) -> LoadSummary:
        t = self.recorder.totals()
        loop = self._sender
        s = LoadSummary(loop.sent if loop else 0, t.ok, dict(t.errors), loop.in_flight if loop else 0,
                        getattr(self._manager, "dropped", 0), self.windows[-1].t1 if self.windows else 0.0,
                        merge(self.windows)[0], windows=list(self.windows), version_counts=dict(t.version_counts),
                        version_first_seen=t.version_first_seen)
        for w in self.windows:
            s.error_hist.merge(w.error_hist)
        return s

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
