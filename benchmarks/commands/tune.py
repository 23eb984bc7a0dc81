"""`python -m benchmarks tune` (make tune): the server configuration that serves a model fastest within a p99
budget, confirmed against the default, written out ready to use, with a capacity plan.

Each trial starts the server in one configuration (benchmarks/tune/launchers.py), finds the highest
open-loop (Poisson) rate whose p99 stays within --p99-ms (benchmarks/tune/rate_search.py) and records one
row; the search (benchmarks/tune/space.py) picks the next configuration. Then the winner and the default are
re-measured in interleaved pairs and compared with `compare`'s bootstrap, and <run>/best/ gets the files.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import time
from pathlib import Path

import numpy as np

from benchmarks.commands.common import (DEFAULT_GRPC_TARGET, DEFAULT_MODELS, DEFAULT_REST_TARGET, add_run_args,
                                        finish_run, open_run)
from benchmarks.load.managers import OpenLoop, WindowPlan, run_point
from benchmarks.results.profiler import profile
from benchmarks.tune.launchers import Endpoint, Launcher, docker_answers, make_launcher
from benchmarks.tune.outputs import CapacityPlan, write_best
from benchmarks.tune.rate_search import RatePlan, wait_until_drained
from benchmarks.tune.space import DEFAULT, SEARCHES, TrialConfig, make_search
from benchmarks.tune.tuner import (TUNE, Confirmation, Prober, Trial, TuneSettings, challenger, confirm, ranked,
                                   run_trials)

MAX_IN_FLIGHT = 256  # open-loop cap: sends beyond it are skipped and fail the probe
# A probe's p99 should be a percentile, not the maximum of a few dozen requests (one scheduling stall on a busy
# machine would fail it): windows stretch to hold this many requests in all, up to MAX_WINDOW_S each.
MIN_REQUESTS, MAX_WINDOW_S = 300, 4.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    d, r = TuneSettings, RatePlan
    p.add_argument("--model", required=True, help="model name under --models-dir (and on the server)")
    p.add_argument("--p99-ms", type=float, required=True, help="latency budget: p99 in ms at the rate found")
    p.add_argument("--min-rps", type=float, default=0.0, help="a configuration must reach this rate to qualify")
    p.add_argument("--api", choices=("grpc", "rest"), default="grpc")
    p.add_argument("--request-batch", type=int, default=1, help="rows per request (default 1)")
    p.add_argument("--trials", type=int, default=d.trials,
                   help=f"at most this many configurations (default {d.trials})")
    p.add_argument("--search", choices=SEARCHES, default="quick",
                   help="recipe: TF Serving's batching guide; quick (default): hill climbing from it; grid: all listed")
    p.add_argument("--target-rps", type=float, default=0.0, help="plan replicas and HPA bounds for this rate")
    p.add_argument("--server", choices=("auto", "embedded", "tfserving", "manual"), default="embedded",
                   help="who runs each trial: embedded (default), tfserving (Docker), auto (tfserving where Docker "
                        "answers), manual (prints each configuration and waits for Enter)")
    p.add_argument("--target", default=DEFAULT_GRPC_TARGET, help="with --server manual: gRPC host:port")
    p.add_argument("--rest-target", default=DEFAULT_REST_TARGET, help="with --server manual: REST host:port")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--start-rps", type=float, default=r.start_rps, help="first rate of the first trial's search")
    p.add_argument("--resolution-pct", type=float, default=r.resolution_pct,
                   help=f"rate search stops when pass and fail are this close (default {r.resolution_pct:g} %%)")
    p.add_argument("--max-probes", type=int, default=r.max_probes, help="rate-search probes per trial")
    p.add_argument("--window-s", type=float, default=1.0,
                   help=f"probe window, 3 per probe (longer at low rates, to hold {MIN_REQUESTS} requests, up to "
                        f"{MAX_WINDOW_S:g} s)")
    p.add_argument("--pairs", type=int, default=d.pairs,
                   help="confirmation: the winner's and the challenger's rates searched again on this many fresh "
                        "servers each, interleaved (3: an exact test can then reach p = 0.05; 0 = skip)")
    p.add_argument("--search-minutes", type=float, default=4.5,
                   help="no new trial starts after this long (default 4.5: with the confirmation's 6 searches, "
                        "make tune stays within 10 minutes; 0 = no limit)")
    add_run_args(p)


def _model_info(args) -> int:
    """The model's input width (discovery's: 0 = build requests from the server's signature)."""
    from benchmarks.requests.discovery import discover_models

    infos = {i.name: i for i in discover_models(args.models_dir)}
    if args.server != "manual" and args.model not in infos:
        raise ValueError(f"no model {args.model!r} under {args.models_dir} "
                         f"(have: {', '.join(sorted(infos)) or 'none'}; export it first: make export)")
    info = infos.get(args.model)
    return info.n_features if info is not None else 0


