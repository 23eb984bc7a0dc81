"""Check an exported version the way a server will use it, in a process that did not train it.

Running in a fresh process matters: it proves the SavedModel carries everything it needs (custom
gradients, variables, signatures) and does not silently lean on Python objects of the exporting process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

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


def _saved_model_cli() -> str:
    # The console script sits beside the interpreter in a venv; fall back to PATH.
    beside = Path(sys.executable).with_name("saved_model_cli")
    return str(beside) if beside.exists() else (shutil.which("saved_model_cli") or "saved_model_cli")


def verify_version(version_path: Path) -> VerifyReport:
    import tensorflow as tf

    from export.data import load_dataset
    from export.contract import WARMUP_FILE, load_keras_model, read_manifest
    from export.signatures import INPUT_NAME
    from export.warmup import read_warmup_file

    version_path = Path(version_path)
    report = VerifyReport(str(version_path))
    manifest = read_manifest(version_path)
    n_features = int(manifest["n_features"])
    loaded = tf.saved_model.load(str(version_path))
    keras_model = load_keras_model(version_path)

    def signature_shapes() -> str:
        for sig_name, expected in manifest["signatures"].items():
            fn = loaded.signatures[sig_name]
            _, in_specs = fn.structured_input_signature
            if sorted(in_specs) != sorted(expected["inputs"]):
                raise AssertionError(f"{sig_name}: inputs {sorted(in_specs)} != {sorted(expected['inputs'])}")
            for name, spec in in_specs.items():
                want = expected["inputs"][name]
                if spec.dtype.name != want["dtype"] or list(spec.shape.as_list()) != want["shape"]:
                    raise AssertionError(f"{sig_name}.{name}: {spec} != {want}")
            outs = fn.structured_outputs
            if sorted(outs) != sorted(expected["outputs"]):
                raise AssertionError(f"{sig_name}: outputs {sorted(outs)} != {sorted(expected['outputs'])}")
            for name, spec in outs.items():
                want = expected["outputs"][name]
                if spec.dtype.name != want["dtype"] or list(spec.shape.as_list()) != want["shape"]:
                    raise AssertionError(f"{sig_name}.{name}: {spec} != {want}")
        return ", ".join(sorted(manifest["signatures"]))

    report.record("signatures", signature_shapes)

    data_args = manifest["dataset_args"]
    data = load_dataset(data_args["name"], features=data_args["features"], seed=data_args["seed"])
    real = data.x_all
    rng = np.random.default_rng(0)
    mean, std = real.mean(axis=0), real.std(axis=0) + 1e-12
    serve = loaded.signatures["serving_default"]

    def batches() -> list[tuple[str, np.ndarray]]:
        out = []
        for n in BATCH_SIZES:
            out.append((f"random[{n}]", (mean + 3 * std * rng.standard_normal((n, n_features))).astype(np.float32)))
            out.append((f"real[{n}]", real[rng.integers(0, len(real), n)].astype(np.float32)))
        return out

    cases = batches()

    def matches_keras() -> str:
        worst = 0.0
        for label, x in cases:
            got = serve(**{INPUT_NAME: tf.constant(x)})["predictions"].numpy()
            want = np.asarray(keras_model(x, training=False))
            worst = max(worst, assert_close(got, want, label))
        if "reconstruct" in manifest["signatures"]:
            for label, x in cases:
                got = loaded.signatures["reconstruct"](**{INPUT_NAME: tf.constant(x)})
                want = keras_model.reconstruct(x)
                for key in ("reconstruction", "reconstruction_error"):
                    worst = max(worst, assert_close(got[key].numpy(), want[key], f"reconstruct {key} {label}"))
        return f"{len(cases)} batches, worst relative gap {worst:.2e}"

    report.record(f"SavedModel == eager Keras within {TOLERANCE:g}", matches_keras)

    def batch_equals_rows() -> str:
        x = real[:ROW_BY_ROW_ROWS].astype(np.float32)
        batched = serve(**{INPUT_NAME: tf.constant(x)})["predictions"].numpy()
        rows = np.concatenate([serve(**{INPUT_NAME: tf.constant(x[i : i + 1])})["predictions"].numpy() for i in range(len(x))])
        return f"{len(x)} rows, relative gap {assert_close(batched, rows, 'batch vs rows'):.2e}"

    report.record("batch == row by row", batch_equals_rows)

    def cli_show() -> str:
        proc = subprocess.run(
            [_saved_model_cli(), "show", "--all", "--dir", str(version_path)],
            capture_output=True, text=True, timeout=300,
        )
        if proc.returncode != 0 or "serving_default" not in proc.stdout:
            raise AssertionError(f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return "saved_model_cli show --all succeeded"

    report.record("saved_model_cli", cli_show)

    if manifest["model"] == "softplus_regressor" or manifest.get("custom_gradients"):
        def extreme_gradients() -> str:
            x = tf.constant(np.array([[200.0] * n_features, [-200.0] * n_features], dtype=np.float32))
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = serve(**{INPUT_NAME: x})["predictions"]
            grad = tape.gradient(y, x)
            if grad is None:
                raise AssertionError("no gradient through the restored signature (custom gradient not saved?)")
            if not (np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(grad.numpy()))):
                raise AssertionError(f"non-finite output or gradient at ±200: y={y.numpy().ravel()}")
            return "outputs and gradients finite at ±200"

        report.record("custom gradient at ±200", extreme_gradients)

    def warmup() -> str:
        records = read_warmup_file(version_path / WARMUP_FILE)
        if not records:
            raise AssertionError("no warmup records")
        for log in records:
            request = log.predict_log.request
            fn = loaded.signatures[request.model_spec.signature_name or "serving_default"]
            fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        return f"{len(records)} records parse and run"

    report.record("warmup file", warmup)
    return report


def verify_in_fresh_process(paths: list[Path]) -> None:
    """Run ``python -m export verify --path ...`` in a new interpreter; raise if any check fails."""
    if not paths:
        return
    cmd = [sys.executable, "-m", "export", "verify"]
    for p in paths:
        cmd += ["--path", str(p)]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise VerificationError(f"verification failed for {', '.join(map(str, paths))} (see the report above)")
