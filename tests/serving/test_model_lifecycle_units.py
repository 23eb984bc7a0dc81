"""ModelManager's config reload (models added/removed), TF Serving's version-label rule, load retries, and the
config-file poller, with a fake loader (no TensorFlow): fast and exact."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc
import pytest

from serving.lifecycle.config_poll import ConfigFilePoller
from serving.errors import ServingError
from serving.lifecycle.model_manager import LoadRetries, ModelManager, ModelSource, ServableVersion


class _Runner:
    closed = False

    def close(self) -> None:
        self.closed = True


def _versions(base: Path, *versions: int) -> Path:
    for v in versions:
        (base / str(v)).mkdir(parents=True, exist_ok=True)
        (base / str(v) / "saved_model.pb").write_bytes(b"ok")
    return base


def _loader(name: str, version: int, path: Path) -> ServableVersion:
    return ServableVersion(name, version, _Runner())


def _states(manager: ModelManager, name: str) -> dict[int, str]:
    return {s.version: s.state for s in manager.status(name)}


def test_replace_sources_loads_added_and_unloads_removed_models(tmp_path: Path) -> None:
    a, b = _versions(tmp_path / "a", 1), _versions(tmp_path / "b", 3)
    manager = ModelManager([ModelSource("a", a)], _loader, poll_seconds=0)
    manager.start()
    with manager.acquire("a") as held:
        manager.replace_sources([ModelSource("b", b)])
        assert not held.runner.closed  # in flight: closed only when the request ends
    assert held.runner.closed
    assert manager.model_names() == ["b"] and _states(manager, "b") == {3: "AVAILABLE"}
    assert _states(manager, "a") == {1: "END"}  # a removed model reads END, as in TF Serving
    with pytest.raises(ServingError) as err:
        with manager.acquire("a"):
            pass
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "Servable not found" in err.value.message
    manager.replace_sources([ModelSource("a", a), ModelSource("b", b)])  # added back
    with manager.acquire("a") as sv:
        assert sv.version == 1
    manager.stop()


def test_labels_must_point_at_available_versions_unless_allowed(tmp_path: Path) -> None:
    base = _versions(tmp_path / "m", 1, 2)
    strict = ModelManager([ModelSource("m", base, labels={"stable": 7})], _loader, poll_seconds=0,
                          allow_unavailable_labels=False)
    strict.start()
    assert strict.label_problems() == ["Request to assign label to version 7 of model m, which is not currently "
                                       "available for inference"]
    allowed = ModelManager([ModelSource("m", base, labels={"stable": 7})], _loader, poll_seconds=0,
                           allow_unavailable_labels=True)
    allowed.start()
    assert allowed.label_problems() == []
    # A reload may not move a label already in use to a version that is not available, even when allowed;
    # the models change, the labels stay as they were.
    allowed.replace_sources([ModelSource("m", base, labels={"stable": 2})])
    with allowed.acquire("m", label="stable") as sv:
        assert sv.version == 2
    with pytest.raises(ServingError) as err:
        allowed.replace_sources([ModelSource("m", base, labels={"stable": 9})])
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "version 9 of model m" in err.value.message
    with allowed.acquire("m", label="stable") as sv:
        assert sv.version == 2
    strict.stop()
    allowed.stop()


def test_failed_load_is_retried_then_refused(tmp_path: Path) -> None:
    base = _versions(tmp_path / "m", 1)
    calls: list[float] = []

    def flaky(name: str, version: int, path: Path) -> ServableVersion:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise OSError("storage not ready")
        return _loader(name, version, path)

    manager = ModelManager([ModelSource("m", base)], flaky, poll_seconds=0, retries=LoadRetries(2, 0.05))
    manager.start()
    assert len(calls) == 3 and calls[2] - calls[0] >= 0.1  # two retries, 50 ms apart
    assert _states(manager, "m") == {1: "AVAILABLE"}
    manager.stop()

    calls.clear()
    once = ModelManager([ModelSource("m", base)], flaky, poll_seconds=0, retries=LoadRetries(1, 0.0))
    once.start()  # fails twice: one retry is not enough
    st = once.status("m")[0]
    assert len(calls) == 2 and st.state == "END" and "storage not ready" in st.error.message
    once.stop()


def test_stop_cuts_a_retry_wait_short(tmp_path: Path) -> None:
    base = _versions(tmp_path / "m", 1)

    def broken(name: str, version: int, path: Path) -> ServableVersion:
        raise OSError("broken")

    manager = ModelManager([ModelSource("m", base)], broken, poll_seconds=0, retries=LoadRetries(5, 60.0))
    loading = threading.Thread(target=manager.start)
    loading.start()
    time.sleep(0.2)
    started = time.monotonic()
    manager.stop()
    loading.join(10)
    assert not loading.is_alive() and time.monotonic() - started < 5


def _config_text(*models: tuple[str, Path]) -> str:
    entries = "".join(f'config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow" }}\n' for n, p in models)
    return f"model_config_list {{\n{entries}}}\n"


def test_config_file_poller_applies_changes_and_survives_bad_files(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    a, b = _versions(tmp_path / "a", 1), _versions(tmp_path / "b", 1)
    config = tmp_path / "models.config"
    config.write_text(_config_text(("a", a)))
    manager = ModelManager([ModelSource("a", a)], _loader, poll_seconds=0)
    manager.start()
    poller = ConfigFilePoller(config, 60, manager, config.read_text())
    assert poller.poll_once() is False  # unchanged
    config.write_text(_config_text(("a", a), ("b", b)))
    assert poller.poll_once() is True and manager.model_names() == ["a", "b"]
    config.write_text("model_config_list { config { name: ")  # half-written: keep serving what we have
    assert poller.poll_once() is False and manager.model_names() == ["a", "b"]
    assert "Failed to read ModelServerConfig file" in caplog.text
    config.write_text(_config_text(("b", b)))
    assert poller.poll_once() is True and manager.model_names() == ["b"]
    manager.stop()


class _GatedApp:
    """Stands in for RestApp: counts how many requests are being handled at once; each waits for the gate."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.gate = threading.Event()

    def handle(self, method: str, path: str, body: bytes, clock=None) -> tuple[int, str, bytes]:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        self.gate.wait(10)
        with self.lock:
            self.active -= 1
        return 200, "application/json", b"{}"


