"""The real TF Serving deployment (docker/), checked by machine: nothing here runs Docker or a GPU.

Every config file TF Serving would read is parsed through the proto it is declared as; compose and k8s
YAML are checked for the ports, mounts, flags, GPU reservation and probes; the health-check script is run
for real against a fake TF Serving REST endpoint.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format

from serving.cli import config_files as tc

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
MODEL_NAMES = {"residual_regressor", "reconstructing_regressor", "softplus_regressor"}

# --------------------------------------------------------------------------------------------------------
# Message classes built from the official protos
# --------------------------------------------------------------------------------------------------------

# (name, number, wrapper type or scalar, repeated) copied from upstream session_bundle_config.proto.
OFFICIAL_BATCHING_FIELDS = {
    "max_batch_size": (1, "google.protobuf.Int64Value"),
    "batch_timeout_micros": (2, "google.protobuf.Int64Value"),
    "max_enqueued_batches": (3, "google.protobuf.Int64Value"),
    "num_batch_threads": (4, "google.protobuf.Int64Value"),
    "thread_pool_name": (5, "google.protobuf.StringValue"),
    "allowed_batch_sizes": (6, "int64"),
    "pad_variable_length_inputs": (7, "bool"),
    "enable_large_batch_splitting": (8, "google.protobuf.BoolValue"),
    "max_execution_batch_size": (9, "google.protobuf.Int64Value"),
}


def _type_of(fd) -> str:
    if fd.message_type is not None:
        return fd.message_type.full_name
    return {fd.TYPE_INT64: "int64", fd.TYPE_BOOL: "bool", fd.TYPE_STRING: "string"}[fd.type]


def test_batching_parameters_descriptor_matches_official_proto():
    desc = tc.BatchingParameters.DESCRIPTOR
    assert desc.full_name == "tensorflow.serving.BatchingParameters"
    got = {f.name: (f.number, _type_of(f)) for f in desc.fields}
    assert got == OFFICIAL_BATCHING_FIELDS
    assert desc.fields_by_name["allowed_batch_sizes"].is_repeated


def test_batching_parameters_wire_format_uses_official_numbers():
    # max_batch_size = field 1 holding an Int64Value{value: 128}: tag 0x0a, len 3, (tag 0x08, varint 128).
    msg = tc.BatchingParameters()
    msg.max_batch_size.value = 128
    msg.allowed_batch_sizes.extend([128])
    assert msg.SerializeToString() == b"\x0a\x03\x08\x80\x01" + b"\x32\x02\x80\x01"  # field 6 packed


def test_monitoring_config_descriptor_matches_official_proto():
    desc = tc.MonitoringConfig.DESCRIPTOR
    assert desc.full_name == "tensorflow.serving.MonitoringConfig"
    prom = desc.fields_by_name["prometheus_config"]
    assert (prom.number, prom.message_type.full_name) == (1, "tensorflow.serving.PrometheusConfig")
    fields = {f.name: (f.number, _type_of(f)) for f in prom.message_type.fields}
    assert fields == {"enable": (1, "bool"), "path": (2, "string")}


# --------------------------------------------------------------------------------------------------------
# Batching files
# --------------------------------------------------------------------------------------------------------


def test_cpu_batching_file_follows_the_cpu_guide():
    s = tc.load_batching_settings(DOCKER / "batching" / "batching_cpu.config")
    assert s.num_batch_threads == 2  # cores of the reference machine
    assert s.batch_timeout_micros == 0
    assert s.max_enqueued_batches == s.num_batch_threads  # online serving
    assert s.allowed_batch_sizes == ()  # no padding on CPU
    assert s.max_batch_size >= 128


def test_gpu_batching_file_follows_the_gpu_guide():
    cpu = tc.load_batching_settings(DOCKER / "batching" / "batching_cpu.config")
    s = tc.load_batching_settings(DOCKER / "batching" / "batching_gpu.config")
    assert s.max_batch_size > cpu.max_batch_size
    sizes = s.allowed_batch_sizes
    assert len(sizes) >= 3 and list(sizes) == sorted(set(sizes)) and sizes[-1] == s.max_batch_size
    assert s.max_enqueued_batches == s.num_batch_threads
    assert 0 < s.batch_timeout_micros <= 10_000  # "a few milliseconds"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max_batch_size { value: 64 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 32\n",
         r"last entry of allowed_batch_sizes \(32\) must equal max_batch_size \(64\)"),
        ("allowed_batch_sizes: 8\nallowed_batch_sizes: 64\n",  # absent max_batch_size means TF's 1000
         r"must equal max_batch_size \(1000, the default\)"),
        ("max_batch_size { value: 64 }\nallowed_batch_sizes: 32\nallowed_batch_sizes: 16\nallowed_batch_sizes: 64\n",
         r"strictly increasing"),
        ("num_batch_threads { value: 0 }\n", r"num_batch_threads must be >= 1, got 0"),
        ("max_batch_size { value: -4 }\n", r"max_batch_size must be >= 1, got -4"),
        ("batch_timeout_micros { value: -1 }\n", r"batch_timeout_micros must be >= 0"),
        ("max_batch_size { value: 64 }\nenable_large_batch_splitting { value: true }\n"
         "max_execution_batch_size { value: 128 }\n", r"max_execution_batch_size \(128\) must be <= max_batch_size"),
        ("max_batch_size: 64\n", r"not a valid BatchingParameters text proto: 1:\d+ .*Expected \"\{\""),
        ("max_batch_sise { value: 64 }\n", r"max_batch_sise"),
    ],
)
def test_bad_batching_file_fails_naming_file_and_problem(tmp_path, text, expected):
    bad = tmp_path / "bad_batching.config"
    bad.write_text(text)
    with pytest.raises(ValueError) as info:
        tc.load_batching_settings(bad)
    message = str(info.value)
    assert str(bad) in message
    assert re.search(expected, message), message


def test_missing_batching_file_is_reported_as_not_found(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        tc.load_batching_settings(tmp_path / "nope.config")
    with pytest.raises(ValueError, match="not found"):
        tc.parse_batching_parameters("docker/batching/nope.config")  # str path, not proto text


def test_absent_batching_fields_get_tf_serving_defaults(tmp_path):
    empty = tmp_path / "empty.config"
    empty.write_text("# nothing set\n")
    s = tc.load_batching_settings(empty)
    assert (s.max_batch_size, s.batch_timeout_micros, s.max_enqueued_batches) == (1000, 0, 10)
    assert s.num_batch_threads == tc.default_num_batch_threads() >= 1
    assert s.thread_pool_name == "batch_threads"
    assert s.allowed_batch_sizes == () and not s.pad_variable_length_inputs
    assert not s.enable_large_batch_splitting and s.execution_batch_size == 1000
    assert s.source == str(empty)


def test_batching_settings_from_text_and_padding():
    s = tc.load_batching_settings(
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1500 }\n"
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 32\nallowed_batch_sizes: 64\n"
        "enable_large_batch_splitting { value: true }\nmax_execution_batch_size { value: 32 }\n"
    )
    assert s.batch_timeout_seconds == pytest.approx(0.0015)
    assert [s.padded_batch_size(n) for n in (1, 8, 9, 33, 64)] == [8, 8, 32, 64, 64]
    assert s.execution_batch_size == 32
    with pytest.raises(ValueError, match="exceeds max_batch_size 64"):
        s.padded_batch_size(65)
    unbucketed = tc.load_batching_settings("max_batch_size { value: 16 }")
    assert unbucketed.padded_batch_size(5) == 5


# --------------------------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------------------------


def test_monitoring_config_enables_prometheus_at_documented_path():
    config = tc.parse_monitoring_config(DOCKER / "monitoring.config")
    assert config.prometheus_config.enable is True
    assert tc.prometheus_path(config) == "/monitoring/prometheus/metrics"


def test_bad_monitoring_config_fails(tmp_path):
    bad = tmp_path / "monitoring.config"
    bad.write_text('prometheus_config { enable: true path: "metrics" }\n')
    with pytest.raises(ValueError, match=r"monitoring.config.*must start with '/'"):
        tc.parse_monitoring_config(bad)
    assert tc.prometheus_path(tc.parse_monitoring_config("prometheus_config { enable: false }")) is None


# --------------------------------------------------------------------------------------------------------
# Model server config
# --------------------------------------------------------------------------------------------------------


def test_example_model_config_mirrors_export():
    config = tc.parse_model_server_config(DOCKER / "models.config.example")
    entries = {c.name: c for c in config.model_config_list.config}
    assert set(entries) == MODEL_NAMES
    for name, entry in entries.items():
        assert entry.base_path == f"/models/{name}"
        assert entry.model_platform == "tensorflow"
        assert entry.model_version_policy.latest.num_versions == 2
        assert set(entry.version_labels) == {"stable", "canary"}
    assert dict(entries["residual_regressor"].version_labels) == {"stable": 1, "canary": 2}


def test_config_written_by_export_passes_the_checks(tmp_path):
    # The real writer (export/model_config.py) on a minimal layout: integer version dirs are all it reads.
    from export.model_config import write_model_configs

    for name in MODEL_NAMES:
        (tmp_path / name / "1").mkdir(parents=True)
    (tmp_path / "residual_regressor" / "2").mkdir()
    container_cfg, local_cfg = write_model_configs(tmp_path)
    config = tc.parse_model_server_config(container_cfg)
    assert {c.base_path for c in config.model_config_list.config} == {f"/models/{n}" for n in MODEL_NAMES}
    assert tc.check_versions_on_disk(config, tmp_path) == []
    local = tc.parse_model_server_config(local_cfg)
    assert tc.check_versions_on_disk(local, tmp_path) == []


def _config(**overrides) -> str:
    entry = {"name": '"m"', "base_path": '"/models/m"', "model_platform": '"tensorflow"'}
    entry.update(overrides)
    body = "\n".join(f"    {k}: {v}" for k, v in entry.items() if v is not None)
    return "model_config_list {\n  config {\n" + body + "\n  }\n}\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (_config(base_path=None), r"base_path is empty"),
        (_config(model_platform='"pytorch"'), r"model_platform must be 'tensorflow', got 'pytorch'"),
        (_config().replace("  }\n}", "  }\n  config { name: 'm' base_path: '/models/m2' model_platform: 'tensorflow' }\n}"),
         r"duplicate model name 'm'"),
        (_config(version_labels='{ key: "can-ary" value: 1 }'), r"label 'can-ary' must match \[a-zA-Z0-9_\]\+"),
        (_config(version_labels='{ key: "stable" value: 0 }'), r"points at version 0"),
        (_config(model_version_policy="{ specific { versions: 1 } }", version_labels='{ key: "canary" value: 2 }'),
         r"'canary' -> 2, which the 'specific' policy does not load"),
        ("", r"model_config_list is missing"),
        ("model_config_list { config { name: 'm' base_path: '/m' model_platform: 'tensorflow' bogus: 1 } }",
         r"not a valid ModelServerConfig text proto.*bogus"),
    ],
)
def test_bad_model_config_fails_naming_problem(tmp_path, text, expected):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        tc.parse_model_server_config(path)
    assert str(path) in str(info.value)
    assert re.search(expected, str(info.value)), str(info.value)


def test_versions_on_disk_check_finds_labels_on_unloaded_versions(tmp_path):
    for v in (1, 2, 3):
        (tmp_path / "m" / str(v)).mkdir(parents=True)
    config = tc.parse_model_server_config(
        _config(model_version_policy="{ latest { num_versions: 2 } }",
                version_labels='{ key: "stable" value: 1 }')
    )
    assert tc.check_versions_on_disk(config, tmp_path) == [
        "m: label 'stable' -> version 1, not among the loaded versions [2, 3]"
    ]
    assert "no integer version directories" in tc.check_versions_on_disk(config, tmp_path / "elsewhere")[0]


def test_check_cli_reports_each_file(tmp_path, capsys):
    bad = tmp_path / "batching_bad.config"
    bad.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    good = [DOCKER / "batching" / "batching_cpu.config", DOCKER / "monitoring.config", DOCKER / "models.config.example"]
    assert tc.main([str(p) for p in good]) == 0
    assert tc.main([str(p) for p in good] + [str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {bad} (batching)" in out and "must equal max_batch_size (8)" in out


# --------------------------------------------------------------------------------------------------------
# Docker Compose
# --------------------------------------------------------------------------------------------------------


def _interpolate(value: str) -> str:
    """Resolve compose ${VAR:-default} to its default (what a plain `docker compose up` uses)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _compose(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())["services"]["tfserving"]


