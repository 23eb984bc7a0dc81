"""Server-side dynamic batching, modelled on TF Serving's SharedBatchScheduler + BatchingSession.

One scheduler owns `num_batch_threads` threads shared by every queue (one queue per loaded version x
signature x trailing input shape). A queue is a list of batches; a task (one request) joins the open batch if
it fits in max_batch_size, otherwise a new batch is opened, and if the queue already holds
max_enqueued_batches batches the task is refused at once (RESOURCE_EXHAUSTED by default, see
--full-queue-status; TF Serving says UNAVAILABLE) instead of growing a backlog. A batch becomes runnable when
it is full, when a newer batch was opened after it, or batch_timeout_micros after its first task arrived
(0 = as soon as a thread is free). The batch thread concatenates the inputs along dimension 0, pads up to the
next allowed_batch_sizes entry by repeating the first row, runs the model once, and hands each task its rows.

Tasks larger than max_batch_size are refused ("Task size N is larger than maximum input batch size M"), or,
with enable_large_batch_splitting, cut into pieces of at most max_execution_batch_size rows that are batched
like any other task and reassembled.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc
import numpy as np

from serving.errors import ServingError, deadline_exceeded, invalid_argument, unavailable
from serving.metrics import ServingMetrics

log = logging.getLogger("serving.batching")

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"

ProcessFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    deadline: float | None  # time.monotonic() seconds
    enqueued: float
    future: Future = field(default_factory=Future)
    # Set for tasks of the asyncio gRPC front end: the result goes to this asyncio future instead of `future`,
    # delivered on its event loop together with the rest of the batch (one loop wake-up per batch, not per task).
    aio: Any = None
    loop: Any = None

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


@dataclass
class _Batch:
    created: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0


class BatchQueue:
    """Tasks for one (version, signature, input shape); created and served by a SharedBatchScheduler."""

    def __init__(self, scheduler: SharedBatchScheduler, process: ProcessFn, model_name: str, label: str) -> None:
        self.scheduler = scheduler
        self.process = process
        self.model_name = model_name
        self.label = label
        self.batches: deque[_Batch] = deque()
        self.closed = False

    def submit(self, inputs: dict[str, np.ndarray], size: int, deadline: float | None) -> Future:
        """Queue one request (all inputs share dimension 0 = `size`); returns a Future of its outputs."""
        return self.scheduler._submit(self, inputs, size, deadline)

    async def run_async(self, inputs: dict[str, np.ndarray], size: int, deadline: float | None) -> dict[str, np.ndarray]:
        """run() for coroutines: waits on the event loop, so no thread is held while the task is queued."""
        return await self.scheduler._run_async(self, inputs, size, deadline)

    def run(self, inputs: dict[str, np.ndarray], size: int, deadline: float | None) -> dict[str, np.ndarray]:
        """submit() and wait for the result, honouring the deadline."""
        future = self.submit(inputs, size, deadline)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()  # the batch thread skips cancelled tasks that have not run yet
            raise deadline_exceeded("Deadline exceeded while waiting in the batch queue") from None


class SharedBatchScheduler:
    def __init__(self, settings: Any, metrics: ServingMetrics | None = None,
                 full_queue_code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED) -> None:
        self.settings = settings
        self.metrics = metrics
        self.full_queue_code = full_queue_code
        self.max_batch_size = int(settings.max_batch_size)
        self.timeout_s = max(0, int(settings.batch_timeout_micros)) / 1e6
        self.max_enqueued = max(1, int(settings.max_enqueued_batches))
        self.allowed = sorted(int(s) for s in (settings.allowed_batch_sizes or ()))
        self.splitting = bool(getattr(settings, "enable_large_batch_splitting", False))
        self.split_size = int(getattr(settings, "max_execution_batch_size", 0) or self.max_batch_size)
        self.split_size = max(1, min(self.split_size, self.max_batch_size))
        self.pool_name = str(getattr(settings, "thread_pool_name", "batch_threads") or "batch_threads")
        self._cond = threading.Condition()
        self._queues: list[BatchQueue] = []
        self._rr = 0
        self._stopping = False
        self._wake_scheduled: set[Any] = set()  # event loops with a pending _wake (touched on their own thread)
        self._threads = [threading.Thread(target=self._loop, name=f"{self.pool_name}-{i}", daemon=True)
                         for i in range(max(1, int(settings.num_batch_threads)))]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ queues
    def add_queue(self, process: ProcessFn, model_name: str, label: str) -> BatchQueue:
        queue = BatchQueue(self, process, model_name, label)
        with self._cond:
            self._queues.append(queue)
        return queue

    def remove_queue(self, queue: BatchQueue) -> None:
        """Stop accepting tasks; batches already queued are still processed, then the queue is dropped."""
        with self._cond:
            queue.closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ submission
    def _full(self, detail: str = "") -> ServingError:
        return ServingError(self.full_queue_code, QUEUE_FULL_MESSAGE + detail)

    def _submit(self, queue: BatchQueue, inputs: dict[str, np.ndarray], size: int, deadline: float | None) -> Future:
        if size > self.max_batch_size and not self.splitting:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size {self.max_batch_size}")
        now = time.monotonic()
        if size > self.split_size and self.splitting:
            return self._submit_split(queue, inputs, size, deadline, now)
        task = _Task(inputs, size, deadline, now)
        with self._cond:
            if queue.closed or self._stopping:
                raise unavailable("this model version is being unloaded; retry")
            self._enqueue_locked(queue, task, now)
            self._cond.notify()
        if self.metrics is not None:
            self.metrics.input_batch_size.labels(queue.model_name).observe(size)
        return task.future

    async def _run_async(self, queue: BatchQueue, inputs: dict[str, np.ndarray], size: int,
                         deadline: float | None) -> dict[str, np.ndarray]:
        if size > self.split_size and self.splitting:  # rare: reuse the thread path's reassembly
            future = asyncio.wrap_future(self._submit(queue, inputs, size, deadline))
        else:
            if size > self.max_batch_size:
                raise invalid_argument(f"Task size {size} is larger than maximum input batch size {self.max_batch_size}")
            loop = asyncio.get_running_loop()
            now = time.monotonic()
            task = _Task(inputs, size, deadline, now, aio=loop.create_future(), loop=loop)
            with self._cond:
                if queue.closed or self._stopping:
                    raise unavailable("this model version is being unloaded; retry")
                self._enqueue_locked(queue, task, now)
            # Wake an idle batch thread once per event-loop iteration, not once per task: requests that arrived
            # together are decoded in the same iteration and so join the same batch, instead of an idle thread
            # grabbing each one alone while the loop (the GIL-bound part) is still decoding the rest. The cost
            # is at most the rest of the current iteration, which is work the loop would do first anyway.
            if loop not in self._wake_scheduled:
                self._wake_scheduled.add(loop)
                loop.call_soon(self._wake, loop)
            if self.metrics is not None:
                self.metrics.child(self.metrics.input_batch_size, queue.model_name).observe(size)
            future = task.aio
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return await asyncio.wait_for(future, timeout)  # cancels the future on timeout: the batch skips it
        except asyncio.TimeoutError:
            raise deadline_exceeded("Deadline exceeded while waiting in the batch queue") from None

    def _wake(self, loop: Any) -> None:
        self._wake_scheduled.discard(loop)
        with self._cond:
            self._cond.notify_all()

    def _enqueue_locked(self, queue: BatchQueue, task: _Task, now: float) -> None:
        limit = self.split_size if self.splitting else self.max_batch_size
        if not queue.batches or queue.batches[-1].size + task.size > limit:
            if len(queue.batches) >= self.max_enqueued:
                raise self._full()
            queue.batches.append(_Batch(created=now))
        batch = queue.batches[-1]
        batch.tasks.append(task)
        batch.size += task.size

    def _submit_split(self, queue: BatchQueue, inputs: dict[str, np.ndarray], size: int,
                      deadline: float | None, now: float) -> Future:
        pieces = [(lo, min(lo + self.split_size, size)) for lo in range(0, size, self.split_size)]
        tasks = [_Task({k: v[lo:hi] for k, v in inputs.items()}, hi - lo, deadline, now) for lo, hi in pieces]
        with self._cond:
            if queue.closed or self._stopping:
                raise unavailable("this model version is being unloaded; retry")
            # All or nothing: count the batches the pieces would need before enqueueing any of them.
            free_in_open = (self.split_size - queue.batches[-1].size) if queue.batches else 0
            rows_left = max(0, size - free_in_open)
            new_batches = -(-rows_left // self.split_size)
            if len(queue.batches) + new_batches > self.max_enqueued:
                raise self._full(f"; task size is {size} but scheduling capacity is only "
                                 f"{free_in_open + (self.max_enqueued - len(queue.batches)) * self.split_size}")
            for task in tasks:
                self._enqueue_locked(queue, task, now)
            self._cond.notify_all()
        if self.metrics is not None:
            self.metrics.input_batch_size.labels(queue.model_name).observe(size)
        combined: Future = Future()
        remaining = [len(tasks)]
        lock = threading.Lock()

        def done(_: Future) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            errors = [t.future.exception() for t in tasks if not t.future.cancelled() and t.future.exception()]
            if any(t.future.cancelled() for t in tasks):
                combined.set_exception(deadline_exceeded("Deadline exceeded while waiting in the batch queue"))
            elif errors:
                combined.set_exception(errors[0])
            else:
                outs = [t.future.result() for t in tasks]
                combined.set_result({k: np.concatenate([o[k] for o in outs]) for k in outs[0]})

        for task in tasks:
            task.future.add_done_callback(done)
        return combined

    # ------------------------------------------------------------------ batch threads
    def _next_batch_locked(self, now: float) -> tuple[BatchQueue | None, _Batch | None, float | None]:
        """A runnable batch (round-robin over queues), or how long to wait for one to become runnable."""
        wait: float | None = None
        n = len(self._queues)
        for i in range(n):
            queue = self._queues[(self._rr + i) % n]
            if not queue.batches:
                continue
            first = queue.batches[0]
            limit = self.split_size if self.splitting else self.max_batch_size
            ready = (first.size >= limit or len(queue.batches) > 1 or queue.closed or self._stopping
                     or now - first.created >= self.timeout_s)
            if ready:
                self._rr = (self._rr + i + 1) % n
                queue.batches.popleft()
                return queue, first, None
            left = first.created + self.timeout_s - now
            wait = left if wait is None else min(wait, left)
        return None, None, wait

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._queues = [q for q in self._queues if not (q.closed and not q.batches)]
                    queue, batch, wait = self._next_batch_locked(time.monotonic())
                    if batch is not None:
                        break
                    if self._stopping and not any(q.batches for q in self._queues):
                        return
                    self._cond.wait(timeout=wait)
            self._process(queue, batch)

    def _padded_size(self, n: int) -> int:
        for size in self.allowed:
            if size >= n:
                return size
        return n

    def _process(self, queue: BatchQueue, batch: _Batch) -> None:
        start = time.monotonic()
        live: list[_Task] = []
        replies: dict[Any, list[tuple[Any, Any, bool]]] = {}  # loop -> [(asyncio future, value, is_error)]
        for task in batch.tasks:
            if task.aio is not None:
                if task.aio.cancelled():  # racy read from this thread, but only ever saves work: checked again on delivery
                    continue
                if task.expired(start):
                    replies.setdefault(task.loop, []).append(
                        (task.aio, deadline_exceeded("Deadline exceeded while waiting in the batch queue"), True))
                    continue
            elif not task.future.set_running_or_notify_cancel():
                continue  # its caller gave up (deadline) before we got to it
            elif task.expired(start):
                task.future.set_exception(deadline_exceeded("Deadline exceeded while waiting in the batch queue"))
                continue
            live.append(task)
        try:
            self._run_batch(queue, live, start, replies)
        finally:
            for loop, items in replies.items():
                try:
                    loop.call_soon_threadsafe(_deliver, items)
                except RuntimeError:  # the loop is closed: its callers are gone
                    pass

    def _run_batch(self, queue: BatchQueue, live: list[_Task], start: float,
                   replies: dict[Any, list[tuple[Any, Any, bool]]]) -> None:
        def reply(t: _Task, value: Any, error: bool) -> None:
            if t.aio is not None:
                replies.setdefault(t.loop, []).append((t.aio, value, error))
            elif error:
                if not t.future.done():
                    t.future.set_exception(value)
            else:
                t.future.set_result(value)

        if not live:
            return
        rows = sum(t.size for t in live)
        padded = self._padded_size(rows)
        try:
            names = list(live[0].inputs)
            merged = {}
            for name in names:
                parts = [t.inputs[name] for t in live]
                if padded > rows:
                    first = parts[0][:1]
                    parts.append(np.repeat(first, padded - rows, axis=0))
                merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            if self.metrics is not None:
                m = self.metrics
                queuing = m.child(m.queuing_latency, self.pool_name)
                for t in live:
                    queuing.observe((start - t.enqueued) * 1e6)
                m.child(m.processed_batch_size, queue.model_name).observe(padded)
                m.child(m.padding_size, queue.model_name, str(padded)).observe(padded - rows)
            outputs = queue.process(merged)
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != padded:
                    raise invalid_argument(
                        f"batched output '{name}' has shape {list(value.shape)}, but the batch has {padded} rows: "
                        "every output must be batch-major to serve this signature with batching")
            offset = 0
            for t in live:
                reply(t, {k: v[offset:offset + t.size] for k, v in outputs.items()}, False)
                offset += t.size
        except Exception as exc:  # one bad batch must never kill a batch thread
            err = exc if isinstance(exc, ServingError) else ServingError(grpc.StatusCode.INTERNAL, f"batch failed: {exc}")
            answered = {id(f) for items in replies.values() for f, _, _ in items}
            for t in live:
                if t.aio is None or id(t.aio) not in answered:
                    reply(t, err, True)

    def stop(self, timeout: float = 10.0) -> None:
        """Process what is queued, then let the threads exit."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _deliver(items: list[tuple[Any, Any, bool]]) -> None:
    """On the event loop: hand each asyncio caller of a batch its rows (or error), skipping those that gave up."""
    for future, value, error in items:
        if future.done():  # cancelled by its deadline meanwhile
            continue
        if error:
            future.set_exception(value)
        else:
            future.set_result(value)
