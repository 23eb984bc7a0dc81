"""Unbatched model execution: one scheduler per served model, shared by the gRPC and REST front ends.

With batching on, SharedBatchScheduler (batching.py) decides when a batchable signature runs. Everything
else (batching off, or a signature without a free batch dimension) goes through the model's
ExecutionScheduler, so a model runs the same way whichever API called it:

* at most `max_concurrent` executions of the model at once, whatever the number of open connections or
  streams (ServerConfig.max_concurrent_executions; TF Serving's --rest_api_num_threads plays this role for
  its REST front end, num_batch_threads for batched signatures);
* requests beyond that wait in ONE first-come-first-served queue for both APIs, of at most `max_queued`
  requests; a request that finds it full is refused at once with the server's full-queue status
  (RESOURCE_EXHAUSTED/429 by default, UNAVAILABLE/503 with --full-queue-status UNAVAILABLE), as with a
  full batch queue;
* a request whose deadline passes while it waits gets DEADLINE_EXCEEDED (504 over REST) and never runs.

Why slots and not one thread pool for everything: a REST request already has its own connection thread, so
it runs the model there once it holds a slot (no thread hand-off; the graph model's batch-1 call costs
~0.3 ms and two hand-offs would be a visible share of it). gRPC handlers live on one event loop, which must
keep serving, so they run the model on the scheduler's threads, or on the loop itself when the request is
alone (saves the hand-offs, the largest part of a lone request's latency). Either way the slot count is
the bound. Before this scheduler, REST ran the model on every connection thread at once: 16 eager calls
contending for the GIL delivered 0.35x of gRPC's throughput (docs/performance.md).
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import grpc

from serving.errors import ServingError, deadline_exceeded

T = TypeVar("T")

WAIT_DEADLINE_MESSAGE = "Deadline exceeded while waiting for a model execution slot"


@dataclass
class _Waiter:
    """One request queued for a slot: woken through `event` (a thread) or `future` (a coroutine on `loop`)."""

    event: threading.Event | None = None
    future: Any = None
    loop: Any = None
    granted: bool = False  # set under the scheduler's lock when a released slot is handed to this waiter


@dataclass
class ExecutionStats:
    """What the scheduler has seen; read by the metrics endpoint."""

    running: int = 0  # model executions in progress now
    peak_running: int = 0  # the most ever in progress at once (never above max_concurrent)
    executions: int = 0
    refused_full: int = 0
    expired_waiting: int = 0
    waiting: int = 0  # requests queued for a slot now


class ExecutionScheduler:
    """Bounded, deadline-aware admission to one model's executions (see the module docstring)."""

    def __init__(self, model_name: str, max_concurrent: int, max_queued: int,
                 full_queue_code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, not {max_concurrent}")
        if max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, not {max_queued}")
        self.model_name = model_name
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.full_queue_code = full_queue_code
        self._lock = threading.Lock()
        self._free = max_concurrent
        self._waiters: deque[_Waiter] = deque()
        self.stats = ExecutionStats()
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ callers
    def run(self, fn: Callable[[], T], deadline: float | None) -> T:
        """Wait for a slot (bounded queue, deadline), then run `fn` on the calling thread."""
        self._acquire(deadline)
        try:
            return self._execute(fn)
        finally:
            self._release()

    async def run_async(self, fn: Callable[[], T], deadline: float | None, inline: bool) -> T:
        """run() for coroutines: the wait holds no thread; `fn` runs on the scheduler's threads, or on the
        loop when `inline` and a slot was free at once (nothing else in flight on this loop: no hand-off)."""
        waited = await self._acquire_async(deadline)
        if inline and not waited:
            try:
                return self._execute(fn)
            finally:
                self._release()
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.max_concurrent, thread_name_prefix=f"model-{self.model_name}")
        # The pool thread releases the slot when fn ends; shield() keeps a cancelled caller (deadline, client
        # gone) from cancelling a task that holds a slot, which would then never give it back.
        return await asyncio.shield(asyncio.wrap_future(self._pool.submit(self._execute_and_release, fn)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ slots
    def _execute(self, fn: Callable[[], T]) -> T:
        stats = self.stats
        with self._lock:
            stats.running += 1
            stats.executions += 1
            stats.peak_running = max(stats.peak_running, stats.running)
        try:
            return fn()
        finally:
            with self._lock:
                stats.running -= 1

    def _execute_and_release(self, fn: Callable[[], T]) -> T:
        try:
            return self._execute(fn)
        finally:
            self._release()

    def _try_take_locked(self) -> bool:
        """Take a free slot unless others are already waiting (first come, first served across both APIs)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        if len(self._waiters) >= self.max_queued:
            self.stats.refused_full += 1
            raise ServingError(self.full_queue_code,
                               f"The model execution queue of '{self.model_name}' is full ({len(self._waiters)} "
                               f"requests waiting for {self.max_concurrent} execution slots); retry later")
        return False

    def _enqueue_locked(self, waiter: _Waiter) -> _Waiter:
        self._waiters.append(waiter)
        self.stats.waiting = len(self._waiters)
        return waiter

    def _give_up_locked(self, waiter: _Waiter) -> bool:
        """The waiter stops waiting: True if a slot was handed to it meanwhile (the caller must pass it on)."""
        if waiter.granted:
            return True
        self._waiters.remove(waiter)
        self.stats.waiting = len(self._waiters)
        self.stats.expired_waiting += 1
        return False

    def _acquire(self, deadline: float | None) -> None:
        with self._lock:
            if self._try_take_locked():
                return
            waiter = self._enqueue_locked(_Waiter(event=threading.Event()))
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if waiter.event.wait(timeout):
            return
        with self._lock:
            granted = self._give_up_locked(waiter)
        if granted:  # handed a slot just as the deadline passed: it did not run, so the deadline still wins
            self._release()
        raise deadline_exceeded(WAIT_DEADLINE_MESSAGE)

    async def _acquire_async(self, deadline: float | None) -> bool:
        """Hold a slot on return; True when the request had to wait for it."""
        with self._lock:
            if self._try_take_locked():
                return False
            loop = asyncio.get_running_loop()
            waiter = self._enqueue_locked(_Waiter(future=loop.create_future(), loop=loop))
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(waiter.future, timeout)
            return True
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            with self._lock:
                granted = self._give_up_locked(waiter)
            if granted:
                self._release()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise deadline_exceeded(WAIT_DEADLINE_MESSAGE) from None

    def _release(self) -> None:
        """Hand the slot to the longest waiter, or return it to the free count."""
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            waiter = self._waiters.popleft()
            self.stats.waiting = len(self._waiters)
            waiter.granted = True
        if waiter.event is not None:
            waiter.event.set()
        else:
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            except RuntimeError:  # its loop is closed: nobody will run with this slot
                self._release()


def _wake(future: Any) -> None:
    if not future.done():  # a cancelled waiter passes the slot on itself (it sees `granted`)
        future.set_result(None)