def _flags(args: list[str]) -> dict[str, str]:
    flags = {}
    for arg in args:
        assert arg.startswith("--"), arg
        key, _, value = arg[2:].partition("=")
        flags[key] = _interpolate(value) if value else "true"
    return flags


EXPECTED_FLAGS = {
    "port": "8500",
    "rest_api_port": "8501",
    "model_config_file": "/models/models.config",
    "model_config_file_poll_wait_seconds": "60",
    "allow_version_labels_for_unavailable_models": "true",  # export writes labels at startup
    "enable_batching": "true",
    "batching_parameters_file": "/config/batching.config",
    "monitoring_config_file": "/config/monitoring.config",
}


@pytest.mark.parametrize("name, image, batching", [
    ("docker-compose.yml", "tensorflow/serving:2.19.1", "batching_cpu.config"),
    ("docker-compose.gpu.yml", "tensorflow/serving:2.19.1-gpu", "batching_gpu.config"),
])
def test_compose_file(name, image, batching):
    svc = _compose(name)
    assert svc["image"] == image
    # The entrypoint is the server binary itself, so MODEL_NAME/--model_name play no part.
    assert svc["entrypoint"] == ["/usr/bin/tensorflow_model_server"]
    flags = _flags(svc["command"])
    for key, value in EXPECTED_FLAGS.items():
        assert flags.get(key) == value, key
    assert "model_name" not in flags and "model_base_path" not in flags
    assert flags["xla_cpu_compilation_enabled"] == "false"
    assert sorted(_interpolate(p) for p in svc["ports"]) == ["8500:8500", "8501:8501"]

    mounts = {m["target"]: m for m in svc["volumes"]}
    assert _interpolate(mounts["/models"]["source"]) == "../artifacts/models"
    assert (DOCKER / "../artifacts/models").resolve() == ROOT / "artifacts" / "models"
    assert all(m["read_only"] is True for m in mounts.values())
    for target, source in {
        "/config/batching.config": f"./batching/{batching}",
        "/config/monitoring.config": "./monitoring.config",
        "/config/healthcheck.sh": "./healthcheck.sh",
    }.items():
        assert mounts[target]["source"] == source and (DOCKER / source).is_file()
    # Every file the flags name is mounted.
    for key in ("batching_parameters_file", "monitoring_config_file"):
        assert flags[key] in mounts
    assert flags["model_config_file"].startswith("/models/")

    health = svc["healthcheck"]
    assert health["test"] == ["CMD", "bash", "/config/healthcheck.sh"]
    assert svc["init"] is True


