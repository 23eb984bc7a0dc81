"""Open-loop scenarios on MLPerf LoadGen (SingleStream, Server with Poisson arrivals, Offline).

LoadGen owns the schedule: in the Server scenario it issues queries at Poisson-distributed times for
a target rate and measures each query's latency from its *scheduled* issue time, so a server stall
cannot hide behind a client that stopped sending (coordinated omission). Our SUT only forwards each
query to the load loop (benchmarks/load/managers.py: the one send-and-record path) without blocking (an
asyncio loop in a background thread) and reports the completion back. LoadGen's verdict (VALID/INVALID) and its percentiles come from its summary log,
which is kept under <run-dir>/loadgen/<label>/.
Our own histogram (from the moment LoadGen hands us a query to completion) is stored as the row's
raw histogram; LoadGen's own numbers are in row.extra["loadgen"].
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks.clients.transports import Transport
from benchmarks.load.managers import LoadLoop
from benchmarks.measure.cpu_meter import CpuMeter, CpuReading
from benchmarks.measure.recorder import Window

SCENARIOS = ("single_stream", "server", "offline")


@dataclass
class LoadGenConfig:
    scenario: str = "server"  # single_stream | server | offline
    target_qps: float = 100.0  # Server: Poisson arrival rate; Offline: expected qps
    target_latency_ms: float = 100.0  # Server: p99 bound used for the VALID verdict
    min_duration_ms: int = 1000
    max_duration_ms: int = 0  # 0 = LoadGen default (no cap beyond min conditions)
    min_query_count: int = 10
    offline_max_inflight: int = 64
    performance_samples: int = 16  # distinct prebuilt payloads LoadGen cycles through


@dataclass
class LoadGenResult:
    scenario: str
    verdict: str  # VALID | INVALID | UNKNOWN
    summary: dict[str, str]
    summary_path: Path
    window: Window  # everything recorded between the test's start and end
    cpu: CpuReading  # this process's over the test, thread figure = the sending loop's
    issued: int
    loadgen_percentiles_ms: dict[str, float] = field(default_factory=dict)
    achieved_qps: float | None = None


_SUMMARY_LINE = re.compile(r"^\s*([^:]+?)\s*:\s*(.+?)\s*$")


def parse_summary(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _SUMMARY_LINE.match(line)
        if m and not line.startswith("="):
            out.setdefault(m.group(1), m.group(2))
    return out


def _loadgen_percentiles(summary: dict[str, str]) -> dict[str, float]:
    out = {}
    for k, v in summary.items():
        m = re.match(r"^(\d+(?:\.\d+)?) percentile latency \(ns\)$", k)
        if m:
            out[f"p{m.group(1)}"] = float(v) / 1e6
        elif k in ("Min latency (ns)", "Max latency (ns)", "Mean latency (ns)"):
            out[k.split()[0].lower()] = float(v) / 1e6
    return out


class _AsyncSut:
    """LoadGen's system under test: every query handed over on LoadGen's thread is sent through the load loop
    (one transport, one recorder) on an asyncio loop of its own, and reported complete (to LoadGen) when the
    answer is in. Its latency counts from the hand-over, LoadGen's scheduled issue time."""

    def __init__(self, lg, transport_factory: Callable[[], Transport], payloads: list[bytes], cfg: LoadGenConfig) -> None:
        self.lg, self.payloads = lg, payloads
        self.limit = cfg.scenario == "offline"  # Offline issues everything at once: cap what is in flight
        self.issued = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="loadgen-sut-loop")
        self.thread.start()

        async def setup() -> tuple[LoadLoop, asyncio.Semaphore, CpuMeter]:
            # a transport binds to the loop it is created on (grpc.aio channels, the REST client's semaphore and
            # streams, libcurl's socket watches): create it here, on the loop LoadGen's callbacks run on; the
            # CPU meter too, so its thread figure is this sending loop's (the saturation rule's thread).
            return (LoadLoop(transport_factory(), payloads), asyncio.Semaphore(cfg.offline_max_inflight),
                    CpuMeter())

        self.sender, self.sem, self.cpu = self._on_loop(setup())

    def _on_loop(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _one(self, qid: int, index: int, t_issue: int) -> None:
        payload = self.payloads[index % len(self.payloads)]
        try:
            async with self.sem if self.limit else contextlib.nullcontext():
                await self.sender.send(payload, started_ns=t_issue)
        finally:
            # LoadGen waits for every query, failed or not (it has no notion of failure), so the
            # completion is sent whatever happened; failures show up in our error count.
            self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(qid, 0, 0)])

    def _spawn(self, samples: list[tuple[int, int]], t_issue: int) -> None:
        for qid, idx in samples:
            self.loop.create_task(self._one(qid, idx, t_issue))

    def issue_queries(self, query_samples) -> None:
        # Called on LoadGen's issuing thread at the scheduled time: hand off and return at once.
        t = time.perf_counter_ns()
        batch = [(q.id, q.index) for q in query_samples]
        self.issued += len(batch)
        self.loop.call_soon_threadsafe(self._spawn, batch, t)

    def flush_queries(self) -> None:
        pass

    def close(self) -> tuple[Window, CpuReading]:
        """The test's one window and the sending loop's CPU over it; the transport closed, the loop stopped."""

        async def finish() -> tuple[Window, CpuReading]:
            reading, window = self.cpu.stop(), self.sender.recorder.rotate()
            await self.sender.transport.close()
            return window, reading

        try:
            return self._on_loop(finish())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


