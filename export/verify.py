"""Check an exported version the way a server will use it, in a process that did not train it.

Running in a fresh process matters: it proves the SavedModel carries everything it needs (custom
gradients, variables, signatures) and does not silently lean on Python objects of the exporting process.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from export.contract import DEFAULT_SIGNATURE, keras_path, read_manifest, warmup_path
from export.endpoints import Endpoint, expected_signatures, version_endpoints

BATCH_SIZES: tuple[int, ...] = (1, 7, 64, 1024)
# Agreement is judged norm-wise: max|got - want| <= TOLERANCE * max|want| over a batch. Element-wise
# relative error is meaningless for outputs near zero: the models de-standardise (y * std + mean), so an
# output close to 0 is a cancellation whose last bits differ between graph and eager kernels.
TOLERANCE = 1e-5
ROW_BY_ROW_ROWS = 64  # row-by-row is one signature call per row: 64 rows keep verify quick


class VerificationError(RuntimeError):
    pass


@dataclass
class VerifyReport:
    path: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def record(self, name: str, fn: Callable[[], str]) -> None:
        try:
            detail = fn()
            self.checks.append((name, True, detail))
        except Exception as exc:  # a failed check is a result to report, not a crash
            self.checks.append((name, False, f"{type(exc).__name__}: {exc}"))

    def lines(self) -> list[str]:
        return [f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}" for name, ok, detail in self.checks]


def assert_close(got: np.ndarray, want: np.ndarray, label: str) -> float:
    """Raise if the norm-wise relative gap exceeds TOLERANCE; return the gap."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{label}: shape {got.shape} != {want.shape}")
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"{label}: non-finite values")
    gap = float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))
    if gap > TOLERANCE:
        raise AssertionError(f"{label}: relative gap {gap:.2e} > {TOLERANCE:g}")
    return gap


@dataclass
class _Subject:
    """One exported version, opened once for every check: the SavedModel, its Keras twin, its endpoints."""

    path: Path
    manifest: dict
    loaded: Any  # the SavedModel restored through TensorFlow's loader
    keras_model: Any  # the same weights rebuilt from the Keras file (None: an imported SavedModel has none)
    endpoints: tuple[Endpoint, ...]
    cases: list[tuple[str, dict[str, np.ndarray]]]  # (label, {input name: batch})
    rows: dict[str, np.ndarray]  # a batch whose rows are also served one by one

    @property
    def n_features(self) -> int:
        return int(self.manifest.get("n_features", 0))

    @property
    def default(self) -> Endpoint:
        return next(ep for ep in self.endpoints if ep.signature == DEFAULT_SIGNATURE)

    def serve(self, endpoint: Endpoint, inputs: dict[str, np.ndarray]) -> dict:
        """Call the restored signature of ``endpoint`` on one batch."""
        import tensorflow as tf

        return self.loaded.signatures[endpoint.signature](**{n: tf.constant(inputs[n]) for n in endpoint.input_names})

    def predictions(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.serve(self.default, inputs).items()}


def _dataset_cases(manifest: dict) -> tuple[list[tuple[str, dict[str, np.ndarray]]], dict[str, np.ndarray]]:
    """The project models: random and real batches of every BATCH_SIZES size, and real rows."""
    from export.data import load_dataset

    data_args = manifest["dataset_args"]
    real = load_dataset(data_args["name"], features=data_args["features"], seed=data_args["seed"]).x_all
    rng = np.random.default_rng(0)
    mean, std = real.mean(axis=0), real.std(axis=0) + 1e-12
    n_features = int(manifest["n_features"])
    cases = []
    for n in BATCH_SIZES:
        random = mean + 3 * std * rng.standard_normal((n, n_features))
        cases.append((f"random[{n}]", {"inputs": random.astype(np.float32)}))
        cases.append((f"real[{n}]", {"inputs": real[rng.integers(0, len(real), n)].astype(np.float32)}))
    return cases, {"inputs": real[:ROW_BY_ROW_ROWS].astype(np.float32)}


