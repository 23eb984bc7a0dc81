"""`tune`: the rate search and the configuration searches against a fake launcher and fake measurements (exact),
the files it writes, and one real two-trial tune against the embedded server."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.measure.histogram import LatencyHistogram
from benchmarks.results.report import tune_table
from benchmarks.results.schema import Environment, ResultRow, ResultWriter, load_run
from benchmarks.tune.launchers import Endpoint, ManualLauncher, TfServingLauncher, TrialRefused
from benchmarks.tune.outputs import CapacityPlan, deployment_text, hpa_text, write_best
from benchmarks.tune.rate_search import RatePlan, search_rate, why_not
from benchmarks.tune.space import DEFAULT, TrialConfig, hill_climb, make_search, recipe, steps
from benchmarks.tune.tuner import TuneSettings, challenger, confirm, ranked, run_trials
from serving.cli.config_files import parse_batching_parameters

DURATION_S = 3.0


def fake_row(rate: float, p99_ms: float, *, answered: float | None = None, errors: int = 0) -> ResultRow:
    """A probe's row: `answered` req/s over DURATION_S, every latency p99_ms / 2 except the top 2 % at p99_ms."""
    n = int((rate if answered is None else answered) * DURATION_S)
    top = n // 50 + 1
    hist = LatencyHistogram.from_samples_ms([p99_ms / 2] * (n - top) + [p99_ms] * top)
    row = ResultRow.from_histogram(hist, duration_s=DURATION_S, errors=errors, kind="grpc", model="m", mode="x",
                                   batch_size=1, scenario="tune", target_rate=rate)
    row.throughput_rps = n / DURATION_S
    return row


def cliff(capacity: float, low_ms: float = 5.0, high_ms: float = 80.0):
    """A server whose p99 is low up to `capacity` req/s and high beyond."""
    return lambda rate: fake_row(rate, low_ms if rate <= capacity else high_ms)


# ------------------------------------------------------------------------------------------- rate search
def test_rate_search_brackets_by_doubling_then_bisects_to_the_resolution():
    rates = []
    result = search_rate(lambda r: rates.append(r) or cliff(430)(r), 20.0,
                         RatePlan(start_rps=100, resolution_pct=10, max_probes=12))
    assert rates == [100, 200, 400, 800, 600, 500, 450, 425]  # 425..450 is within 10 %
    assert result.rate == 425 and result.best.row.p99_ms <= 20


def _row_with_stalls(rate: float, slow_share: float, slow_ms: float = 25.0, fast_ms: float = 4.0) -> ResultRow:
    n = int(rate * DURATION_S)
    slow = int(n * slow_share)
    hist = LatencyHistogram.from_samples_ms([fast_ms] * (n - slow) + [slow_ms] * slow)
    return ResultRow.from_histogram(hist, duration_s=DURATION_S, kind="grpc", model="m", mode="x", batch_size=1,
                                    scenario="tune", target_rate=rate)


def test_a_p99_only_failure_is_measured_again_and_judged_on_both_measurements():
    """One stall (1.5 % of requests at 25 ms) fails a probe; the second measurement has none, and the p99 of
    both together (0.75 % slow) is within the budget. A second stall, or an overload far past the budget,
    keeps the failure."""
    calls = {400: [_row_with_stalls(400, 0.015), _row_with_stalls(400, 0.0)]}
    result = search_rate(lambda r: calls[r].pop(0) if r in calls else cliff(450)(r), 20.0,
                         RatePlan(start_rps=400, max_probes=3))
    first = result.probes[0]
    assert first.rate == 400 and first.ok and first.row.extra["remeasured"] is True
    assert first.row.n == 2400 and first.row.duration_s == 2 * DURATION_S and first.row.p99_ms < 5
    assert [p.rate for p in result.probes] == [400, 800]  # 3 measurements: 400 twice, then 800 (80 ms: no repeat)
    twice = {400: [_row_with_stalls(400, 0.015), _row_with_stalls(400, 0.015)]}
    result = search_rate(lambda r: twice[r].pop(0), 20.0, RatePlan(start_rps=400, max_probes=2))
    assert not result.probes[0].ok and result.probes[0].row.p99_ms >= 20 and len(result.probes) == 1
    never = search_rate(lambda r: _row_with_stalls(r, 0.015), 20.0,
                        RatePlan(start_rps=400, max_probes=2, remeasure_below=0))
    assert [p.rate for p in never.probes] == [400, 200] and "remeasured" not in never.probes[0].row.extra


