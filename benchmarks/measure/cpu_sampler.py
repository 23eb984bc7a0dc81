"""The CPU sampler: other processes' CPU (a load generator we launched: Locust's master and workers), sampled
in the background so any span can be read afterwards (cpu_meter.py measures one span known in advance).

A background thread samples each process's CPU times, and those of its main thread, every `interval_s`;
`summary(t0, t1)` turns the samples inside [t0, t1] (time.time() seconds) into percentages of one core,
so start-up (imports, spawning) outside the measured span does not count. The main thread is what
saturates a gevent process (Locust's users are greenlets on it, holding the GIL); the process total can
pass 100 % through grpcio's C-core threads without the generator being the limit, as with our own client
(cpu_meter.CPU_SATURATION_PCT: one rule, judged on the sending thread).
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

import psutil


@dataclass
class ProcessCpu:
    role: str  # e.g. master | worker0 | local
    pid: int
    cpu_percent: float | None  # whole process, 100 = one core; None when fewer than 2 samples fell in the span
    main_thread_cpu_percent: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """(CPU seconds of the whole process, of its main thread; NaN when that thread is not found) so far."""
    with proc.oneshot():
        times = proc.cpu_times()
        main = next((t for t in proc.threads() if t.id == proc.pid), None)
    return times.user + times.system, (main.user_time + main.system_time) if main is not None else float("nan")


class ProcessCpuSampler:
    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self._procs: dict[int, tuple[str, psutil.Process]] = {}
        self._samples: dict[int, list[tuple[float, float, float]]] = {}  # pid -> [(time, process s, main thread s)]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-cpu", daemon=True)

    def watch(self, pid: int, role: str) -> None:
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        with self._lock:
            self._procs[pid] = (role, proc)
            self._samples[pid] = []
        self._sample(pid, proc)

    def start(self) -> "ProcessCpuSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                procs = list(self._procs.items())
            for pid, (_, proc) in procs:
                self._sample(pid, proc)

    def _sample(self, pid: int, proc: psutil.Process) -> None:
        try:
            process_s, main_s = cpu_seconds(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        with self._lock:
            self._samples[pid].append((time.time(), process_s, main_s))

    def summary(self, t0: float, t1: float) -> list[ProcessCpu]:
        out = []
        with self._lock:
            items = [(pid, role, list(self._samples[pid])) for pid, (role, _) in self._procs.items()]
        for pid, role, samples in items:
            inside = [s for s in samples if t0 <= s[0] <= t1]
            if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
                out.append(ProcessCpu(role, pid, None, None))
                continue
            (ta, pa, ma), (tb, pb, mb) = inside[0], inside[-1]
            main_pct = 100.0 * (mb - ma) / (tb - ta)
            out.append(ProcessCpu(role, pid, round(100.0 * (pb - pa) / (tb - ta), 1),
                                  None if main_pct != main_pct else round(main_pct, 1)))
        return out