def _warmup_cases(version_path: Path) -> tuple[list[tuple[str, dict[str, np.ndarray]]], dict[str, np.ndarray]]:
    """A model of the user's: the batches its warmup records carry (its samples, or seeded inputs)."""
    from export.warmup import read_warmup_file, warmup_inputs

    cases = []
    for record in read_warmup_file(warmup_path(version_path)):
        signature, inputs = warmup_inputs(record)
        if signature in ("", DEFAULT_SIGNATURE):
            cases.append((f"warmup[{len(next(iter(inputs.values())))}]", inputs))
    # no predict warmup for serving_default (an imported classify/regress signature): nothing to compare rows on
    return cases, max((c for _, c in cases), key=lambda c: len(next(iter(c.values()))), default={})


def _open(version_path: Path) -> _Subject:
    import tensorflow as tf

    from export.keras_source import load_keras_file

    manifest = read_manifest(version_path)
    keras_model = load_keras_file(keras_path(version_path)) if manifest.get("keras_file") else None
    cases, rows = _dataset_cases(manifest) if "dataset_args" in manifest else _warmup_cases(version_path)
    return _Subject(version_path, manifest, tf.saved_model.load(str(version_path)), keras_model,
                    version_endpoints(manifest, keras_model), cases, rows)


def _check_tensors(where: str, got: dict, want: dict) -> None:
    """Names, dtypes and shapes of restored TensorSpecs against the manifest's (TensorInfo as dicts)."""
    if sorted(got) != sorted(want):
        raise AssertionError(f"{where}: {sorted(got)} != {sorted(want)}")
    for name, spec in got.items():
        if spec.dtype.name != want[name]["dtype"] or list(spec.shape.as_list()) != want[name]["shape"]:
            raise AssertionError(f"{where}.{name}: {spec} != {want[name]}")


def check_signatures(s: _Subject) -> str:
    """Manifest == endpoints (== the class declaration), and every restored signature has the declared tensors
    and method name."""
    declared = {k: asdict(v) for k, v in expected_signatures(s.endpoints, s.n_features).items()}
    if s.manifest["signatures"] != declared:
        raise AssertionError(f"manifest signatures {s.manifest['signatures']} != declared {declared}")
    by_class = getattr(s.keras_model, "ENDPOINTS", None)
    if by_class and tuple(by_class) != s.endpoints:
        raise AssertionError(f"manifest endpoints differ from those {type(s.keras_model).__name__} declares")
    from tensorflow.python.tools.saved_model_utils import get_meta_graph_def  # what saved_model_cli reads

    signature_defs = get_meta_graph_def(str(s.path), "serve").signature_def
    method_names = {k: d.method_name for k, d in signature_defs.items() if not k.startswith("__")}
    for ep in s.endpoints:
        fn = s.loaded.signatures[ep.signature]
        _check_tensors(f"{ep.signature} inputs", fn.structured_input_signature[1], declared[ep.signature]["inputs"])
        _check_tensors(f"{ep.signature} outputs", fn.structured_outputs, declared[ep.signature]["outputs"])
        if method_names.get(ep.signature) != ep.method_name:
            raise AssertionError(f"{ep.signature}: method name {method_names.get(ep.signature)!r} != {ep.method_name!r}")
    extra = sorted(set(method_names) - set(declared))
    if extra:
        raise AssertionError(f"signatures {extra} are not among the exported endpoints")
    return ", ".join(sorted(declared))


def check_matches_keras(s: _Subject) -> str:
    """Every signature against the model method it was traced from, on every batch."""
    worst = 0.0
    for ep in s.endpoints:
        eager = ep.bind(s.keras_model)
        for label, inputs in s.cases:
            got, want = s.serve(ep, inputs), eager(inputs)
            for key in ep.output_names:
                worst = max(worst, assert_close(got[key].numpy(), np.asarray(want[key]), f"{ep.signature} {key} {label}"))
    return f"{len(s.endpoints)} signature(s) x {len(s.cases)} batches, worst relative gap {worst:.2e}"