def _test_settings(lg, cfg: LoadGenConfig):
    settings = lg.TestSettings()
    settings.mode = lg.TestMode.PerformanceOnly
    settings.scenario = {"single_stream": lg.TestScenario.SingleStream, "server": lg.TestScenario.Server,
                         "offline": lg.TestScenario.Offline}[cfg.scenario]
    settings.min_duration_ms = int(cfg.min_duration_ms)
    if cfg.max_duration_ms:
        settings.max_duration_ms = int(cfg.max_duration_ms)
    settings.min_query_count = int(cfg.min_query_count)
    if cfg.scenario == "server":
        settings.server_target_qps = float(cfg.target_qps)
        settings.server_target_latency_ns = int(cfg.target_latency_ms * 1e6)
    elif cfg.scenario == "offline":
        settings.offline_expected_qps = float(cfg.target_qps)
    else:
        settings.single_stream_expected_latency_ns = int(cfg.target_latency_ms * 1e6 / 10)
    return settings


def _log_settings(lg, out_dir: Path):
    log_out = lg.LogOutputSettings()
    log_out.outdir = str(out_dir)
    log_out.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_out
    log_settings.enable_trace = False
    return log_settings


def _achieved_qps(summary: dict[str, str]) -> float | None:
    for key in ("Completed samples per second", "Samples per second", "Scheduled samples per second"):
        try:
            return float(summary[key])
        except (KeyError, ValueError):
            continue
    return None


def run_loadgen(transport_factory: Callable[[], Transport], payloads: list[bytes], cfg: LoadGenConfig, out_dir: Path) -> LoadGenResult:
    import mlperf_loadgen as lg

    if cfg.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {cfg.scenario!r}; choose from {SCENARIOS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    sut_impl = _AsyncSut(lg, transport_factory, payloads, cfg)
    n = max(1, cfg.performance_samples)
    sut = lg.ConstructSUT(sut_impl.issue_queries, sut_impl.flush_queries)
    qsl = lg.ConstructQSL(n, n, lambda idx: None, lambda idx: None)
    sut_impl.sender.recorder.rotate()  # the window opens with the test
    try:
        lg.StartTestWithLogSettings(sut, qsl, _test_settings(lg, cfg), _log_settings(lg, out_dir))
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
        window, cpu = sut_impl.close()

    summary_path = out_dir / "mlperf_log_summary.txt"
    summary = parse_summary(summary_path.read_text()) if summary_path.exists() else {}
    return LoadGenResult(cfg.scenario, summary.get("Result is", "UNKNOWN"), summary, summary_path, window, cpu,
                         sut_impl.issued, _loadgen_percentiles(summary),
                         _achieved_qps(summary))
