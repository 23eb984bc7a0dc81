"""PNG plots (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from benchmarks.results.schema import ResultRow  # noqa: E402

MODE_STYLE = {"eager": ("tab:red", "o"), "predict_on_batch": ("tab:orange", "v"), "graph": ("tab:blue", "s"),
              "xla": ("tab:green", "^"), "savedmodel": ("tab:purple", "D")}


_PLAIN = FuncFormatter(lambda v, _pos: f"{v:g}")


def _plain_axes(ax, x: bool = False) -> None:
    """Log axes with plain numbers (2, 5, 10, 20 ms) instead of 2x10^1."""
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(_PLAIN)
    ax.yaxis.set_minor_formatter(NullFormatter())
    if x:
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.xaxis.set_minor_formatter(NullFormatter())


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def plot_inprocess(rows: list[ResultRow], out: Path) -> Path | None:
    # Only the five model modes: graph-call's rows are in-process too, but name ways of calling, not modes.
    steady = [r for r in rows if r.kind == "inprocess" and r.scenario == "steady" and r.mode in MODE_STYLE
              and _ok(r.p50_ms)]
    if not steady:
        return None
    models = sorted({r.model for r in steady})
    fig, axes = plt.subplots(1, len(models), figsize=(max(7.5, 5.2 * len(models)), 4.8), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models):
        for mode in MODE_STYLE:
            pts = sorted((r.batch_size, r.p50_ms, r.p99_ms) for r in steady if r.model == model and r.mode == mode)
            if not pts:
                continue
            color, marker = MODE_STYLE[mode]
            b = [p[0] for p in pts]
            ax.plot(b, [p[1] for p in pts], marker=marker, color=color, label=f"{mode} p50")
            ax.fill_between(b, [p[1] for p in pts], [p[2] for p in pts], color=color, alpha=0.12)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_axes(ax, x=True)
        ax.set_title(model)
        ax.set_xlabel("batch size (rows per call)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("latency per call, ms (line p50, band to p99)")
    axes[0][-1].legend(fontsize=8, loc="upper left")
    fig.suptitle("In-process latency per call by batch size\n(Keras eager vs tf.function graph vs XLA vs SavedModel)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_latency_throughput(rows: list[ResultRow], out: Path) -> Path | None:
    served = [r for r in rows if r.kind in ("grpc", "rest") and r.scenario == "closed" and _ok(r.throughput_rps)
              and r.n > 0]
    if not served:
        return None
    groups: dict[tuple, list[ResultRow]] = defaultdict(list)
    for r in served:
        groups[(r.kind, r.server, r.model, r.batch_size)].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for (kind, server, model, bs), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        rs.sort(key=lambda r: r.concurrency or 0)
        ls = "-" if kind == "grpc" else "--"
        label = f"{kind} · {server} · {model} · b={bs}"
        for ax, attr in zip(axes, ("p50_ms", "p99_ms")):
            line, = ax.plot([r.throughput_rps for r in rs], [getattr(r, attr) for r in rs], ls, marker="o", label=label)
            for r in rs:
                ax.annotate(f"c{r.concurrency}", (r.throughput_rps, getattr(r, attr)), fontsize=7,
                            textcoords="offset points", xytext=(3, 3), color=line.get_color())
                if r.stable is False:
                    ax.plot([r.throughput_rps], [getattr(r, attr)], "x", color="black", ms=9)
    for ax, name in zip(axes, ("p50", "p99")):
        ax.set_xlabel("throughput, requests/s")
        ax.set_ylabel(f"{name} latency, ms")
        ax.set_yscale("log")
        _plain_axes(ax)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{name} latency vs throughput (closed loop; × = unstable point)")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_spectrum(rows: list[ResultRow], out: Path, max_lines: int = 10) -> Path | None:
    """Latency by percentile on a 'nines' axis for the served rows with the most samples."""
    cand = [r for r in rows if r.histogram and r.n >= 100 and r.kind in ("grpc", "rest", "locust")]
    if not cand:
        cand = [r for r in rows if r.histogram and r.n >= 20 and r.scenario == "steady"]
    if not cand:
        return None
    cand.sort(key=lambda r: (r.kind, r.server, r.model, r.batch_size, r.concurrency or 0, r.scenario))
    if len(cand) > max_lines:
        step = len(cand) / max_lines
        cand = [cand[int(i * step)] for i in range(max_lines)]
    fig, ax = plt.subplots(figsize=(10, 6.5))
    for r in cand:
        pct, vals = r.histogram_obj().spectrum()
        # beyond 1 - 1/n the "percentile" is just the max repeated: stop the line there
        keep = (1 - pct / 100.0) >= 1.0 / r.n
        pct, vals = pct[keep], vals[keep]
        x = -np_log10(1 - pct / 100.0)
        load = f"c={r.concurrency}" if r.concurrency is not None else f"{r.target_rate or 0:g}/s"
        ax.plot(x, vals, label=f"{r.kind} {r.server or r.mode} {r.model} b={r.batch_size} {r.scenario} {load}")
    ticks = [0.301, 1, 2, 3, 4, 5]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    ax.set_yscale("log")
    _plain_axes(ax)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency, ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Latency percentile spectrum (HdrHistogram; each line ends at its 1 - 1/n percentile)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_capacity(rows: list[ResultRow], out: Path) -> Path | None:
    """Requests/s one load-generator process drove against the no-op server, per client and concurrency,
    with the 5,000 req/s goal and 10,000 stretch goal drawn in."""
    cap = [r for r in rows if r.scenario == "capacity" and _ok(r.throughput_rps)]
    if not cap:
        return None
    groups: dict[tuple, list[ResultRow]] = defaultdict(list)
    for r in cap:
        groups[(r.kind, r.client, r.server)].append(r)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for (kind, client, server), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r.concurrency or 0)
        ax.plot([r.concurrency for r in rs], [r.throughput_rps for r in rs], "-" if kind == "grpc" else "--",
                marker="o", label=f"{kind} · {client} → {server}")
    goal = max((r.extra.get("goal_rps") or 0 for r in cap), default=0)
    stretch = max((r.extra.get("stretch_goal_rps") or 0 for r in cap), default=0)
    for y, name in ((goal, "goal"), (stretch, "stretch goal")):
        if y:
            ax.axhline(y, color="grey", ls=":", lw=1)
            ax.text(0.01, y, f" {name} {y:,.0f}/s", transform=ax.get_yaxis_transform(), fontsize=8,
                    color="grey", va="bottom")
    ax.set_xscale("log", base=2)
    concs = sorted({r.concurrency for r in cap if r.concurrency})
    ax.set_xticks(concs)
    ax.set_xticklabels([str(c) for c in concs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("requests in flight (closed loop)")
    ax.set_ylabel("requests/s")
    ax.grid(True, alpha=0.3)
    ax.set_title("Load-generator capacity: one process against a no-op server")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_tune_pareto(rows: list[ResultRow], out: Path) -> Path | None:
    """`tune`: each trial's rate within the budget against its p99 there; the Pareto front (no other trial has
    both a higher rate and a lower p99), the default and the winner marked, the budget as a line, and the
    confirmation's re-measured rates of both sides (triangles): where they fall apart or together is the verdict."""
    trials = [r for r in rows if r.scenario == "tune" and "tune" in r.extra and _ok(r.p99_ms)]
    if not trials:
        return None
    x = [r.extra["tune"]["rate_under_budget"] or r.target_rate for r in trials]
    met = [bool(r.extra["tune"]["rate_under_budget"]) for r in trials]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.scatter([v for v, m in zip(x, met) if m], [r.p99_ms for r, m in zip(trials, met) if m], c="tab:blue",
               label="trial (highest rate within the budget)")
    ax.scatter([v for v, m in zip(x, met) if not m], [r.p99_ms for r, m in zip(trials, met) if not m], c="tab:gray",
               marker="x", label="trial over budget (closest probe)")
    points = [(v, r.p99_ms) for v, r, m in zip(x, trials, met) if m]
    front = sorted(p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points))
    if front:
        ax.plot(*zip(*front), c="tab:blue", alpha=0.5, label="Pareto front")
    for r, v in zip(trials, x):
        win, default = bool(r.extra["tune"].get("winner")), r.mode == "default"
        if win or default:
            ax.scatter([v], [r.p99_ms], s=220, facecolors="none", edgecolors="tab:red" if win else "k")
            ax.annotate(f"winner: {r.mode}" if win else "default", (v, r.p99_ms), textcoords="offset points",
                        xytext=(-10, 10) if win else (10, 10), ha="right" if win else "left", fontsize=8)
    # The confirmation: each side's rate searched again on fresh servers, so the spread of the figure shows
    confirm = [r for r in rows if r.scenario == "tune-confirm" and r.target_rate and _ok(r.p99_ms)]
    for role, marker, color in (("winner", "^", "tab:red"), ("other", "v", "k")):
        side = [r for r in confirm if r.extra.get("tune_confirm", {}).get("role") == role]
        if side:
            ax.scatter([r.target_rate for r in side], [r.p99_ms for r in side], marker=marker, facecolors="none",
                       edgecolors=color, s=60, label=f"re-measured: {'winner' if role == 'winner' else side[0].mode}")
    ax.axhline(trials[0].extra["tune"]["budget_ms"], c="tab:red", ls="--", lw=1, label="p99 budget")
    ax.set_xlabel("request rate (req/s, open loop, Poisson)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title(f"tune {trials[0].model} ({trials[0].kind}, batch {trials[0].batch_size})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def np_log10(a):
    import numpy as np

    return np.log10(np.clip(a, 1e-9, None))


def write_plots(rows: list[ResultRow], run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    made = [plot_inprocess(rows, run_dir / "inprocess_modes.png"),
            plot_latency_throughput(rows, run_dir / "latency_vs_throughput.png"),
            plot_spectrum(rows, run_dir / "latency_spectrum.png"),
            plot_capacity(rows, run_dir / "capacity.png"),
            plot_tune_pareto(rows, run_dir / "tune_pareto.png")]
    return [p for p in made if p is not None]