def check_batch_equals_rows(s: _Subject) -> str:
    n = len(next(iter(s.rows.values())))
    rows = [s.predictions({k: v[i : i + 1] for k, v in s.rows.items()}) for i in range(n)]
    batch, worst = s.predictions(s.rows), 0.0
    for key, value in batch.items():
        worst = max(worst, assert_close(value, np.concatenate([r[key] for r in rows]), f"batch vs rows {key}"))
    return f"{n} rows, relative gap {worst:.2e}"


def check_saved_model_cli(s: _Subject) -> str:
    """``saved_model_cli show --all --dir <version>``, run as the function that command calls, in this process. A
    child per version imported TensorFlow again (4-5 CPU s, more than every other check together) to run the same
    code; it proved no more, as that code lists a SavedModel it cannot load as "N/A" and succeeds."""
    from tensorflow.python.tools import saved_model_cli

    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        saved_model_cli._show_all(str(s.path))  # `show --all` is this call on --dir
    if DEFAULT_SIGNATURE not in shown.getvalue():
        raise AssertionError(f"no {DEFAULT_SIGNATURE} in what it shows: {shown.getvalue()[-500:]}")
    return "saved_model_cli show --all (its code, in the verify process) lists serving_default"


def check_extreme_gradients(s: _Subject) -> str:
    import tensorflow as tf

    x = tf.constant(np.array([[200.0] * s.n_features, [-200.0] * s.n_features], dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = s.loaded.signatures[DEFAULT_SIGNATURE](**{s.default.input_names[0]: x})[s.default.output_names[0]]
    grad = tape.gradient(y, x)
    if grad is None:
        raise AssertionError("no gradient through the restored signature (custom gradient not saved?)")
    if not (np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(grad.numpy()))):
        raise AssertionError(f"non-finite output or gradient at ±200: y={y.numpy().ravel()}")
    return "outputs and gradients finite at ±200"


def check_warmup(s: _Subject) -> str:
    import tensorflow as tf

    from export.warmup import read_warmup_file

    records = read_warmup_file(warmup_path(s.path))
    if not records:
        raise AssertionError("no warmup records")
    for log in records:
        request = log.predict_log.request
        fn = s.loaded.signatures[request.model_spec.signature_name or DEFAULT_SIGNATURE]
        fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
    return f"{len(records)} records parse and run"


def verify_version(version_path: Path) -> VerifyReport:
    """Run every check on one version directory; a failed check is recorded, the others still run."""
    subject = _open(Path(version_path))
    report = VerifyReport(str(subject.path))
    report.record("signatures", lambda: check_signatures(subject))
    if subject.keras_model is not None:
        report.record(f"SavedModel == eager Keras within {TOLERANCE:g}", lambda: check_matches_keras(subject))
    if subject.rows:
        report.record("batch == row by row", lambda: check_batch_equals_rows(subject))
    report.record("saved_model_cli", lambda: check_saved_model_cli(subject))
    if subject.manifest["model"] == "softplus_regressor" or subject.manifest.get("custom_gradients"):
        report.record("custom gradient at ±200", lambda: check_extreme_gradients(subject))
    report.record("warmup file", lambda: check_warmup(subject))
    return report


def verify_in_fresh_process(paths: list[Path], imports: Sequence[str] = ()) -> None:
    """Run ``python -m export verify [--import M ...] --path ...`` in a new interpreter; raise if any check fails.

    The child runs from the project root; the caller's directory goes on its PYTHONPATH so that a module the
    caller could import from there (``--import``) imports in the child too."""
    if not paths:
        return
    cmd = [sys.executable, "-m", "export", "verify"]
    for module in imports:
        cmd += ["--import", module]
    for p in paths:
        cmd += ["--path", str(Path(p).resolve())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, env=env)
    if proc.returncode != 0:
        raise VerificationError(f"verification failed for {', '.join(map(str, paths))} (see the report above)")
