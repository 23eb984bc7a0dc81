"""Which versions of which models are served: discovery, version policy, labels, loading, warmup, unloading.

* Models and their base paths come only from the ModelServerConfig (or the --model-name/--model-base-path
  pair): a request's model name is looked up in that table and never turned into a path.
* Every `poll_seconds` each base path is listed; the policy (latest N / all / specific) picks the versions
  to serve from the version directories found, named and parsed as TF Serving does (export/contract.py:
  `00000123` is version 123 and is loaded from `00000123`; `0` is a version too). New ones are loaded
  (warmup replayed) *before* old ones are unloaded, so a model never goes dark during a rollout.
* A version that fails to load (half-written, corrupt, wrong signatures) is tried again up to
  --max_num_load_retries times, --load_retry_interval_micros apart (default: no retry), then reported in
  GetModelStatus with its error and left out of the policy, so the previous version keeps serving. After
  that it is retried only when the files in its directory change (a copy that was still in progress has
  finished), never in a hot loop.
* The model list itself can be replaced while serving (config file polling, HandleReloadConfigRequest):
  added models load, removed ones unload (their status then reads END), and version labels follow TF
  Serving's rule (a label must point at an AVAILABLE version unless --allow_version_labels_for_unavailable_models).
  A new directory must also look the same on two consecutive polls before it is loaded, so a version being
  copied in is not read half-way.
* In-flight requests hold a reference on the version they use (`acquire`); an unloaded version is closed
  only when its last request has finished, so swapping versions never fails a request.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc

from export.contract import VersionDir, version_dirs
from serving.errors import ServingError, failed_precondition, invalid_argument, not_found, unavailable

log = logging.getLogger("serving.models")

# tensorflow.serving.ModelVersionStatus.State (apis/get_model_status.proto)
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionStatus:
    version: int
    state: str
    error: ServingError | None = None
    path: Path | None = None  # the version's directory as found on disk (its name may be zero-padded)


@dataclass(frozen=True)
class ModelSource:
    """One model of the config: name, base path, version policy, labels."""

    name: str
    base_path: Path
    policy: str = "latest"  # latest | all | specific
    num_versions: int = 1
    specific: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)

    def aspired(self, candidates: list[int]) -> list[int]:
        if self.policy == "all":
            return sorted(candidates)
        if self.policy == "specific":
            return sorted(v for v in candidates if v in self.specific)
        return sorted(candidates)[-self.num_versions:]


def sources_from_config(config: Any) -> list[ModelSource]:
    """ModelSources from a tensorflow.serving.ModelServerConfig proto (already checked by tfserving_config)."""
    out = []
    for entry in config.model_config_list.config:
        base = Path(entry.base_path)
        if not base.is_absolute():
            raise invalid_argument(f"model '{entry.name}': base_path {entry.base_path!r} must be absolute "
                                   "(use models.local.config, which export writes with absolute paths)")
        policy = entry.model_version_policy
        which = policy.WhichOneof("policy_choice") or "latest"
        out.append(ModelSource(
            name=entry.name,
            base_path=base,
            policy=which,
            num_versions=policy.latest.num_versions if which == "latest" and policy.latest.num_versions else 1,
            specific=tuple(policy.specific.versions) if which == "specific" else (),
            labels=dict(entry.version_labels),
        ))
    return out


class ServableVersion:
    """A loaded version: its runner plus a reference count of the requests using it."""

    def __init__(self, model: str, version: int, runner: Any, extras: dict[str, Any] | None = None) -> None:
        self.model = model
        self.version = version
        self.runner = runner
        self.extras = extras or {}  # per-version helpers made by the loader (e.g. batch queues)
        self._refs = 0
        self._retired = False
        self._lock = threading.Lock()
        self._on_close: list[Callable[[], None]] = []

    def on_close(self, fn: Callable[[], None]) -> None:
        self._on_close.append(fn)

    def _acquire(self) -> None:
        with self._lock:
            self._refs += 1

    def _release(self) -> None:
        with self._lock:
            self._refs -= 1
            close = self._retired and self._refs == 0
        if close:
            self._close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            close = self._refs == 0
        if close:
            self._close()

    def _close(self) -> None:
        for fn in self._on_close:
            with contextlib.suppress(Exception):
                fn()
        with contextlib.suppress(Exception):
            self.runner.close()
        log.info("%s version %d unloaded", self.model, self.version)


Loader = Callable[[str, int, Path], ServableVersion]


class _Model:
    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.available: dict[int, ServableVersion] = {}
        self.status: dict[int, VersionStatus] = {}
        self.failed_fingerprint: dict[int, tuple] = {}
        self.seen_fingerprint: dict[int, tuple] = {}


def _fingerprint(path: Path) -> tuple:
    """Names, sizes and mtimes of every file under a version dir: changes whenever a copy makes progress."""
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.stat(p)
                entries.append((os.path.relpath(p, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


@dataclass(frozen=True)
class LoadRetries:
    """--max_num_load_retries / --load_retry_interval_micros: a failed load is tried again this many times."""

    max_retries: int = 0
    interval_seconds: float = 0.0


_explained: set[str] = set()  # the requests whose not-found detail is already in the log


def _servable_not_found(what: str, detail: str) -> ServingError:
    """TF Serving's exact words to the client; what this server knows besides goes to its log (once per
    request kind, so a client retrying a wrong name cannot flood it)."""
    if what not in _explained and len(_explained) < 1000:
        _explained.add(what)
        log.warning("Servable not found for request: %s: %s", what, detail)
    return not_found(f"Servable not found for request: {what}")


class ModelManager:
    def __init__(self, sources: list[ModelSource], loader: Loader, poll_seconds: float = 1.0,
                 retries: LoadRetries = LoadRetries(), allow_unavailable_labels: bool = True) -> None:
        self._loader = loader
        self._poll_seconds = poll_seconds
        self._retries = retries
        self._allow_unavailable_labels = allow_unavailable_labels
        self._lock = threading.RLock()  # guards the tables; loads happen outside it
        self._sync_lock = threading.Lock()  # one sync at a time (poller vs config reload)
        self._models: dict[str, _Model] = {s.name: _Model(s) for s in sources}
        self._removed: dict[str, _Model] = {}  # dropped from the config: their status reads END, as in TF Serving
        self._stop = threading.Event()
        self._initial_done = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_model_removed: Callable[[str], None] = lambda name: None  # per-model state kept elsewhere

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load what the policy wants now (blocking, with progress logs), then poll in the background."""
        try:
            self.sync(initial=True)
        finally:
            self._initial_done.set()
        if self._poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for model in self._models.values():
                for sv in model.available.values():
                    sv.retire()
                model.available.clear()

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.sync()
            except Exception:  # the poller must survive anything the filesystem throws at it
                log.exception("model poll failed")

    def has_model(self, name: str) -> bool:
        return name in self._models  # dict membership is atomic; no lock needed on the request path

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def models_waiting(self) -> list[str]:
        """Configured models with no version served and none refused: nothing found under the base path yet, or a
        version still settling (TF Serving would still be waiting for them before opening its ports)."""
        with self._lock:
            return sorted(name for name, m in self._models.items() if not m.available and not m.failed_fingerprint)

    def all_models_available(self) -> bool:
        with self._lock:
            return bool(self._models) and all(m.available for m in self._models.values())

    # ------------------------------------------------------------------ config reload
    def replace_sources(self, sources: list[ModelSource]) -> None:
        """Install a new config whole (as TF Serving does): new models load, dropped ones unload.

        Then the labels are checked (:meth:`label_problems`); if one is refused, every model keeps the labels
        it had and FAILED_PRECONDITION is raised, while the models added or removed stay so (TF Serving's
        ServerCore::ReloadConfig applies the models before it updates the labels).
        """
        with self._sync_lock:
            with self._lock:
                old = self._models
                previous_labels = {name: dict(m.source.labels) for name, m in old.items()}
                self._models = {}
                for s in sources:
                    m = old.pop(s.name, None) or self._removed.pop(s.name, None) or _Model(s)
                    m.source = s
                    self._models[s.name] = m
                dropped = list(old.values())
            for m in dropped:
                self._retire_model(m)
            self._sync_all(initial=True)
            problems = self.label_problems(previous_labels)
            if problems:
                with self._lock:
                    for name, m in self._models.items():
                        m.source = dataclasses.replace(m.source, labels=previous_labels.get(name, {}))
                raise failed_precondition("; ".join(problems))

    def _retire_model(self, model: _Model) -> None:
        with self._lock:
            retiring = list(model.available.values())
            model.available.clear()
            for v, st in model.status.items():
                if st.state != END:
                    model.status[v] = VersionStatus(v, END)
            self._removed[model.source.name] = model
        for sv in retiring:
            sv.retire()
        self.on_model_removed(model.source.name)
        log.info("model %s removed from the config: unloaded", model.source.name)

    def label_problems(self, assigned: dict[str, dict[str, int]] | None = None) -> list[str]:
        """TF Serving's rule (ServerCore::UpdateModelVersionLabelMap): a label must point at an AVAILABLE
        version; with allow_unavailable_labels, a label not `assigned` before may point at any version."""
        assigned = assigned or {}
        problems = []
        with self._lock:
            for name, model in sorted(self._models.items()):
                for label, version in sorted(model.source.labels.items()):
                    if version in model.available:
                        continue
                    if self._allow_unavailable_labels and label not in assigned.get(name, {}):
                        continue
                    problems.append(f"Request to assign label to version {version} of model {name}, which is not "
                                    "currently available for inference")
        return problems

    # ------------------------------------------------------------------ the sync step
    def sync(self, initial: bool = False) -> None:
        with self._sync_lock:
            self._sync_all(initial)

    def _sync_all(self, initial: bool) -> None:
        with self._lock:
            models = list(self._models.values())
        for model in models:
            self._sync_model(model, initial)

    def _sync_model(self, model: _Model, initial: bool) -> None:
        src = model.source
        found = {d.version: d for d in version_dirs(src.base_path)}
        present = list(found)
        if not present and initial:
            if Path(src.base_path).is_dir():
                log.warning("model %s: no version directories under %s yet", src.name, src.base_path)
            else:  # TF Serving: "Could not find base path <path> for servable <name>"
                log.error("model %s: base path %s does not exist (or is not a directory); health stays NOT_SERVING "
                          "until a version appears there", src.name, src.base_path)
        fingerprints = {v: _fingerprint(d.path) for v, d in found.items()}
        candidates = []
        for v in present:
            fp = fingerprints[v]
            if model.failed_fingerprint.get(v) == fp:
                continue  # failed before and nothing changed since: keep it out of the policy
            candidates.append(v)
        aspired = src.aspired(candidates)
        to_load = [v for v in sorted(aspired, reverse=True) if v not in model.available]
        for v in to_load:
            if not initial and model.seen_fingerprint.get(v) != fingerprints[v]:
                # New or still changing: wait until it looks the same on two consecutive polls.
                model.seen_fingerprint[v] = fingerprints[v]
                continue
            self._load(model, found[v], fingerprints[v])
        for v in present:
            model.seen_fingerprint[v] = fingerprints[v]
        # Unload only once everything the policy wants (that could load) is available.
        with self._lock:
            keep = set(aspired) & set(model.available) if any(v in model.available for v in aspired) else set(model.available)
            retire = [sv for v, sv in model.available.items() if v not in keep]
            for sv in retire:
                del model.available[sv.version]
                model.status[sv.version] = dataclasses.replace(model.status[sv.version], state=END)
        for sv in retire:
            log.info("%s version %d no longer wanted by the version policy: unloading once idle", src.name, sv.version)
            sv.retire()
        for v in list(model.failed_fingerprint):
            if v not in present:
                model.failed_fingerprint.pop(v, None)
        self._check_labels(model)

    def _load(self, model: _Model, found: VersionDir, fingerprint: tuple) -> None:
        name, version, path = model.source.name, found.version, found.path
        with self._lock:
            model.status[version] = VersionStatus(version, LOADING, path=path)
        log.info("loading %s version %d from %s ...", name, version, path)
        started = time.monotonic()
        try:
            sv = self._load_with_retries(name, version, path)
        except ServingError as exc:
            self._refuse(model, version, fingerprint, exc)
            return
        except Exception as exc:  # TF raises many types for broken SavedModels; all become a clear status
            self._refuse(model, version, fingerprint,
                         ServingError(grpc.StatusCode.UNKNOWN, f"failed to load {path}: {type(exc).__name__}: "
                                      f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"))
            return
        with self._lock:
            model.available[version] = sv
            model.status[version] = VersionStatus(version, AVAILABLE, path=path)
            model.failed_fingerprint.pop(version, None)
        log.info("%s version %d AVAILABLE (loaded in %.1f s)", name, version, time.monotonic() - started)

    def _load_with_retries(self, name: str, version: int, path: Path) -> ServableVersion:
        """The loader, tried 1 + max_retries times (the version stays LOADING meanwhile); stop() cuts it short."""
        attempts = 1 + self._retries.max_retries
        attempt = 1
        while True:
            try:
                return self._loader(name, version, path)
            except Exception as exc:
                if attempt >= attempts or self._stop.is_set():
                    raise
                log.warning("%s version %d failed to load (attempt %d of %d): %s: %s; retrying in %.1f s", name,
                            version, attempt, attempts, type(exc).__name__, str(exc).strip()[:300],
                            self._retries.interval_seconds)
                self._stop.wait(self._retries.interval_seconds)
                attempt += 1

    def _refuse(self, model: _Model, version: int, fingerprint: tuple, exc: ServingError) -> None:
        with self._lock:
            model.status[version] = dataclasses.replace(model.status[version], state=END, error=exc)
            model.failed_fingerprint[version] = fingerprint
        serving = sorted(model.available)
        log.error("%s version %d refused: %s (still serving versions %s)", model.source.name, version,
                  exc.message, serving or "none")

    def _check_labels(self, model: _Model) -> None:
        for label, v in model.source.labels.items():
            if v not in model.available and model.status.get(v, VersionStatus(v, START)).state != LOADING:
                log.debug("%s: label %r points at version %d, which is not loaded", model.source.name, label, v)

    # ------------------------------------------------------------------ request side
    def _resolve(self, name: str, version: int | None, label: str | None) -> ServableVersion:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                what = f"Latest({name})" if version is None and not label else \
                    f"Specific({name}, {version})" if version is not None else f"Label({name}, {label})"
                raise _servable_not_found(what, f"model '{name}' is not in the model config")
            if version is not None and label:
                raise invalid_argument(f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
            if label:
                if label not in model.source.labels:
                    log.info("model %s has labels: %s", name, ", ".join(sorted(model.source.labels)) or "none")
                    raise not_found(f"Unrecognized servable version label: {label}")
                version = model.source.labels[label]
                sv = model.available.get(version)
                if sv is None:
                    raise _servable_not_found(f"Specific({name}, {version})",
                                              f"label '{label}' points at version {version}, which is not loaded")
                return sv
            if version is not None:
                sv = model.available.get(version)
                if sv is None:
                    if self._loading(model, version):
                        raise unavailable(f"version {version} of model '{name}' is still loading; retry")
                    raise _servable_not_found(f"Specific({name}, {version})",
                                              f"loaded versions: {sorted(model.available) or 'none'}")
                return sv
            if not model.available:
                # A configured model that is still loading is a retryable condition (UNAVAILABLE), not "no such
                # model" (NOT_FOUND), which clients and load balancers treat as final.
                if self._loading(model):
                    raise unavailable(f"model '{name}' is loading: no version is AVAILABLE yet; retry")
                raise _servable_not_found(f"Latest({name})", "no version is available (none found under its "
                                          "base path, or all failed to load)")
            return model.available[max(model.available)]

    def _loading(self, model: _Model, version: int | None = None) -> bool:
        if not self._initial_done.is_set():
            return True
        states = [model.status.get(version)] if version is not None else list(model.status.values())
        return any(st is not None and st.state in (START, LOADING) for st in states)

    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Iterator[ServableVersion]:
        """Hold a version for the duration of a request (it will not be closed under us)."""
        with self._lock:
            sv = self._resolve(name, version, label)
            sv._acquire()
        try:
            yield sv
        finally:
            sv._release()

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[VersionStatus]:
        with self._lock:
            model = self._models.get(name) or self._removed.get(name)
            if model is None:
                raise not_found(f"Could not find any versions of model {name}")
            if version is not None and label:
                raise invalid_argument(f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
            if label:
                if label not in model.source.labels:
                    raise not_found(f"Unrecognized servable version label: {label}")
                version = model.source.labels[label]
            if version is not None:
                st = model.status.get(version)
                if st is None:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [st]
            if not model.status:
                raise not_found(f"Could not find any versions of model {name}")
            return [model.status[v] for v in sorted(model.status, reverse=True)]
