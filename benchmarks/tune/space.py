"""What `tune` searches over: one server configuration (`TrialConfig`) and the three ways to pick the next one.

A configuration holds TF Serving's batching parameters, its thread flags and, for the embedded server, its
execution bound and mode. `None` means "the server's own default" (the flag is not passed), so the all-default
`TrialConfig()` is exactly what the server does out of the box: the baseline every search measures.

A search is a function of the trials measured so far -> the next configuration (None: done):
  recipe  TF Serving's batching guide for the device: batching on, num_batch_threads = cores,
          max_enqueued_batches = num_batch_threads, a large max_batch_size, batch_timeout_micros 0 then 1-10 ms
          (GPU: a high timeout first, then lower);
  quick   hill climbing from the recipe: always the untried neighbour of the best configuration so far, one
          setting one step along its list (Triton Model Analyzer's quick mode is the model), until the best
          has no untried neighbour or --trials are spent;
  grid    every combination of the listed values (GRID), in order.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

SEARCHES = ("recipe", "quick", "grid")
BATCH_FIELDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches",
                "allowed_batch_sizes")


@dataclass(frozen=True)
class TrialConfig:
    batching: bool = False
    max_batch_size: int = 128
    batch_timeout_micros: int = 0
    num_batch_threads: int = 2
    max_enqueued_batches: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()
    intra_op: int | None = None  # --tensorflow_intra_op_parallelism (0 = TensorFlow's own choice)
    inter_op: int | None = None  # --tensorflow_inter_op_parallelism
    rest_api_num_threads: int | None = None
    max_concurrent_executions: int | None = None  # embedded server: unbatched executions at once
    mode: str = "graph"  # embedded server: graph | xla | eager

    def normalized(self) -> "TrialConfig":
        """Batching fields mean nothing with batching off: one spelling per distinct server setup. Allowed batch
        sizes end at max_batch_size, as TF Serving requires (the list is cut there and that size added)."""
        if self.batching:
            sizes = self.allowed_batch_sizes
            if sizes and sizes[-1] != self.max_batch_size:
                sizes = tuple(s for s in sizes if s < self.max_batch_size) + (self.max_batch_size,)
            return dataclasses.replace(self, allowed_batch_sizes=sizes)
        plain = TrialConfig()
        return dataclasses.replace(self, **{f: getattr(plain, f) for f in BATCH_FIELDS})

    def label(self) -> str:
        """A short name that tells configurations apart (a row's `mode`)."""
        parts = []
        if self.batching:
            sizes = "/".join(map(str, self.allowed_batch_sizes))
            parts.append(f"batch mbs={self.max_batch_size} to={self.batch_timeout_micros}us thr={self.num_batch_threads} "
                         f"q={self.max_enqueued_batches}" + (f" sizes={sizes}" if sizes else ""))
        for name, value in (("intra", self.intra_op), ("inter", self.inter_op), ("rest", self.rest_api_num_threads),
                            ("exec", self.max_concurrent_executions)):
            if value is not None:
                parts.append(f"{name}={value}")
        if self.mode != "graph":
            parts.append(self.mode)
        return " ".join(parts) or "default"

    def batching_text(self) -> str:
        """The --batching_parameters_file text proto (wrapper types: `{ value: N }`)."""
        if not self.batching:
            return "# batching off: run the server without --enable_batching\n"
        lines = [f"{f} {{ value: {getattr(self, f)} }}" for f in BATCH_FIELDS[:4]]
        lines += [f"allowed_batch_sizes: {s}" for s in self.allowed_batch_sizes]
        return "\n".join(lines) + "\n"

    def server_flags(self, batching_file: str) -> list[str]:
        """tensorflow_model_server's flags for this configuration (the embedded server reads the same)."""
        flags = [f"--enable_batching", f"--batching_parameters_file={batching_file}"] if self.batching else []
        for flag, value in (("tensorflow_intra_op_parallelism", self.intra_op),
                            ("tensorflow_inter_op_parallelism", self.inter_op),
                            ("rest_api_num_threads", self.rest_api_num_threads)):
            if value is not None:
                flags.append(f"--{flag}={value}")
        return flags

    def embedded_flags(self) -> list[str]:
        """The embedded server's own settings beyond TF Serving's flags (its mode is ManagedServer.mode)."""
        n = self.max_concurrent_executions
        return [] if n is None else [f"--max-concurrent-executions={n}"]


DEFAULT = TrialConfig()


def recipe(cores: int, device: str = "cpu") -> list[TrialConfig]:
    """The default, then TF Serving's batching guide step by step (tensorflow_serving/batching/README.md)."""
    start = TrialConfig(batching=True, num_batch_threads=cores, max_enqueued_batches=cores,
                        max_batch_size=128 if device == "cpu" else 512,
                        batch_timeout_micros=0 if device == "cpu" else 10_000)
    timeouts = (1_000, 5_000) if device == "cpu" else (2_000, 500)
    return [DEFAULT, start, *(dataclasses.replace(start, batch_timeout_micros=t) for t in timeouts)]


def steps(cores: int, api: str) -> dict[str, list]:
    """Each setting's values in order; a quick-search neighbour is one step along one list."""
    threads = [None, *range(1, cores + 1)]
    return {"batching": [False, True],
            "batch_timeout_micros": [0, 500, 1_000, 2_000, 5_000, 10_000],
            "max_batch_size": [8, 16, 32, 64, 128, 256, 512],
            "num_batch_threads": list(range(1, 2 * cores + 1)),
            "max_enqueued_batches": [1, 2, 4, 8, 16],
            "allowed_batch_sizes": [(), tuple(2 ** k for k in range(10))],  # none, or powers of two (padding)
            "intra_op": threads, "inter_op": threads,
            "max_concurrent_executions": [1, 2, 4, None, 64],
            "mode": ["graph", "xla", "eager"],
            **({"rest_api_num_threads": [cores, 4 * cores, None]} if api == "rest" else {})}


GRID = {"batching": [False, True], "batch_timeout_micros": [0, 2_000], "intra_op": [None, 1],
        "max_concurrent_executions": [None, 1]}


def neighbours(config: TrialConfig, space: dict[str, list]) -> Iterable[TrialConfig]:
    for name, values in space.items():
        current = getattr(config, name)
        if current not in values:
            continue
        i = values.index(current)
        for j in (i + 1, i - 1):
            if 0 <= j < len(values):
                yield dataclasses.replace(config, **{name: values[j]}).normalized()


def supported(space: dict[str, list], settings: Sequence[str]) -> dict[str, list]:
    """Only the settings the launcher's server has."""
    return {k: v for k, v in space.items() if k in settings}


Scored = tuple[TrialConfig, float]  # (configuration, score: its rate under the budget; < 0 refused)
Search = Callable[[list[Scored]], TrialConfig | None]


def listed(configs: Iterable[TrialConfig]) -> Search:
    """recipe and grid: the listed configurations in order, each once."""
    todo = list(dict.fromkeys(c.normalized() for c in configs))

    def next_config(done: list[Scored]) -> TrialConfig | None:
        tried = {c for c, _ in done}
        return next((c for c in todo if c not in tried), None)

    next_config.size = len(todo)  # type: ignore[attr-defined]
    return next_config


def hill_climb(start: list[TrialConfig], space: dict[str, list]) -> Search:
    """quick: the start list first (default and recipe), then neighbours of the best scored so far."""
    first = listed(start)

    def next_config(done: list[Scored]) -> TrialConfig | None:
        pick = first(done)
        if pick is not None or not done:
            return pick
        tried = {c for c, _ in done}
        best = max(done, key=lambda cs: cs[1])[0]
        return next((c for c in neighbours(best, space) if c not in tried), None)

    next_config.size = None  # type: ignore[attr-defined]
    return next_config


def grid_configs(grid: dict[str, list], base: TrialConfig) -> list[TrialConfig]:
    names = list(grid)
    return [dataclasses.replace(base, **dict(zip(names, combo))) for combo in itertools.product(*grid.values())]


def make_search(kind: str, cores: int, api: str, settings: Sequence[str], device: str = "cpu") -> Search:
    start = recipe(cores, device)
    if kind == "recipe":
        return listed(start)
    if kind == "quick":
        return hill_climb(start[:2], supported(steps(cores, api), settings))
    if kind == "grid":
        return listed(grid_configs(supported(GRID, settings), start[1]))
    raise ValueError(f"unknown search {kind!r} ({'|'.join(SEARCHES)})")
