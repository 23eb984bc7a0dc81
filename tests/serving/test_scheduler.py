"""serving/execution/scheduler.py: the bound on concurrent executions, the shared queue, admission and deadlines,
for thread callers (REST) and coroutine callers (gRPC) of the same scheduler."""
from __future__ import annotations

import asyncio
import os
import threading
import time

import grpc
import pytest

from serving.errors import ServingError
from serving.execution.scheduler import WAIT_DEADLINE_MESSAGE, ExecutionScheduler

pytestmark = pytest.mark.timeout(60)


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


class _Loop:
    """An event loop on its own thread, like the gRPC front end's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture()
def aio_loop():
    loop = _Loop()
    yield loop
    loop.close()


def test_threads_and_coroutines_share_one_bound(aio_loop):
    sched = ExecutionScheduler("m", max_concurrent=3, max_queued=64)
    done: list[int] = []
    gate = threading.Event()  # every execution waits here: the slots fill and stay full until the test opens it

    def work(i: int) -> int:
        gate.wait(10)
        return i

    threads = [threading.Thread(target=lambda i=i: done.append(sched.run(lambda: work(i), None))) for i in range(16)]
    futures = [aio_loop.submit(sched.run_async(lambda i=i: work(100 + i), None, inline=False)) for i in range(16)]
    for t in threads:
        t.start()
    _wait_until(lambda: sched.stats.running == 3 and sched.stats.waiting == 29)  # 3 running, the other 29 queued
    gate.set()
    for t in threads:
        t.join(10)
    results = sorted(done + [f.result(10) for f in futures])
    assert results == sorted(list(range(16)) + [100 + i for i in range(16)])
    assert sched.stats.peak_running == 3  # reached with 32 callers, never exceeded
    assert sched.stats.executions == 32 and sched.stats.running == 0 and sched.stats.waiting == 0
    sched.close()


def _hold_the_only_slot(sched: ExecutionScheduler) -> tuple[threading.Event, threading.Thread]:
    release = threading.Event()
    holder = threading.Thread(target=lambda: sched.run(release.wait, None))
    holder.start()
    _wait_until(lambda: sched.stats.running == 1)
    return release, holder


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE])
def test_full_queue_refuses_threads_and_coroutines_alike(aio_loop, code):
    sched = ExecutionScheduler("m", max_concurrent=1, max_queued=1, full_queue_code=code)
    release, holder = _hold_the_only_slot(sched)
    queued = aio_loop.submit(sched.run_async(lambda: "queued", None, inline=False))
    _wait_until(lambda: sched.stats.waiting == 1)
    with pytest.raises(ServingError) as thread_refusal:
        sched.run(lambda: "never", None)
    with pytest.raises(ServingError) as coro_refusal:
        aio_loop.submit(sched.run_async(lambda: "never", None, inline=True)).result(5)
    for refusal in (thread_refusal.value, coro_refusal.value):
        assert refusal.code == code
        assert "execution queue of 'm' is full" in refusal.message
    release.set()
    holder.join(5)
    assert queued.result(5) == "queued"  # the queued request still ran once the slot was free
    assert sched.stats.refused_full == 2 and sched.stats.executions == 2


def test_deadline_while_waiting_never_runs_and_leaks_no_slot(aio_loop):
    sched = ExecutionScheduler("m", max_concurrent=1, max_queued=8)
    release, holder = _hold_the_only_slot(sched)
    ran: list[str] = []
    started = time.monotonic()
    with pytest.raises(ServingError) as thread_expiry:
        sched.run(lambda: ran.append("thread"), time.monotonic() + 0.05)
    with pytest.raises(ServingError) as coro_expiry:
        aio_loop.submit(sched.run_async(lambda: ran.append("coro"), time.monotonic() + 0.05, inline=False)).result(5)
    for expiry in (thread_expiry.value, coro_expiry.value):
        assert expiry.code == grpc.StatusCode.DEADLINE_EXCEEDED and expiry.message == WAIT_DEADLINE_MESSAGE
    assert time.monotonic() - started < 2.0
    assert ran == [] and sched.stats.waiting == 0 and sched.stats.expired_waiting == 2
    release.set()
    holder.join(5)
    # The slot came back: both kinds of caller run at once now.
    assert sched.run(lambda: "ok", time.monotonic() + 1) == "ok"
    assert aio_loop.submit(sched.run_async(lambda: "ok", time.monotonic() + 1, inline=True)).result(5) == "ok"


def test_first_come_first_served_across_callers(aio_loop):
    sched = ExecutionScheduler("m", max_concurrent=1, max_queued=8)
    release, holder = _hold_the_only_slot(sched)
    order: list[str] = []
    first = aio_loop.submit(sched.run_async(lambda: order.append("coroutine, queued first"), None, inline=False))
    _wait_until(lambda: sched.stats.waiting == 1)
    second = threading.Thread(target=lambda: sched.run(lambda: order.append("thread, queued second"), None))
    second.start()
    _wait_until(lambda: sched.stats.waiting == 2)
    release.set()
    holder.join(5)
    first.result(5)
    second.join(5)
    assert order == ["coroutine, queued first", "thread, queued second"]


def test_cancelled_coroutine_gives_its_slot_back(aio_loop):
    """A gRPC call cancelled (client gone) while its model runs on a scheduler thread must not leak the slot."""
    sched = ExecutionScheduler("m", max_concurrent=1, max_queued=8)
    running, release = threading.Event(), threading.Event()

    def slow() -> str:
        running.set()
        release.wait(5)
        return "late"

    call = aio_loop.submit(sched.run_async(slow, None, inline=False))
    assert running.wait(5)
    call.cancel()
    release.set()
    _wait_until(lambda: sched.stats.running == 0)
    assert sched.run(lambda: "next", time.monotonic() + 2) == "next"
    sched.close()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_concurrent"):
        ExecutionScheduler("m", max_concurrent=0, max_queued=1)
    with pytest.raises(ValueError, match="max_queued"):
        ExecutionScheduler("m", max_concurrent=1, max_queued=-1)


def test_auto_bound_depends_on_mode_and_a_setting_wins():
    from serving.execution.core import ExecutionSettings

    cpus = os.cpu_count() or 1
    assert ExecutionSettings().concurrency("eager") == 1
    assert ExecutionSettings().concurrency("graph") == ExecutionSettings().concurrency("xla") == 8 * cpus
    assert ExecutionSettings(max_concurrent=3).concurrency("eager") == 3