@pytest.mark.parametrize("num_threads, expected_peak", [(2, 2), (None, 6)])
def test_rest_api_num_threads_caps_requests_handled_at_once(num_threads, expected_peak) -> None:
    import requests

    from serving.api.rest_api import RestServer

    app = _GatedApp()
    server = RestServer(app, "127.0.0.1", 0, 1 << 20, num_threads)  # type: ignore[arg-type]
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/v1/models/m"
        clients = [threading.Thread(target=requests.get, args=(url,), kwargs={"timeout": 20}) for _ in range(6)]
        for t in clients:
            t.start()
        deadline = time.monotonic() + 10
        while app.active < expected_peak and time.monotonic() < deadline:  # the cap's worth arrive: event, not time
            time.sleep(0.005)
        time.sleep(0.3)  # a request past the cap would be handled now; a busy machine only hides it, never invents it
        app.gate.set()
        for t in clients:
            t.join(20)
        assert app.peak == expected_peak
    finally:
        server.stop_accepting()
        server.close()


class _FailingApp:
    """An app whose handle raises for one path: the HTTP layer's last line of defence answers, not a reset."""

    def handle(self, method: str, path: str, body: bytes, clock=None) -> tuple[int, str, bytes]:
        if path.endswith("boom"):
            raise RuntimeError("handler bug")
        return 200, "application/json", b"{}"


def test_an_exception_in_the_app_is_a_500_reply_and_the_server_keeps_serving(caplog) -> None:
    import requests

    from serving.api.rest_api import RestServer

    server = RestServer(_FailingApp(), "127.0.0.1", 0, 1 << 20)  # type: ignore[arg-type]
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}/v1/models"
        reply = requests.get(f"{base}/boom", timeout=10)
        assert reply.status_code == 500 and reply.json() == {"error": "internal error: RuntimeError: handler bug"}
        assert reply.headers["Connection"] == "close"
        assert requests.get(f"{base}/m", timeout=10).status_code == 200
        # a client that resets its connection is logged at debug, not printed as a server error; anything else is
        caplog.set_level(logging.DEBUG, logger="serving.rest")
        for exc in (ConnectionResetError(104, "Connection reset by peer"), RuntimeError("parser bug")):
            try:
                raise exc
            except Exception:
                server.httpd.handle_error(None, ("127.0.0.1", 1))
        levels = [(r.levelname, type(r.exc_info[1]).__name__ if r.exc_info else "") for r in caplog.records
                  if r.name == "serving.rest" and "('127.0.0.1', 1)" in r.getMessage()]
        assert levels == [("DEBUG", ""), ("ERROR", "RuntimeError")]
    finally:
        server.stop_accepting()
        server.close()