def test_only_gpu_compose_reserves_gpus():
    reservation = _compose("docker-compose.gpu.yml")["deploy"]["resources"]["reservations"]["devices"]
    assert reservation == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "deploy" not in _compose("docker-compose.yml")


# --------------------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------------------


def _k8s(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def test_k8s_kustomization_lists_every_manifest():
    listed = _k8s("kustomization.yaml")["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_k8s_deployment():
    dep = _k8s("deployment.yaml")
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    assert container["image"] == "tensorflow/serving:2.19.1-gpu"
    assert container["command"] == ["/usr/bin/tensorflow_model_server"]
    flags = _flags(container["args"])
    for key, value in EXPECTED_FLAGS.items():
        assert flags.get(key) == value, key
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8500, "http": 8501}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1

    # The pod's CPUs match the batch threads of the batching file it mounts (TF Serving's GPU guide).
    gpu_batching = tc.load_batching_settings(DOCKER / "batching" / "batching_gpu.config")
    assert int(container["resources"]["requests"]["cpu"]) == gpu_batching.num_batch_threads

    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["/models"]["readOnly"] is True
    assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"] == _k8s("pvc.yaml")["metadata"]["name"]
    assert volumes[mounts["/config"]["name"]]["configMap"]["name"] == _k8s("configmap.yaml")["metadata"]["name"]

    readiness = container["readinessProbe"]["exec"]["command"]
    assert readiness == ["bash", "/config/healthcheck.sh"]  # requires AVAILABLE
    assert container["livenessProbe"]["exec"]["command"] == ["bash", "/config/healthcheck.sh", "--live"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model load + warmup time
    assert {e["name"]: e["value"] for e in container["env"]}["TFS_MODEL_CONFIG"] == flags["model_config_file"]


def test_k8s_configmap_holds_the_repository_files_verbatim():
    data = _k8s("configmap.yaml")["data"]
    assert data == {
        "batching.config": (DOCKER / "batching" / "batching_gpu.config").read_text(),
        "monitoring.config": (DOCKER / "monitoring.config").read_text(),
        "healthcheck.sh": (DOCKER / "healthcheck.sh").read_text(),
    }
    # And what the server reads from it parses.
    tc.parse_batching_parameters(data["batching.config"])
    tc.parse_monitoring_config(data["monitoring.config"])


def test_k8s_service_and_hpa():
    svc = _k8s("service.yaml")
    dep = _k8s("deployment.yaml")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert {p["port"]: p["targetPort"] for p in svc["spec"]["ports"]} == {8500: "grpc", 8501: "http"}
    hpa = _k8s("hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    pvc = _k8s("pvc.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]


# --------------------------------------------------------------------------------------------------------
# Health check script, run for real against a fake TF Serving REST endpoint
# --------------------------------------------------------------------------------------------------------


class _FakeStatus(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    states: dict[str, str] = {}

    def do_GET(self):  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        if name in self.states:
            code = 200
            payload = {"model_version_status": [
                {"version": "2", "state": self.states[name], "status": {"error_code": "OK", "error_message": ""}}
            ]}
        else:
            code = 404
            payload = {"error": f"Servable not found for request: Latest({name})"}
        body = json.dumps(payload, indent=1).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        # Ignore the client's "Connection: close" (as a keep-alive proxy might): the script must stop
        # reading after Content-Length bytes instead of waiting for EOF.
        self.close_connection = False

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_tfs():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeStatus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _healthcheck(port: int, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "TFS_REST_PORT": str(port), "TFS_READ_TIMEOUT": "20"}
    if config is not None:
        env["TFS_MODEL_CONFIG"] = str(config)
    # A 20 s read timeout with a 10 s cap: if the script waited for EOF on the keep-alive connection
    # instead of reading Content-Length bytes, this would time out.
    return subprocess.run(["bash", str(DOCKER / "healthcheck.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=10)


def test_healthcheck_requires_every_model_available(fake_tfs):
    port = fake_tfs.server_address[1]
    config = DOCKER / "models.config.example"  # model names are read from the config, like in the container
    _FakeStatus.states = {n: "AVAILABLE" for n in MODEL_NAMES}
    ok = _healthcheck(port, config=config)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("healthy") and all(n in ok.stdout for n in MODEL_NAMES)

    _FakeStatus.states = {**_FakeStatus.states, "softplus_regressor": "LOADING"}
    loading = _healthcheck(port, config=config)
    assert loading.returncode == 1
    assert "softplus_regressor (LOADING)" in loading.stdout and "residual_regressor" not in loading.stdout


def test_healthcheck_explicit_models_missing_model_and_liveness(fake_tfs):
    port = fake_tfs.server_address[1]
    _FakeStatus.states = {"a": "AVAILABLE", "b": "LOADING"}
    assert _healthcheck(port, "a").returncode == 0
    missing = _healthcheck(port, "a", "nope")
    assert missing.returncode == 1 and "nope (HTTP 404)" in missing.stdout
    live = _healthcheck(port, "--live", "b")  # LOADING is alive, just not ready
    assert live.returncode == 0 and "HTTP 200" in live.stdout
    assert _healthcheck(port, "b").returncode == 1


def test_healthcheck_fails_when_nothing_listens(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeStatus)
    port = server.server_address[1]
    server.server_close()  # the port is now closed
    for args in ((), ("--live",)):
        result = _healthcheck(port, *args, "a")
        assert result.returncode == 1 and "no HTTP answer" in result.stdout


def test_healthcheck_without_model_names_is_an_error(tmp_path):
    empty = tmp_path / "models.config"
    empty.write_text("model_config_list {}\n")
    result = _healthcheck(1, config=empty)
    assert result.returncode == 2 and "no model names found" in result.stdout
    result = _healthcheck(1, config=tmp_path / "absent.config")
    assert result.returncode == 2 and "not readable" in result.stdout


def test_healthcheck_reads_names_like_text_format_writes_them(tmp_path):
    # text_format output (double quotes, one field per line) and hand-written single-line style.
    cfg = tmp_path / "models.config"
    cfg.write_text(
        text_format.MessageToString(tc.parse_model_server_config(DOCKER / "models.config.example"))
        + "# name: 'commented_out'\n"
    )
    compact = tmp_path / "compact.config"
    compact.write_text("model_config_list { config { name: 'x1' base_path: '/m/x1' } config { name:\"x2\" } }\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeStatus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _FakeStatus.states = {n: "AVAILABLE" for n in MODEL_NAMES | {"x1", "x2"}}
        result = _healthcheck(server.server_address[1], config=cfg)
        assert result.returncode == 0 and "commented_out" not in result.stdout
        assert sorted(result.stdout.split(": ")[-1].split()) == sorted(MODEL_NAMES)
        result = _healthcheck(server.server_address[1], config=compact)
        assert result.returncode == 0 and result.stdout.split(": ")[-1].split() == ["x1", "x2"]
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------------------
# Every Compose and Kubernetes file, against the published schemas
# --------------------------------------------------------------------------------------------------------
COMPOSE_FILES = sorted(DOCKER.rglob("docker-compose*.yml"))
K8S_MANIFESTS = sorted(p for p in DOCKER.rglob("k8s/*.yaml") if p.name != "kustomization.yaml")
KUBERNETES_VERSION = "1.33.0"


def test_every_deploy_file_is_checked():
    names = {str(p.relative_to(DOCKER)) for p in COMPOSE_FILES + K8S_MANIFESTS}
    assert {"docker-compose.yml", "docker-compose.gpu.yml", "locust/docker-compose.yml", "k8s/deployment.yaml",
            "locust/k8s/master.yaml", "locust/k8s/worker.yaml", "locust/k8s/service.yaml"} <= names


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(DOCKER)))
def test_compose_file_follows_the_compose_specification(path):
    """The Compose Specification's JSON schema, as vendored by check-jsonschema (no network)."""
    from importlib.resources import files

    import jsonschema

    schema = json.loads((files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(
        yaml.safe_load(path.read_text()))]
    assert not errors, errors


@pytest.mark.parametrize("path", K8S_MANIFESTS, ids=lambda p: str(p.relative_to(DOCKER)))
def test_k8s_manifest_is_valid_for_kubernetes_1_33_strict(path):
    """Kubernetes 1.33's OpenAPI schemas (kubernetes-validate), strict: an unknown field is an error."""
    import kubernetes_validate

    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_checks_catch_a_misplaced_field(tmp_path):
    import kubernetes_validate

    dep = _k8s("deployment.yaml")
    dep["spec"]["template"]["spec"]["containers"][0]["replicas"] = 2  # belongs on the Deployment spec
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBERNETES_VERSION, strict=True)


# --------------------------------------------------------------------------------------------------------
# Locust beside TF Serving (docker/locust/)
# --------------------------------------------------------------------------------------------------------
LOCUST = DOCKER / "locust"


def _locust_compose() -> dict:
    return yaml.safe_load((LOCUST / "docker-compose.yml").read_text())


def _bench_args(command) -> "argparse.Namespace":
    """A compose command (string or list, ${VAR:-default} resolved) parsed by `python -m benchmarks locust`."""
    import shlex

    from benchmarks.__main__ import build_parser

    argv = ["locust", *(shlex.split(_interpolate(command)) if isinstance(command, str) else command)]
    return build_parser(argv).parse_args(argv)


def test_locust_compose_master_writes_results_and_workers_find_it():
    compose = _locust_compose()
    master, worker = compose["services"]["master"], compose["services"]["worker"]
    assert master["build"] == worker["build"] == {"context": "../..", "dockerfile": "docker/locust/Dockerfile"}
    assert (LOCUST / master["build"]["context"] / master["build"]["dockerfile"]).resolve() == LOCUST / "Dockerfile"
    m = _bench_args(master["command"])  # the master's flags are ones the command accepts
    assert m.master and m.bind == "0.0.0.0:5557" and m.expect_workers == 2 and m.server == "none"
    assert (m.target, m.rest_target) == ("tfserving:8500", "tfserving:8501")  # docker/docker-compose.yml
    assert m.metrics_url == "http://tfserving:8501/monitoring/prometheus/metrics" and m.results_dir == Path("/results")
    assert {v["target"]: v["source"] for v in master["volumes"]}["/results"] == "./results"
    w = _bench_args(worker["command"])
    assert w.worker and w.master_host == "master:5557" and "5557" in master["expose"]
    assert "ports" not in worker  # `--scale worker=N` needs workers without fixed host ports
    assert compose["networks"]["default"]["external"] is True
    assert _interpolate(compose["networks"]["default"]["name"]) == "tfserve-bench_default"  # the TF Serving project
    assert yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["name"] == "tfserve-bench"


def test_locust_dockerfile_copies_what_the_load_side_imports():
    text = (LOCUST / "Dockerfile").read_text()
    copied = {src for line in re.findall(r"^COPY (.+)$", text, re.M) for src in line.split()[:-1]}
    assert copied == {"pyproject.toml", "constraints.txt", "export", "serving", "benchmarks"}
    assert all((ROOT / c).exists() for c in copied)
    assert "-c constraints.txt" in text and 'ENTRYPOINT ["python", "-m", "benchmarks", "locust"]' in text


def test_locust_k8s_manifests_point_at_the_tf_serving_service():
    folder = LOCUST / "k8s"
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
    master, worker = (yaml.safe_load((folder / n).read_text()) for n in ("master.yaml", "worker.yaml"))
    svc, cm = (yaml.safe_load((folder / n).read_text()) for n in ("service.yaml", "configmap.yaml"))
    assert master["spec"]["replicas"] == 1 and worker["spec"]["replicas"] >= 2
    for dep in (master, worker):
        pod = dep["spec"]["template"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        (volume,) = pod["spec"]["volumes"]
        assert volume["configMap"]["name"] == cm["metadata"]["name"]
        assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {volume["name"]: "/config"}
        assert container["args"][:2] == ["--config", "/config/locust.conf"]
    assert svc["spec"]["selector"].items() <= master["spec"]["template"]["metadata"]["labels"].items()
    assert not svc["spec"]["selector"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    assert {p["port"] for p in svc["spec"]["ports"]} == {5557, 8089}
    wargs = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert wargs[wargs.index("--master-host") + 1] == svc["metadata"]["name"]
    conf = dict(line.split(" = ", 1) for line in cm["data"]["locust.conf"].splitlines() if " = " in line
                and not line.startswith("#"))
    tfs = _k8s("service.yaml")
    tfs_ports = {p["name"]: p["port"] for p in tfs["spec"]["ports"]}
    assert conf["host"] == f"http://{tfs['metadata']['name']}:{tfs_ports['http']}"
    assert conf["bench-grpc-target"] == f"{tfs['metadata']['name']}:{tfs_ports['grpc']}"
    assert conf["locustfile"] == "/config/locustfile.py" and "locustfile.py" in cm["data"]


PARSE_LOCUST_CONF = """
import json, sys
from locust import argument_parser
from benchmarks.load.locust_run import add_bench_options  # what the locustfile registers
parser = argument_parser.get_parser()
add_bench_options(parser)
print(json.dumps(vars(parser.parse_args(["--config", sys.argv[1]])), default=str))
"""


def test_locust_k8s_config_is_what_locust_parses(tmp_path):
    """locust.conf through Locust's own parser, with the locustfile's options registered: every key is known.
    In a child process: importing locust monkey-patches the whole interpreter for gevent."""
    import sys

    data = yaml.safe_load((LOCUST / "k8s" / "configmap.yaml").read_text())["data"]
    conf = tmp_path / "locust.conf"
    conf.write_text(data["locust.conf"].replace("/config/", f"{tmp_path}/"))
    (tmp_path / "locustfile.py").write_text(data["locustfile.py"])
    out = subprocess.run([sys.executable, "-c", PARSE_LOCUST_CONF, str(conf)], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    opts = json.loads(out.stdout.strip().splitlines()[-1])
    assert opts["host"] == "http://tfserving:8501" and opts["bench_grpc_target"] == "tfserving:8500"
    assert opts["bench_model"] == "residual_regressor" and opts["locustfile"] == str(tmp_path / "locustfile.py")
    assert "from benchmarks.load.locustfile import *" in data["locustfile.py"]