def test_a_probe_waits_until_a_lone_request_is_answered_within_half_the_budget():
    """The backlog a failed probe left behind: a failed lone request, then 900 and 15 ms (over half of the 20 ms
    budget), then 9 ms: drained."""
    from benchmarks.tune.rate_search import wait_until_drained

    now = [0.0]
    answers = iter([None, 900.0, 15.0, 9.0, 1.0])
    calls = []

    def lone():
        calls.append(now[0])
        return next(answers)

    waited = wait_until_drained(lone, 20.0, timeout_s=30, pause_s=0.5, clock=lambda: now[0],
                                sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert calls == [0.0, 0.5, 1.0, 1.5] and waited == 1.5  # 9 ms <= 10 ms ends it; the fifth answer is never asked
    stuck = wait_until_drained(lambda: 500.0, 20.0, timeout_s=2, pause_s=0.5, clock=lambda: now[0],
                               sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert stuck == 2.0  # gives up at the timeout: the probe then measures (and fails) as it is


def test_rate_search_stops_at_the_probe_cap():
    result = search_rate(cliff(430), 20.0, RatePlan(start_rps=100, max_probes=5))
    assert [p.rate for p in result.probes] == [100, 200, 400, 800, 600] and result.rate == 400


def test_rate_search_halves_below_a_failing_start_and_reports_the_closest_when_nothing_passes():
    p99 = {100: 90.0, 50: 40.0, 25: 30.0}
    result = search_rate(lambda r: fake_row(r, p99[r]), 20.0, RatePlan(start_rps=100, floor_rps=20, max_probes=10))
    assert [p.rate for p in result.probes] == [100, 50, 25]  # 12.5 is under the floor
    assert result.best is None and result.rate == 0 and result.closest.rate == 25


def test_rate_search_stops_at_the_ceiling():
    result = search_rate(cliff(1e9), 20.0, RatePlan(start_rps=100, ceiling_rps=400, max_probes=10))
    assert [p.rate for p in result.probes] == [100, 200, 400]


def test_a_probe_fails_on_errors_skipped_sends_and_a_shortfall_beyond_poisson_noise():
    assert why_not(fake_row(100, 10), 100, 20) == ""
    assert "p99" in why_not(fake_row(100, 30), 100, 20)
    assert "errors" in why_not(fake_row(100, 10, errors=3), 100, 20)
    dropped = fake_row(100, 10)
    dropped.extra["dropped_open_loop"] = 7
    assert "skipped" in why_not(dropped, 100, 20)
    assert why_not(fake_row(100, 10, answered=88), 100, 20) == ""  # 264 of 300: within 3 sigma
    assert "answered" in why_not(fake_row(100, 10, answered=60), 100, 20)


# ------------------------------------------------------------------------------------------- search space
def test_recipe_is_the_default_then_tf_servings_cpu_guide():
    configs = recipe(cores=2)
    assert configs[0] == DEFAULT and all(c.batching for c in configs[1:])
    assert configs[1].num_batch_threads == 2 == configs[1].max_enqueued_batches
    assert [c.batch_timeout_micros for c in configs[1:]] == [0, 1_000, 5_000]
    parse_batching_parameters(configs[1].batching_text())  # a valid text proto


def test_configurations_normalise_and_spell_tf_serving_flags():
    assert TrialConfig(batching=False, max_batch_size=7).normalized() == DEFAULT
    bucketed = TrialConfig(batching=True, max_batch_size=48, allowed_batch_sizes=(8, 16, 32, 64)).normalized()
    assert bucketed.allowed_batch_sizes == (8, 16, 32, 48)
    parse_batching_parameters(bucketed.batching_text())
    c = TrialConfig(batching=True, intra_op=1, rest_api_num_threads=8, max_concurrent_executions=2)
    assert c.server_flags("/b.txt") == ["--enable_batching", "--batching_parameters_file=/b.txt",
                                        "--tensorflow_intra_op_parallelism=1", "--rest_api_num_threads=8"]
    assert c.embedded_flags() == ["--max-concurrent-executions=2"]
    assert DEFAULT.label() == "default" and DEFAULT.server_flags("x") == []


def test_hill_climb_expands_the_best_and_never_repeats():
    space = {"intra_op": [None, 1, 2], "batching": [False, True]}
    search = hill_climb([DEFAULT], space)
    scores = {DEFAULT: 100.0, TrialConfig(intra_op=1): 150.0, TrialConfig(batching=True): 90.0,
              TrialConfig(intra_op=2): 120.0, TrialConfig(intra_op=1, batching=True): 140.0}
    done, order = [], []
    while (c := search(done)) is not None:
        order.append(c)
        done.append((c, scores[c]))
    # intra_op=1 beats the default, so its neighbours come next; batching on the default is never tried
    assert order == [DEFAULT, TrialConfig(intra_op=1), TrialConfig(intra_op=2), TrialConfig(intra_op=1, batching=True)]


def test_the_three_searches_only_use_the_launchers_settings():
    tf_only = ("batching", "batch_timeout_micros", "intra_op")
    grid = make_search("grid", 2, "grpc", tf_only)
    assert grid.size == 6  # 2 x 2 x 2, less the 2 timeouts that mean nothing with batching off
    assert make_search("recipe", 2, "grpc", tf_only).size == 4
    assert "rest_api_num_threads" in steps(2, "rest") and "rest_api_num_threads" not in steps(2, "grpc")
    with pytest.raises(ValueError):
        make_search("annealing", 2, "grpc", tf_only)


# ------------------------------------------------------------------------------------------- the tuning loop
class FakeLauncher:
    """Capacity per configuration; configurations in `refuse` do not start."""
    name, settings = "fake", ("batching", "batch_timeout_micros", "intra_op")

    def __init__(self, capacity, refuse=()):
        self.capacity, self.refuse, self.started, self.running = capacity, refuse, [], None

    def start(self, config, trial_dir):
        if config in self.refuse:
            raise TrialRefused("server did not start: invalid batching parameters")
        self.started.append(config)
        self.running = config
        return Endpoint("127.0.0.1:1", "127.0.0.1:2", "fake")

    def stop(self):
        self.running = None


def fake_prober(capacity, calls=None):
    def probe(endpoint, config, rate):
        if calls is not None:
            calls.append((config, rate))
        return cliff(capacity(config))(rate)
    return probe


def writer(tmp_path: Path) -> ResultWriter:
    return ResultWriter(tmp_path / "run", Environment())


SETTINGS = TuneSettings("m", "grpc", 1, budget_ms=20.0, trials=8, rate=RatePlan(start_rps=100, max_probes=8))


def test_recipe_trials_find_the_fastest_record_a_refused_one_and_write_a_row_each(tmp_path):
    caps = {DEFAULT: 300.0, recipe(2)[1]: 700.0, recipe(2)[2]: 500.0}
    launcher = FakeLauncher(caps, refuse={recipe(2)[3]})
    w, lines = writer(tmp_path), []
    trials, _ = run_trials(make_search("recipe", 2, "grpc", launcher.settings), launcher,
                        fake_prober(lambda c: caps[c]), SETTINGS, w, lines.append)
    assert [t.config for t in trials] == recipe(2)
    best = ranked(trials)[0]
    assert best.config == recipe(2)[1] and 600 <= best.score <= 700
    assert trials[3].result is None and "invalid batching" in trials[3].refused
    rows = load_run(w.run_dir).rows
    assert len(rows) == 4 and rows[3].extra["tune"]["status"] == "refused" and rows[3].n == 0
    assert lines[0].startswith("[tune] trial 1/4 default:") and "best so far" in lines[0]
    assert "refused" in lines[3]
    table = tune_table(rows)
    assert "winner" in table and "refused: server did not start" in table and "% lower rate" in table


def test_later_trials_start_their_rate_search_at_the_best_so_far(tmp_path):
    calls = []
    caps = {DEFAULT: 300.0, recipe(2)[1]: 700.0}
    search = make_search("recipe", 2, "grpc", FakeLauncher.settings)
    run_trials(search, FakeLauncher(caps), fake_prober(lambda c: caps.get(c, 100.0), calls),
               TuneSettings("m", "grpc", 1, 20.0, trials=2, rate=RatePlan(start_rps=100, max_probes=8)),
               writer(tmp_path), lambda _: None)
    second = [rate for c, rate in calls if c == recipe(2)[1]]
    first_best = max(rate for c, rate in calls if c == DEFAULT and rate <= 300)
    assert second[0] == first_best


def test_ctrl_c_keeps_the_finished_trials(tmp_path):
    caps = {DEFAULT: 300.0, recipe(2)[1]: 700.0}

    def probe(endpoint, config, rate):
        if config == recipe(2)[2]:
            raise KeyboardInterrupt
        return cliff(caps[config])(rate)

    launcher, w, lines = FakeLauncher(caps), writer(tmp_path), []
    trials, interrupted = run_trials(make_search("recipe", 2, "grpc", launcher.settings), launcher, probe, SETTINGS, w,
                                     lines.append)
    assert interrupted and len(trials) == 2 and len(load_run(w.run_dir).rows) == 2
    assert launcher.running is None and "interrupted" in lines[-1]


def test_no_trial_starts_once_the_search_time_is_spent(tmp_path):
    caps, lines = {DEFAULT: 300.0}, []
    trials, _ = run_trials(make_search("recipe", 2, "grpc", FakeLauncher.settings), FakeLauncher(caps),
                        fake_prober(lambda c: 300.0), TuneSettings("m", "grpc", 1, 20.0, search_s=1e-9),
                        writer(tmp_path), lines.append)
    assert len(trials) == 1 and "search time" in lines[-1]


def test_a_budget_nothing_meets_ranks_by_the_closest(tmp_path):
    caps = {DEFAULT: 0.5, recipe(2)[1]: 0.5}
    trials, _ = run_trials(make_search("recipe", 2, "grpc", FakeLauncher.settings), FakeLauncher(caps),
                        fake_prober(lambda c: caps.get(c, 0.5)),
                        TuneSettings("m", "grpc", 1, 20.0, trials=2, rate=RatePlan(max_probes=3)),
                        writer(tmp_path), lambda _: None)
    assert all(t.score == 0 and t.shown is not None and not t.shown.ok for t in trials)


def test_challenger_is_the_default_or_the_runner_up_when_the_default_won(tmp_path):
    caps = {DEFAULT: 300.0, recipe(2)[1]: 700.0, recipe(2)[2]: 500.0, recipe(2)[3]: 200.0}
    trials, _ = run_trials(make_search("recipe", 2, "grpc", FakeLauncher.settings), FakeLauncher(caps),
                        fake_prober(caps.get), SETTINGS, writer(tmp_path), lambda _: None)
    assert challenger(trials).config == DEFAULT
    caps[DEFAULT] = 900.0
    trials, _ = run_trials(make_search("recipe", 2, "grpc", FakeLauncher.settings), FakeLauncher(caps),
                        fake_prober(caps.get), SETTINGS, writer(tmp_path / "b"), lambda _: None)
    assert ranked(trials)[0].config == DEFAULT and challenger(trials).config == recipe(2)[1]


def test_confirmation_interleaves_pairs_and_uses_the_bootstrap(tmp_path):
    caps = {DEFAULT: 300.0, recipe(2)[1]: 700.0}
    launcher = FakeLauncher(caps)
    w = writer(tmp_path)
    trials, _ = run_trials(make_search("recipe", 2, "grpc", launcher.settings), launcher,
                        fake_prober(caps.get), TuneSettings("m", "grpc", 1, 20.0, trials=2), w, lambda _: None)
    launcher.started.clear()
    best, other = ranked(trials)[0], challenger(trials)
    conf = confirm(best, other, launcher, fake_prober(caps.get), SETTINGS, w, lambda _: None)
    assert launcher.started == [best.config, other.config, other.config, best.config, best.config, other.config]
    # each side's rate searched again: the fake server holds up to its capacity, so every search lands below it
    assert all(630 <= r <= 700 for r in conf.winner_rates) and all(270 <= r <= 300 for r in conf.other_rates)
    assert conf.p_winner_higher == pytest.approx(1 / 20) and conf.verdict == "winner"  # the most extreme of 20 splits
    rows = [r for r in load_run(w.run_dir).rows if r.scenario == "tune-confirm"]
    assert len(rows) == 6 and [r.extra["tune_confirm"]["role"] for r in rows[:2]] == ["winner", "other"]
    assert sorted(r.target_rate for r in rows) == sorted(conf.winner_rates + conf.other_rates)


def test_the_rate_test_is_exact_and_two_sided_by_parts():
    from benchmarks.tune.tuner import rate_test

    assert rate_test([700, 690, 710], [300, 310, 290]) == pytest.approx((0.05, 1.0))
    assert rate_test([300, 310, 290], [700, 690, 710]) == pytest.approx((1.0, 0.05))
    p_hi, p_lo = rate_test([600, 650, 700], [620, 640, 690])  # interleaved: neither side is higher
    assert p_hi > 0.2 and p_lo > 0.2
    assert rate_test([700], [300]) == (1.0, 1.0)  # one search a side cannot be tested


def test_the_conclusion_names_the_gain_a_tie_or_the_default_as_best(tmp_path):
    from benchmarks.commands.tune import conclusion
    from benchmarks.tune.tuner import Confirmation

    caps = {DEFAULT: 300.0, recipe(2)[1]: 700.0}
    trials, _ = run_trials(make_search("recipe", 2, "grpc", FakeLauncher.settings), FakeLauncher(caps),
                           fake_prober(caps.get), TuneSettings("m", "grpc", 1, 20.0, trials=2), writer(tmp_path),
                           lambda _: None)
    best, default = ranked(trials)
    higher = Confirmation([690.0] * 3, [290.0] * 3, [], 0.05, 1.0)
    text, chosen = conclusion(higher, best, default, SETTINGS)
    assert text.startswith("gain over the default: +138% in rate under the budget (median 690 vs 290 req/s), "
                           "significant") and chosen == best.config
    tie = Confirmation([600.0, 650.0, 700.0], [620.0, 640.0, 690.0], [], 0.4, 0.6)
    text, chosen = conclusion(tie, best, default, SETTINGS)
    assert text.startswith("not significant") and "keep the default" in text and chosen == DEFAULT
    text, chosen = conclusion(Confirmation([290.0] * 3, [690.0] * 3, [], 1.0, 0.05), best, default, SETTINGS)
    assert text.startswith("not confirmed") and chosen == DEFAULT
    text, chosen = conclusion(higher, default, best, SETTINGS)  # the default won the search
    assert text.startswith("the default is already best, significant") and chosen == DEFAULT
    text, chosen = conclusion(tie, default, best, SETTINGS)
    assert "not significantly ahead of the runner-up" in text and chosen == DEFAULT


# ------------------------------------------------------------------------------------------- outputs
def test_capacity_plan_runs_each_replica_at_70_percent():
    plan = CapacityPlan(target_rps=1000, per_replica_rps=300)
    assert plan.replicas == 5 and plan.max_replicas == 10  # 1000 / 210 -> 5
    assert CapacityPlan(10, 300).replicas == 1


def test_best_files_are_valid_and_the_k8s_copies_carry_the_plan(tmp_path):
    config = TrialConfig(batching=True, num_batch_threads=2, max_enqueued_batches=2, intra_op=1, mode="xla")
    files = {p.name: p for p in write_best(tmp_path, config, CapacityPlan(1000, 300))}
    assert set(files) == {"batching_parameters.txt", "flags.txt", "deployment.yaml", "hpa.yaml", "capacity.md"}
    parse_batching_parameters(files["batching_parameters.txt"])
    flags = files["flags.txt"].read_text()
    assert "--tensorflow_intra_op_parallelism=1" in flags and "--xla_cpu_compilation_enabled=true" in flags
    import yaml

    deployment = yaml.safe_load(files["deployment.yaml"].read_text())
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["spec"]["replicas"] == 5 and args.count("--enable_batching") == 1
    assert "--tensorflow_intra_op_parallelism=1" in args
    hpa = yaml.safe_load(files["hpa.yaml"].read_text())
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (5, 10)
    unbatched = yaml.safe_load(deployment_text(files["deployment.yaml"].read_text(), DEFAULT, 2))
    assert not any("batching" in a for a in unbatched["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "minReplicas: 3" in hpa_text("  minReplicas: 1\n  maxReplicas: 4\n", CapacityPlan(500, 300))


def test_tf_serving_launcher_builds_the_compose_services_docker_run(tmp_path):
    import yaml

    from benchmarks.tune.launchers import COMPOSE_FILE

    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["tfserving"]
    launcher = TfServingLauncher(tmp_path / "models", "m")
    batching = tmp_path / "b.txt"
    cmd = launcher.command(TrialConfig(batching=True, intra_op=2, mode="xla"), batching, 9000, 9001)
    image = cmd.index(service["image"])
    assert cmd[:4] == ["docker", "run", "--rm", "-d"] and cmd[image - 1] == service["entrypoint"][0]
    flags = cmd[image + 1:]
    assert flags.count("--enable_batching") == 1 and "--batching_parameters_file=/config/batching.config" in flags
    assert "--tensorflow_intra_op_parallelism=2" in flags and "--xla_cpu_compilation_enabled=true" in flags
    assert "--model_config_file=/models/models.config" in flags and "127.0.0.1:9000:8500" in cmd
    assert f"{batching.resolve()}:/config/batching.config:ro" in cmd
    assert not any("batching" in f for f in launcher.command(DEFAULT, batching, 1, 2)[image + 1:])


def test_manual_launcher_prints_the_configuration_and_waits(tmp_path, capsys):
    answers = iter(["", "skip"])
    launcher = ManualLauncher("h:1", "h:2", ask=lambda prompt: next(answers))
    config = TrialConfig(batching=True)
    assert launcher.start(config, tmp_path).grpc_target == "h:1"
    assert "--enable_batching" in capsys.readouterr().out
    with pytest.raises(TrialRefused, match="skipped"):
        launcher.start(config, tmp_path)


# ------------------------------------------------------------------------------------------- real
def test_two_trial_tune_against_the_embedded_server(exported_models_dir, tmp_path):
    from benchmarks.__main__ import main

    # Four server starts (two trials, one confirmation pair) are the command's; the rate searches are not under
    # test here (the fake-launcher tests above check them exactly): one probe each, from 200 req/s, where the
    # windows that hold tune's minimum of requests last 0.5 s (1 s at 100 req/s).
    code = main(["tune", "--model", "residual_regressor", "--p99-ms", "5000", "--trials", "2", "--search", "recipe",
                 "--max-probes", "1", "--start-rps", "200", "--window-s", "0.3", "--pairs", "1", "--target-rps", "100",
                 "--models-dir", str(exported_models_dir), "--results-dir", str(tmp_path), "--run-id", "t",
                 "--no-progress"])
    run = tmp_path / "t"
    rows = load_run(run).rows
    tune_rows = [r for r in rows if r.scenario == "tune"]
    assert [r.mode for r in tune_rows] == ["default", recipe(len(__import__("os").sched_getaffinity(0)))[1].label()]
    assert all(r.extra["tune"]["status"] in ("ok", "over budget") and r.n > 0 for r in tune_rows)
    assert code == 0 and sum(r.scenario == "tune-confirm" for r in rows) == 2
    # one search a side cannot be tested: the default is kept, and its files are the ones written
    assert (run / "best" / "batching_parameters.txt").read_text().startswith("# batching off")
    assert "--enable_batching" not in (run / "best" / "flags.txt").read_text()
    assert (run / "best" / "hpa.yaml").exists() and (run / "tune_pareto.png").exists()
    assert "Tuning: trials, best first" in (run / "report.md").read_text()
    assert json.loads((run / "results.json").read_text())["results"]


def test_the_embedded_launcher_turns_a_refused_configuration_into_a_reason(exported_models_dir, tmp_path):
    from benchmarks.tune.launchers import EmbeddedLauncher

    launcher = EmbeddedLauncher(exported_models_dir, "residual_regressor", start_timeout_s=60)
    bad = TrialConfig(batching=True, max_batch_size=128, allowed_batch_sizes=(8, 64))  # last must be 128
    with pytest.raises(TrialRefused, match="allowed_batch_sizes"):
        launcher.start(bad, tmp_path / "trial")
    launcher.stop()
    assert launcher.server is None
