"""Models a user brings (``python -m export keras`` / ``savedmodel``), built small for the tests.

* FUNCTIONAL: a functional model taking a dict of two named inputs of different dtypes (float32 features, an
  int32 token through an Embedding), samples in an .npz;
* SUBCLASSED: a subclassed model whose custom layer lives in a package written outside the project
  (``byo_layers``, on PYTHONPATH only for the processes that need it), a second signature ``half`` from the
  model's ``halve`` method, samples as a TF Serving REST body;
* IMPORTED: a SavedModel written by ``keras.Model.export``, brought in as it is.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import REPO_ROOT

FUNCTIONAL, SUBCLASSED, IMPORTED = "own_functional", "own_subclassed", "own_imported"
PACKAGE = "byo_layers"

PACKAGE_SOURCE = '''
import keras


@keras.saving.register_keras_serializable(package="byo_layers")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="byo_layers")
class ScaledDense(keras.Model):
    def __init__(self, units=2, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.scale = Scale(3.0)
        self.dense = keras.layers.Dense(units)

    def call(self, x):
        return self.dense(self.scale(x))

    def halve(self, x):
        return self(x, training=False) / 2.0

    def get_config(self):
        return {**super().get_config(), "units": self.units}
'''


@dataclass(frozen=True)
class OwnModels:
    out: Path  # the models root all three were exported into
    package_root: Path  # holds the byo_layers package
    keras_files: dict[str, Path]  # model name -> the .keras file its answers come from
    samples: dict[str, dict[str, np.ndarray]]  # model name -> {input name: rows}

    @property
    def env(self) -> dict[str, str]:
        """PYTHONPATH for a child process that must import the user's package."""
        return {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(self.package_root)])}


def write_package(root: Path) -> Path:
    (root / PACKAGE).mkdir(parents=True, exist_ok=True)
    (root / PACKAGE / "__init__.py").write_text("")
    (root / PACKAGE / "layers.py").write_text(PACKAGE_SOURCE)
    return root


def import_package(root: Path):
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import importlib

    return importlib.import_module(f"{PACKAGE}.layers")


def functional_model():
    import keras

    keras.utils.set_random_seed(1)
    features = keras.Input((3,), name="features")
    token = keras.Input((1,), dtype="int32", name="token")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(100, 2)(token))
    joined = keras.layers.Concatenate()([features, embedded])
    return keras.Model({"features": features, "token": token}, keras.layers.Dense(2)(joined))


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT,
            timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def describe(root: Path) -> OwnModels:
    """Where build_and_export(root) puts everything, and the samples it uses (fixed seed): also what another
    test worker reads back from a tree built once for the run (tests/shared_fixture.py)."""
    rng = np.random.default_rng(3)
    samples = {FUNCTIONAL: {"features": rng.standard_normal((5, 3)).astype(np.float32),
                            "token": rng.integers(0, 100, (5, 1)).astype(np.int32)},
               SUBCLASSED: {"inputs": rng.standard_normal((3, 4)).astype(np.float32)},
               IMPORTED: {"x": rng.standard_normal((2, 5)).astype(np.float32)}}
    return OwnModels(root / "models", root / "site", {name: root / f"{name}.keras" for name in samples}, samples)


def build_and_export(root: Path) -> OwnModels:
    """Build the three models under ``root`` and export them into ``root / 'models'`` through the CLI."""
    import keras

    models = describe(root)
    package_root = write_package(models.package_root)
    layers = import_package(package_root)
    out, samples, files = models.out, models.samples, models.keras_files
    functional_model().save(files[FUNCTIONAL])
    np.savez(root / "functional.npz", **samples[FUNCTIONAL])
    subclassed = layers.ScaledDense(2)
    subclassed(np.zeros((1, 4), np.float32))
    subclassed.save(files[SUBCLASSED])
    (root / "subclassed.json").write_text(json.dumps({"instances": samples[SUBCLASSED]["inputs"].tolist()}))
    x = keras.Input((5,), name="x")
    plain = keras.Model(x, keras.layers.Dense(3)(x))
    plain.save(files[IMPORTED])
    plain.export(str(root / "saved_model"), verbose=False)
    for args in (["keras", str(files[FUNCTIONAL]), "--name", FUNCTIONAL, "--sample-data", str(root / "functional.npz")],
                 ["keras", str(files[SUBCLASSED]), "--name", SUBCLASSED, "--import", f"{PACKAGE}.layers",
                  "--signature", "half=halve", "--sample-data", str(root / "subclassed.json")],
                 ["savedmodel", str(root / "saved_model"), "--name", IMPORTED]):
        proc = run_cli("export", *args, "--models-dir", str(out), env=models.env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return models


def keras_answers(models: OwnModels, name: str, signature: str = "serving_default") -> dict[str, np.ndarray]:
    """What the user's Keras model answers on its samples, computed in this process."""
    import keras

    import_package(models.package_root)
    model = keras.models.load_model(models.keras_files[name], compile=False)
    x = models.samples[name]
    arg = x if name == FUNCTIONAL else next(iter(x.values()))
    y = model.halve(arg) if signature == "half" else model(arg, training=False)
    return {"output_0": np.asarray(y)}