def make_prober(args, n_features: int) -> Prober:
    """One Poisson open-loop point at `rate` against the trial's server -> its profiled row."""
    from benchmarks.clients.transports import client_name, make_transport
    from benchmarks.requests.builder import RequestSpec, build_requests

    payloads: dict = {}
    timeout_s = max(5.0, 20 * args.p99_ms / 1000)

    def probe(endpoint: Endpoint, config: TrialConfig, rate: float):
        target = endpoint.grpc_target if args.api == "grpc" else endpoint.rest_target
        if "p" not in payloads:  # built once, from the first server (a model without manifest: its signature)
            built = build_requests(RequestSpec(args.model, args.api, target, n_features))
            payloads["p"] = built.payload(args.request_batch)
        p = payloads["p"]
        waited = wait_until_drained(lambda: _lone_request_ms(args.api, target, p, timeout_s), args.p99_ms)
        window_s = min(max(args.window_s, MIN_REQUESTS / (3 * rate)), max(MAX_WINDOW_S, args.window_s))
        plan = WindowPlan(window_s=window_s, fixed_windows=3, warmup_s=0.5)
        point = run_point(lambda: make_transport(args.api, target, p.rest_path, concurrency=MAX_IN_FLIGHT,
                                                 timeout_s=timeout_s, grpc_method=p.grpc_method),
                          [p.grpc_bytes if args.api == "grpc" else p.rest_body],
                          OpenLoop(rate, "poisson", max_in_flight=MAX_IN_FLIGHT), plan,
                          server_pids=endpoint.pids, metrics_url=endpoint.metrics_url, model=args.model)
        row = profile(point, kind=args.api, model=args.model, mode=config.label(), batch_size=args.request_batch,
                      scenario=TUNE, server=endpoint.server, target=target, client=client_name(args.api))
        row.extra["drain_wait_s"] = round(waited, 2)
        return row

    return probe


def _lone_request_ms(api: str, target: str, payload, timeout_s: float) -> float | None:
    """One blocking request's latency in ms (None when it failed): the drain check before a probe."""
    from benchmarks.clients.probe import probe as lone

    started = time.perf_counter()
    result = lone(api, target, payload, timeout_s)
    return (time.perf_counter() - started) * 1000 if result.ok else None


def _launcher(args) -> Launcher:
    kind = args.server
    if kind == "auto":
        kind = "tfserving" if docker_answers() else "embedded"
        print(f">> server: {kind} ({'Docker answers' if kind == 'tfserving' else 'no Docker engine answers'})")
    return make_launcher(kind, args.models_dir, args.model, args.target, args.rest_target)


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{r:g}" for r in rates)


def conclusion(conf: Confirmation, winner: Trial, other: Trial, s: TuneSettings) -> tuple[str, TrialConfig]:
    """What the confirmation says, and the configuration to deploy: the search's winner only when its rates are
    significantly higher than the default's; otherwise the default (a change has to earn its place)."""
    n = len(conf.winner_rates)
    name = "the default" if other.config == DEFAULT else f"the runner-up ({other.config.label()})"
    med_w, med_o = float(np.median(conf.winner_rates)), float(np.median(conf.other_rates))
    measured = (f"rate within {s.budget_ms:g} ms searched again on {n} fresh servers a side, interleaved: winner "
                f"{_rates(conf.winner_rates)} req/s, {name} {_rates(conf.other_rates)} req/s (exact permutation "
                f"test of the mean: p = {conf.p_winner_higher:.3f} winner higher, {conf.p_other_higher:.3f} lower)")
    if other.config != DEFAULT:  # the default won the search
        if conf.verdict == "winner":
            return f"the default is already best, significant: {measured}", DEFAULT
        return (f"the default is already best in the search; not significantly ahead of the runner-up, so keep the "
                f"default: {measured}"), DEFAULT
    if conf.verdict == "winner":
        gain = f"{med_w / med_o - 1:+.0%}" if med_o > 0 else "from nothing within the budget"
        return (f"gain over the default: {gain} in rate under the budget (median {med_w:g} vs {med_o:g} req/s), "
                f"significant: {measured}"), winner.config
    if conf.verdict == "other":
        return (f"not confirmed: the default held a significantly higher rate than the search's winner "
                f"({winner.config.label()}); keep the default: {measured}"), DEFAULT
    return (f"not significant: the search's winner ({winner.config.label()}, {winner.score:g} vs {other.score:g} "
            f"req/s in the search) did not hold a higher rate than the default when both were measured again; "
            f"keep the default: {measured}"), DEFAULT


