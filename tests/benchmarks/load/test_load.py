"""The load managers against a mock transport (perf_analyzer-style: the loop alone, the client and server mocked).

The mock answers after a short sleep with a scripted status, counts how many calls are in flight at once and
which payloads it saw, so the managers' promises can be checked without any server: how many requests they
send, how many they keep in flight, that every outcome is recorded once, that failures back off, that a
cut-off request is still counted, that the open loop's schedule has the asked mean gap and counts a late
send's latency from its intended time, and that the window/stability rule reads the recorder's windows.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from benchmarks.load.managers import (ClosedLoop, LoadLoop, OpenLoop, WindowPlan, measure_point,
                                      windows_stable)
from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.measure.recorder import Recorder, Window


class MockTransport:
    name = "grpc"
    target = "mock"

    def __init__(self, delay_s: float = 0.001, status=lambda i: "OK", body=lambda i, p: p, raise_on=()) -> None:
        self.delay_s, self.status, self.body, self.raise_on = delay_s, status, body, set(raise_on)
        self.timeout_s = 1.0
        self.calls = 0
        self.in_flight = self.max_in_flight = 0
        self.payloads: list[bytes] = []

    async def send(self, payload: bytes) -> tuple[str, bytes | None]:
        i = self.calls
        self.calls += 1
        self.payloads.append(payload)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if i in self.raise_on:
                raise ConnectionResetError("planted")
            status = self.status(i)
            return status, self.body(i, payload) if status == "OK" else None
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


def test_a_request_budget_is_sent_exactly_at_the_given_concurrency() -> None:
    t = MockTransport(status=lambda i: "UNAVAILABLE" if i % 5 == 0 else "OK")
    loop = LoadLoop(t, [b"a", b"b", b"c"], Recorder(), error_backoff_s=0)
    asyncio.run(ClosedLoop(4, requests=100).run(loop))
    totals = loop.recorder.totals()
    assert t.calls == loop.sent == 100 and loop.in_flight == 0
    assert t.max_in_flight == 4
    assert totals.ok == 80 and totals.errors == {"UNAVAILABLE": 20}
    assert {p: t.payloads.count(p) for p in (b"a", b"b", b"c")} == {b"a": 34, b"b": 33, b"c": 33}


def test_transport_exceptions_are_outcomes_and_versions_are_read_from_successes() -> None:
    t = MockTransport(raise_on={3}, body=lambda i, p: bytes([1 if i < 5 else 2]))
    loop = LoadLoop(t, [b"x"], Recorder(), error_backoff_s=0, version_of=lambda body: body[0])
    asyncio.run(ClosedLoop(1, requests=10).run(loop))
    totals = loop.recorder.totals()
    assert totals.errors == {"ConnectionResetError": 1} and totals.ok == 9
    assert totals.version_counts == {1: 4, 2: 5}


def test_failures_back_off_instead_of_spinning(monkeypatch) -> None:
    """Each failure is followed by one pause of error_backoff_s, each success by none (counted, not timed)."""
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay, *args, **kwargs):
        if delay:  # the mock transport's own zero-delay answers are not pauses
            pauses.append(delay)
        return await real_sleep(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", sleep)

    def run(backoff: float) -> list[float]:
        pauses.clear()
        t = MockTransport(delay_s=0, status=lambda i: "UNAVAILABLE" if i % 3 else "OK")
        asyncio.run(ClosedLoop(2, requests=12).run(LoadLoop(t, [b"x"], Recorder(), error_backoff_s=backoff)))
        return list(pauses)

    assert run(0.05) == [0.05] * 8  # 8 of the 12 failed
    assert run(0.0) == []  # no pause configured: none taken


def test_a_request_cut_off_by_stop_is_still_counted() -> None:
    t = MockTransport(delay_s=10)
    loop = LoadLoop(t, [b"x"], Recorder())

    async def run() -> None:
        tasks = ClosedLoop(3).start(loop)
        await asyncio.sleep(0.05)
        await loop.stop(tasks, 0.05)

    asyncio.run(run())
    assert loop.sent == 3 and loop.in_flight == 0
    assert loop.recorder.totals().errors == {"CANCELLED_BY_CLIENT": 3}


def test_closed_loop_reports_all_fixed_windows_and_merges_them() -> None:
    t = MockTransport(delay_s=0.002, status=lambda i: "RESOURCE_EXHAUSTED" if i % 10 == 0 else "OK")
    plan = WindowPlan(window_s=0.1, fixed_windows=3, warmup_s=0.05)
    r = asyncio.run(measure_point(t, [b"x"], ClosedLoop(4), plan, error_backoff_s=0))
    assert len(r.windows) == 3 and len(r.window_throughputs) == 3 and r.load == {"concurrency": 4}
    assert sum(w.ok for w in r.windows) > 0 and sum(w.errors.get("RESOURCE_EXHAUSTED", 0) for w in r.windows) > 0
    # three windows of 0.1 s each were reported: a window never ends early (a loaded machine only makes it longer)
    assert sum(w.duration_s for w in r.windows) >= 0.3 - 0.005
    assert r.cpu is not None and r.cpu.wall_s > 0 and r.server_metrics == {} and r.dropped == 0
    assert t.max_in_flight == 4


def test_a_budgeted_point_is_one_span_of_exactly_its_requests_after_its_warm_up() -> None:
    t = MockTransport(delay_s=0.001)
    r = asyncio.run(measure_point(t, [b"x"], ClosedLoop(2, requests=50), WindowPlan(warmup_requests=10)))
    assert t.calls == 60 and len(r.windows) == 1 and r.windows[0].sent == r.windows[0].ok == 50
    assert r.stable is None and r.window_throughputs == [] and r.load == {"concurrency": 2}


def test_an_open_loop_point_is_measured_in_windows_like_a_closed_one() -> None:
    t = MockTransport(delay_s=0.001)
    manager = OpenLoop(rate=200, arrivals="poisson", seed=1)
    r = asyncio.run(measure_point(t, [b"x"], manager, WindowPlan(window_s=0.1, fixed_windows=3, warmup_s=0.05)))
    assert r.load == {"target_rate": 200} and len(r.windows) == 3 and sum(w.ok for w in r.windows) > 0
    assert sum(w.sent for w in r.windows) <= t.calls and r.dropped == 0


def test_open_loop_sends_a_budget_exactly_and_spreads_payloads() -> None:
    t = MockTransport(delay_s=0.001)
    loop = LoadLoop(t, [b"a", b"b"])
    manager = OpenLoop(rate=2000, requests=40)
    asyncio.run(manager.run(loop))
    assert t.calls == loop.sent == 40 and loop.in_flight == 0 and manager.dropped == 0
    assert loop.recorder.totals().ok == 40 and t.payloads.count(b"a") == t.payloads.count(b"b") == 20


def test_open_loop_schedules_constant_and_seeded_poisson_gaps() -> None:
    def gaps(manager: OpenLoop, n: int) -> list[int]:
        it = manager.intended_offsets_ns()
        offsets = [next(it) for _ in range(n + 1)]
        return [b - a for a, b in zip(offsets, offsets[1:])]

    assert set(gaps(OpenLoop(rate=100), 50)) == {10_000_000}
    poisson = gaps(OpenLoop(rate=100, arrivals="poisson", seed=7), 20_000)
    assert poisson == gaps(OpenLoop(rate=100, arrivals="poisson", seed=7), 20_000)  # the seed fixes the schedule
    # mean of 20,000 exponential gaps: within 5 % of 1/rate (the standard error is 0.7 %); they vary as Poisson
    # arrivals do (coefficient of variation 1), where constant gaps do not vary at all
    mean = sum(poisson) / len(poisson)
    assert mean == pytest.approx(10_000_000, rel=0.05)
    sd = (sum((g - mean) ** 2 for g in poisson) / len(poisson)) ** 0.5
    assert sd / mean == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError):
        OpenLoop(rate=100, arrivals="bursty")


def test_a_late_open_loop_send_counts_its_latency_from_the_intended_time() -> None:
    """The transport answers at once, but its first call blocks the event loop for 200 ms: the sends due
    meanwhile go out late, and their latency must include the wait (a closed clock would hide it)."""
    import time as clock

    class StallingTransport(MockTransport):
        async def send(self, payload: bytes):
            if self.calls == 0:
                clock.sleep(0.2)  # blocks the loop, as a stalled client would
            self.calls += 1
            return "OK", None

    loop = LoadLoop(StallingTransport(), [b"x"])
    asyncio.run(OpenLoop(rate=100, requests=10).run(loop))
    w = loop.recorder.rotate()
    assert w.ok == 10
    # all ten were due at 0, 10, ... 90 ms and answered at once after the 200 ms stall: each waited
    # >= 110 ms counted from its intended time (counted from its actual send, each would show ~0 ms)
    assert w.hist.percentile_ms(0.001) >= 105 and w.hist.percentile_ms(100) >= 185


def test_open_loop_caps_what_is_in_flight_and_counts_the_skipped_sends() -> None:
    t = MockTransport(delay_s=0.05)
    loop = LoadLoop(t, [b"x"])
    manager = OpenLoop(rate=1000, max_in_flight=2, requests=30)
    asyncio.run(manager.run(loop))
    assert t.max_in_flight == 2 and manager.dropped > 0 and loop.sent + manager.dropped == 30


def _window(ok: int, mean_ms: float, duration_s: float = 1.0) -> Window:
    return Window(0, 0.0, duration_s, LatencyHistogram(), {}, ok, int(ok * mean_ms * 1e6))


def test_stability_rule_needs_three_windows_within_the_band() -> None:
    steady = [_window(1000, 2.0), _window(1040, 2.05), _window(980, 1.95)]
    assert windows_stable(steady, 10.0)[0]
    assert not windows_stable(steady[:2], 10.0)[0]
    drifting = [_window(1000, 2.0), _window(1000, 2.0), _window(1500, 2.0)]
    stable, worst = windows_stable(drifting, 10.0)
    assert not stable and worst == pytest.approx(100 * 2 / 7)  # 1500 vs their mean 1166.7: +28.6 %
    empty = [_window(1000, 2.0), _window(0, 0.0), _window(1000, 2.0)]
    assert windows_stable(empty, 10.0) == (False, math.inf)


@pytest.mark.timeout(60)
def test_reliability_background_load_runs_on_the_shared_loop_closed_and_open() -> None:
    from benchmarks.requests.payloads import build_payload
    from benchmarks.reliability.load import LoadConfig, run_load
    from benchmarks.targets.noop_python import NoopConfig, NoopServer

    payload = build_payload("m", 1, 10).grpc_bytes
    with NoopServer(NoopConfig()) as fast:
        s = run_load(LoadConfig(f"127.0.0.1:{fast.grpc_port}", payload, concurrency=2, window_s=0.2), 0.7)
    assert s.ok > 0 and s.failed == 0 and s.sent == s.ok + s.unaccounted
    assert len(s.windows) >= 3 and sum(w.ok for w in s.windows) == s.ok == s.hist.count
    assert [w.index for w in s.windows] == list(range(len(s.windows)))
    assert s.windows[-1].t1 == pytest.approx(s.duration_s)

    with NoopServer(NoopConfig(delay_ms=200)) as slow:
        s = run_load(LoadConfig(f"127.0.0.1:{slow.grpc_port}", payload, concurrency=1, rate=50, window_s=0.2,
                                track_versions=False), 0.7)
    # one request in flight at most, 200 ms each: most of the 50/s schedule must be skipped, and counted
    assert s.dropped_open_loop > 0 and 1 <= s.sent <= 5 and s.failed == 0
    # open loop: latency runs from the intended send time, so it is never below the server's 200 ms
    assert s.hist.percentile_ms(50) >= 199


class MockBlockingTransport(MockTransport):
    """The mock with blocking calls too (Transport.open_blocking): each sender notes the thread it runs on."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.lock = threading.Lock()
        self.threads: set[str] = set()
        self.opened = self.closed = 0

    def open_blocking(self):
        transport = self

        class Sender:
            def send(self, payload: bytes) -> tuple[str, bytes | None]:
                with transport.lock:
                    i = transport.calls
                    transport.calls += 1
                    transport.payloads.append(payload)
                    transport.in_flight += 1
                    transport.max_in_flight = max(transport.max_in_flight, transport.in_flight)
                    transport.threads.add(threading.current_thread().name)
                time.sleep(transport.delay_s)
                with transport.lock:
                    transport.in_flight -= 1
                if i in transport.raise_on:
                    raise ConnectionResetError("planted")
                status = transport.status(i)
                return status, transport.body(i, payload) if status == "OK" else None

            def close(self) -> None:
                transport.closed += 1

        self.opened += 1
        return Sender()


