"""Every command the Makefile and README name exists and its --help teaches (exit 0, says what it does)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from benchmarks.commands.registry import COMMANDS, Command
from tests.conftest import REPO_ROOT

CLIS = [
    (["export", "--help"], "--models"),
    (["export", "verify", "--help"], "fresh process"),
    (["export", "keras", "--help"], "--sample-data"),
    (["export", "savedmodel", "--help"], "SavedModel directory"),
    (["serving", "--help"], "launch"),
    (["serving", "serve", "--help"], "--mode"),
    (["serving", "launch", "--help"], "--backend"),
    (["benchmarks", "--help"], "compare"),
    (["benchmarks", "suite", "--help"], "--quick"),
    (["benchmarks", "demo", "--help"], "--models-dir"),
    (["benchmarks", "locust", "--help"], "--workers"),
    (["benchmarks", "compare", "--help"], "--threshold"),
    (["benchmarks", "reliability", "--help"], "--soak-seconds"),
    (["benchmarks.reliability", "--help"], "--soak-seconds"),
    (["benchmarks", "capacity", "--help"], "--grpc-clients"),
    (["benchmarks", "grpc", "--help"], "--grpc-client {curl,aio}"),
]


@pytest.mark.parametrize("argv, needle", CLIS, ids=[" ".join(a) for a, _ in CLIS])
def test_cli_help(argv, needle):
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert needle in proc.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_every_registered_command_has_a_help(command):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", command.name, "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: python -m benchmarks {command.name}") and "--" in proc.stdout


def test_command_list_loads_no_command_module_nor_heavy_library():
    """`python -m benchmarks --help` lists every registered command from the registry alone."""
    probe = ("import contextlib, io, sys\n"
             "from benchmarks.__main__ import main\n"
             "out = io.StringIO()\n"
             "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
             "    main(['--help'])\n"
             "loaded = sorted(m for m in sys.modules if m.startswith(('benchmarks.commands.', 'benchmarks.reliability',"
             " 'tensorflow', 'matplotlib', 'locust', 'mlperf_loadgen')))\n"
             "print(loaded)\n"
             "print(out.getvalue())\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded, _, text = proc.stdout.partition("\n")
    assert loaded == "['benchmarks.commands.registry']"
    for command in COMMANDS:
        assert re.search(rf"^\s+{re.escape(command.name)}\s", text, flags=re.M), command.name


def test_make_help_lists_every_target():
    makefile = (REPO_ROOT / "Makefile").read_text()
    documented = set(re.findall(r"^([a-z][a-zA-Z_-]*):.*## ", makefile, flags=re.M))
    proc = subprocess.run(["make", "-s", "help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    listed = {line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()}
    phony = set(re.search(r"^\.PHONY: (.*)$", makefile, flags=re.M).group(1).split())
    assert documented == listed
    assert phony <= documented | {"venv"}
    for target in ("demo", "test", "export", "serve", "bench", "loadtest", "compare", "reliability"):
        assert target in listed


def test_registry_refuses_a_module_without_the_command_interface():
    refusal = r"benchmarks\.commands\.common does not define add_arguments\(\) and main\(\)"
    with pytest.raises(RuntimeError, match=refusal):
        Command("plumbing", "benchmarks.commands.common", "not a command").load()


def test_one_module_serves_grpc_rest_sweep_and_loadgen_with_todays_flags():
    from benchmarks.__main__ import build_parser

    def parse(*argv: str):
        return build_parser(list(argv)).parse_args(list(argv))

    sweep = parse("sweep", "--kind", "rest", "--concurrency", "2,4")
    assert (sweep.command, sweep.kind, sweep.concurrency, sweep.grpc_client) == ("sweep", "rest", (2, 4), "curl")
    grpc = parse("grpc", "--grpc-client", "curl")
    assert (grpc.command, grpc.target, grpc.batch_sizes, grpc.loadgen_duration_ms) == ("grpc", "127.0.0.1:8500", (1, 8, 64), 5000)
    assert not hasattr(grpc, "kind")  # grpc and rest are the kind; only sweep and loadgen take --kind
    with pytest.raises(SystemExit):
        parse("rest", "--kind", "grpc")


def test_one_cli_vocabulary_for_servers_and_targets():
    """--server means the server a command starts (one set of choices); --target is gRPC, --rest-target REST."""
    from benchmarks.__main__ import build_parser
    from benchmarks.commands.common import SERVERS

    def parse(*argv: str):
        return build_parser(list(argv)).parse_args(list(argv))

    for cmd in ("suite", "locust", "wrk", "perf-analyzer"):
        assert {parse(cmd, "--server", s).server for s in ("embedded", "none")} <= set(SERVERS)
        for other in ("auto", "python", "tfserving"):  # other commands' words for other things
            with pytest.raises(SystemExit):
                parse(cmd, "--server", other)
    suite = parse("suite", "--server", "none", "--target", "h:1", "--rest-target", "h:2")
    assert (suite.target, suite.rest_target) == ("h:1", "h:2")
    assert parse("locust", "--grpc-target", "h:3").target == "h:3"  # the old spelling, hidden
    assert parse("rest", "--rest-target", "h:4").rest_target == "h:4"
    assert parse("wrk", "--rest-target", "h:5").rest_target == "h:5"
    with pytest.raises(SystemExit):
        parse("rest", "--target", "h:6")  # REST endpoints are --rest-target everywhere
    with pytest.raises(SystemExit):
        parse("capacity", "--server", "python")  # capacity's no-op server choice is --noop-server
    assert parse("capacity", "--noop-server", "python").noop_server == "python"


def test_one_list_style_and_durations_in_seconds():
    """Every list flag takes commas, spaces or both; durations end in -seconds (the -s spellings still parse)."""
    from benchmarks.__main__ import build_parser

    def parse(*argv: str):
        return build_parser(list(argv)).parse_args(list(argv))

    grpc = parse("grpc", "--batch-sizes", "1", "32", "--concurrency", "1,8", "16", "--models", "a,b", "c",
                 "--loadgen", "server,offline", "--window-seconds", "0.5", "--timeout-s", "3")
    assert (grpc.batch_sizes, grpc.concurrency, grpc.models, grpc.loadgen) == (
        (1, 32), (1, 8, 16), ("a", "b", "c"), ("server", "offline"))
    assert (grpc.window_s, grpc.timeout_s) == (0.5, 3.0)
    assert parse("demo", "--server-modes", "graph,xla").server_modes == ("graph", "xla")
    for bad in (["--batch-sizes", "0"], ["--batch-sizes", "x"], ["--loadgen", "server,nope"]):
        with pytest.raises(SystemExit):
            parse("grpc", *bad)
