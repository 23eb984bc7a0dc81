"""benchmarks.commands.inference_cpu runs end to end (briefly) and writes a well-formed result file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.commands import inference_cpu

pytestmark = pytest.mark.timeout(300)


def test_inference_cpu_writes_one_measurement_per_api_and_size(tmp_path: Path, capsys) -> None:
    assert inference_cpu.main(["--requests", "20", "--repeats", "1", "--sizes", "1,4",
                               "--results-dir", str(tmp_path)]) == 0
    [result_file] = list(tmp_path.glob("*-inference-cpu-*/inference_cpu.json"))
    doc = json.loads(result_file.read_text())
    names = [m["name"] for m in doc["measurements"]]
    apis = ("Predict", "Classify", "Regress", "MultiInference (classify + regress)")
    assert names == [f"{api}, 1 example" for api in apis] + [f"{api}, 4 examples" for api in apis]
    for m in doc["measurements"]:
        assert m["errors"] == 0 and m["p50_us"] > 0 and m["server_cpu_us_per_request"] >= 0
        assert m["detail"]["server_cpu_us_per_request_median"] == m["server_cpu_us_per_request"]
    handlers = doc["handler_in_process"]
    assert [m["name"] for m in handlers] == [f"handler in-process: {name}" for name in names]
    assert all(m["server_cpu_us_per_request"] > 0 for m in handlers)
    assert "written:" in capsys.readouterr().out


def test_inference_cpu_refuses_bad_sizes(capsys) -> None:
    with pytest.raises(SystemExit):
        inference_cpu.main(["--sizes", "0"])
    assert "--sizes" in capsys.readouterr().err