def test_one_stream_makes_blocking_calls_on_a_thread_when_the_transport_offers_them() -> None:
    """Concurrency 1 (sync_calls=None): a worker thread with blocking calls, every request recorded once, the
    budget exact; concurrency 2 stays on the loop unless asked; a transport without blocking calls stays too."""
    t = MockBlockingTransport(delay_s=0.001, status=lambda i: "UNAVAILABLE" if i % 5 == 0 else "OK",
                              body=lambda i, p: bytes([1 if i < 10 else 2]))
    loop = LoadLoop(t, [b"a", b"b"], Recorder(), error_backoff_s=0, version_of=lambda body: body[0])
    manager = ClosedLoop(1, requests=30)
    assert manager.blocking(loop)
    asyncio.run(manager.run(loop))
    totals = loop.recorder.totals()
    assert t.calls == loop.sent == 30 and loop.in_flight == 0 and t.max_in_flight == 1
    assert totals.ok == 24 and totals.errors == {"UNAVAILABLE": 6}
    assert totals.version_counts == {1: 8, 2: 16}
    assert t.threads == {"load-worker_0"} and t.opened == t.closed == 1
    assert not ClosedLoop(2).blocking(loop) and ClosedLoop(2, sync_calls=True).blocking(loop)
    assert not ClosedLoop(1, sync_calls=False).blocking(loop)
    assert not ClosedLoop(1).blocking(LoadLoop(MockTransport(), [b"x"]))


