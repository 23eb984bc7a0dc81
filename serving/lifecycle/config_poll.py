"""--model_config_file_poll_wait_seconds: re-read the model config file while serving.

As in TF Serving (Server::PollFilesystemAndReloadConfig): every period the file is read and parsed; a file
that does not parse, or names a model badly, is logged and the running config is kept; otherwise the new
model list replaces the old one whole (ModelManager.replace_sources: added models load, removed ones
unload). A file whose text has not changed since the last reload is not applied again.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from serving.errors import ServingError
from serving.lifecycle.model_manager import ModelManager, ModelSource, sources_from_config

log = logging.getLogger("serving.config_poll")


def read_sources(path: Path) -> tuple[str, list[ModelSource]]:
    """(file text, models) of a ModelServerConfig file; ValueError / ServingError say what is wrong with it."""
    from serving.cli.config_files import parse_model_server_config

    # Read twice (text for change detection, then the parse, which names the file in its errors): a write in
    # between only means the next poll sees a change and applies the same config again.
    text = path.read_text()
    return text, sources_from_config(parse_model_server_config(path))


class ConfigFilePoller:
    def __init__(self, path: Path, period_seconds: float, manager: ModelManager, applied_text: str) -> None:
        self.path = path
        self.period_seconds = period_seconds
        self.manager = manager
        self._applied_text = applied_text
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-config-poller", daemon=True)

    def start(self) -> None:
        log.info("polling %s for model config changes every %.1f s", self.path, self.period_seconds)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.period_seconds):
            try:
                self.poll_once()
            except Exception:  # the poller must outlive anything a half-written file can do
                log.exception("model config poll failed")

    def poll_once(self) -> bool:
        """Apply the file if its text changed; True when a new config was applied."""
        try:
            text, sources = read_sources(self.path)
        except (OSError, ValueError, ServingError) as exc:
            log.error("Failed to read ModelServerConfig file: %s (still serving the previous config)", exc)
            return False
        if text == self._applied_text:
            return False
        self._applied_text = text
        log.info("model config %s changed: now serving %s", self.path, ", ".join(s.name for s in sources))
        try:
            self.manager.replace_sources(sources)
        except ServingError as exc:
            log.error("model config reload from %s failed: %s", self.path, exc.message)
            return False
        return True