def _confirm_and_write(trials: list[Trial], launcher: Launcher, probe: Prober, s: TuneSettings, w, args) -> str:
    best = ranked(trials)[0]
    lines = []
    if best.score <= 0:
        closest = best.shown
        return (f"no configuration meets p99 <= {s.budget_ms:g} ms at any rate tried; closest: {best.config.label()} "
                f"at {closest.rate:g}/s ({closest.why_not})" if closest else "no configuration started")
    if best.score < s.min_rps:
        lines.append(f"no configuration reaches --min-rps {s.min_rps:g} within the budget (best {best.score:g} req/s)")
    other = challenger(trials)
    chosen, rate = best.config, best.score
    if other is None:
        lines.append("no confirmation: no second configuration was measured")
    elif s.pairs > 0:
        conf = confirm(best, other, launcher, probe, s, w)
        if conf is not None:
            text, chosen = conclusion(conf, best, other, s)
            lines.append(text)
            # the capacity plan uses the re-measured rates of the configuration deployed
            rate = float(np.median(conf.winner_rates if chosen == best.config else conf.other_rates))
            for row in conf.rows:
                row.extra["tune_confirm"]["verdict"] = text
    if chosen != best.config:
        lines.append(f"recommended: {chosen.label()} (best/ files)")
    plan = CapacityPlan(args.target_rps, rate) if args.target_rps > 0 and rate > 0 else None
    winner_row = next(r for r in w.rows if r.scenario == TUNE and r.extra["tune"]["trial"] == best.index)
    winner_row.extra["tune"].update(winner=True, capacity_plan=plan.text() if plan else "",
                                    recommended=chosen.label())
    files = write_best(w.run_dir, chosen, plan)
    lines += [plan.text() if plan else "capacity plan: give --target-rps", "best files: " + ", ".join(
        str(f.relative_to(w.run_dir)) for f in files)]
    w.flush()
    return "\n".join(lines)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: finished trials are kept and the trial's server is stopped


def main(args: argparse.Namespace) -> int:
    if args.p99_ms <= 0 or args.request_batch < 1 or args.trials < 1:
        raise ValueError("--p99-ms must be > 0, --request-batch and --trials >= 1")
    n_features = _model_info(args)
    launcher = _launcher(args)
    signal.signal(signal.SIGTERM, _interrupt)
    w = open_run(args, "tune", server_kind=launcher.name, server_mode=args.search)
    cores = len(os.sched_getaffinity(0))
    s = TuneSettings(args.model, args.api, args.request_batch, args.p99_ms, args.min_rps, args.trials,
                     dataclasses.replace(RatePlan(), start_rps=args.start_rps, resolution_pct=args.resolution_pct,
                                         max_probes=args.max_probes), args.pairs, args.search_minutes * 60)
    search = make_search(args.search, cores, args.api, launcher.settings,
                         "gpu" if w.environment.gpus else "cpu")
    probe = make_prober(args, n_features)
    trials, interrupted = run_trials(search, launcher, probe, s, w)
    if interrupted:
        s = dataclasses.replace(s, pairs=0)  # stop means stop: the best/ files are written, nothing re-measured
    try:
        summary = _confirm_and_write(trials, launcher, probe, s, w, args) if trials else "no trial finished"
    except KeyboardInterrupt:  # the trials are written; the report still gets made
        launcher.stop()
        summary = "interrupted during the confirmation: trials kept, no best/ files"
    report = finish_run(w)
    from benchmarks.results.report import tune_table

    print("\n## Trials, best first\n" + tune_table(w.rows) + "\n\n" + summary + f"\n>> report: {report}")
    best = ranked(trials)[0] if trials else None
    return 0 if best is not None and best.score > 0 and best.score >= s.min_rps else 1