def test_blocking_workers_share_the_budget_and_keep_their_concurrency() -> None:
    t = MockBlockingTransport(delay_s=0.005, raise_on={7})
    loop = LoadLoop(t, [b"x"], Recorder(), error_backoff_s=0)
    asyncio.run(ClosedLoop(8, requests=200, sync_calls=True).run(loop))
    totals = loop.recorder.totals()
    assert t.calls == loop.sent == 200 and loop.in_flight == 0
    assert t.max_in_flight == 8  # eight threads (more than the loop's default executor would run)
    assert totals.ok == 199 and totals.errors == {"ConnectionResetError": 1}
    assert t.opened == t.closed == 8


def test_a_blocking_point_is_measured_in_windows_and_its_worker_ends_on_stop() -> None:
    t = MockBlockingTransport(delay_s=0.002)
    plan = WindowPlan(window_s=0.1, fixed_windows=3, warmup_s=0.05)
    r = asyncio.run(measure_point(t, [b"x"], ClosedLoop(1), plan))
    assert len(r.windows) == 3 and all(w.ok > 0 for w in r.windows) and r.load == {"concurrency": 1}
    assert r.calls == "sync" and asyncio.run(measure_point(t, [b"x"], ClosedLoop(2), plan)).calls == "async"
    assert t.threads == {"load-worker_0"} and t.opened == t.closed == 1  # the worker saw the stop and closed
