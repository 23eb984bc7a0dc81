"""`python -m benchmarks inference-cpu` runs end to end (briefly) and writes well-formed result rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import build_parser
from benchmarks.commands import inference_cpu

pytestmark = pytest.mark.timeout(300)


def _args(*argv: str):
    argv = ("inference-cpu", *argv)
    return build_parser(list(argv)).parse_args(list(argv))


def test_inference_cpu_writes_one_row_per_api_and_size(tmp_path: Path, capsys) -> None:
    args = _args("--requests", "20", "--repeats", "2", "--sizes", "1,4", "--results-dir", str(tmp_path),
                 "--run-id", "brief")
    assert inference_cpu.main(args) == 0
    doc = json.loads((tmp_path / "brief" / "results.json").read_text())
    rows = doc["results"]
    apis = ("predict", "classify", "regress", "multi-inference")
    assert [(r["scenario"], r["batch_size"]) for r in rows] == [(a, n) for n in (1, 4) for a in apis]
    assert rows[1]["extra"]["measurement"] == "Classify, 1 example"
    assert rows[7]["extra"]["measurement"] == "MultiInference (classify + regress), 4 examples"
    for r in rows:
        x = r["extra"]
        assert (r["kind"], r["model"], r["server"], r["client"]) == ("grpc", "half_plus_two", "embedded-graph",
                                                                      "grpc.aio")
        assert r["errors"] == 0 and r["n"] == 20 and r["p50_ms"] > 0 and r["histogram"]
        assert x["repeats"] == 2
        low, high = x["spread_min_max"]["server_cpu_us_per_request"]
        assert low <= x["server_cpu_us_per_request_median"] <= high
        assert x["handler_cpu_us_per_request"] > 0 and x["handler_p50_us"] > 0
    assert len({tuple(r[k] for k in ("scenario", "batch_size")) for r in rows}) == len(rows)  # compare keys apart
    assert (tmp_path / "brief" / "report.md").is_file()
    assert "handler CPU/req" in capsys.readouterr().out


def test_inference_cpu_refuses_bad_sizes(capsys) -> None:
    with pytest.raises(SystemExit):
        _args("--sizes", "0")
    assert "--sizes" in capsys.readouterr().err
