"""The model zoo: SavedModels that differ where SavedModel loaders differ, for the differential tests of the
embedded server against TensorFlow's own v1 Session loader (`make zoo`, tests/serving/test_zoo.py).

Every model is built here or in tfs_models.py from TensorFlow's public APIs; none is copied. `ZOO` lists
them with the loader difference each one exercises; `fast` marks the subset the default test suite runs
(at least one model per difference). `write_zoo(base, models)` writes `<base>/<name>/<version>/` for each
(version 1, or 00000123 for half_plus_three) and a ModelServerConfig `<base>/models.config` serving them all.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.targets import tfs_models

VOCABULARY = ("alpha", "beta", "gamma", "delta", "epsilon")


@dataclass(frozen=True)
class ZooModel:
    name: str
    kind: str  # the README table's row: TF1 graph | TF2 tf.Module | Keras 3 | Keras 2 (tf-keras)
    write: Callable[[Path], Path]  # base path -> the version directory it wrote
    exercises: str  # what a loader may get wrong on it
    fast: bool = False
    # TF Serving's Session cannot run it: the status and message start every call answers there. The
    # embedded server answers these calls; the zoo checks that this stays the one difference.
    session_fails: str = ""


def _save_tf1(export: Path, build: Callable[[Any, Any], dict], main_op: Callable[[Any], Any] | None = None) -> Path:
    """Build a TF1 graph (`build(tf, v1)` returns its signature map) and save it with SavedModelBuilder."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        signatures = build(tf, v1)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export))
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                main_op=main_op(v1) if main_op else None)
            builder.save()
    return export


def _vocabulary_file(base: Path, name: str) -> Path:
    """The vocabulary a model is built from, beside its versions (a dot-directory is not a version: servers
    ignore it); the SavedModel carries its own copy in assets/."""
    path = Path(base) / ".sources" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(VOCABULARY) + "\n")
    return path


def _signature(v1: Any, inputs: dict, outputs: dict, method: str = "predict") -> Any:
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()},
        f"tensorflow/serving/{method}")


def write_tf1_unknown_shapes(base: Path) -> Path:
    """Placeholders of unknown rank (float, any shape) and of unknown dims (int32 [?, ?])."""
    def build(tf, v1):
        x = v1.placeholder(tf.float32, None, name="x")
        m = v1.placeholder(tf.int32, [None, None], name="m")
        return {"serving_default": _signature(v1, {"x": x}, {"y": 2.0 * x + 1.0}),
                "row_stats": _signature(v1, {"m": m}, {"sums": tf.reduce_sum(m, axis=1),
                                                       "maxes": tf.reduce_max(m, axis=1)})}
    return _save_tf1(Path(base) / "1", build)


def write_tf1_parse_dense(base: Path) -> Path:
    """parse_example over dense features, one required and three with defaults (float, int64, string):
    regress, classify with scores only, classify with classes + scores, predict on the same tensors."""
    def build(tf, v1):
        serialized = v1.placeholder(tf.string, [None], name="examples")
        f = v1.io.parse_example(serialized, {
            "x": v1.io.FixedLenFeature([1], tf.float32),
            "x2": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.5]),
            "k": v1.io.FixedLenFeature([2], tf.int64, default_value=[1, 1]),
            "tag": v1.io.FixedLenFeature([1], tf.string, default_value=["none"])})
        y = 3.0 * f["x"] + f["x2"]
        score = tf.sigmoid(y)
        scores = tf.concat([1.0 - score, score], axis=1)
        suffixes = tf.tile(tf.constant([["-no", "-yes"]]), [tf.shape(serialized)[0], 1])
        classes = tf.strings.join([tf.tile(f["tag"], [1, 2]), suffixes])
        return {"regress": _signature(v1, {"inputs": serialized}, {"outputs": y}, "regress"),
                "classify_scores": _signature(v1, {"inputs": serialized}, {"scores": scores}, "classify"),
                "classify": _signature(v1, {"inputs": serialized}, {"classes": classes, "scores": scores}, "classify"),
                "serving_default": _signature(v1, {"inputs": serialized}, {
                    "y": y, "k_sum": tf.reduce_sum(f["k"], axis=1), "tag": f["tag"]})}
    return _save_tf1(Path(base) / "1", build)


def write_tf1_parse_sparse(base: Path) -> Path:
    """parse_example over var-len (int64, string) and sparse (index + value) features."""
    def build(tf, v1):
        serialized = v1.placeholder(tf.string, [None], name="examples")
        f = v1.io.parse_example(serialized, {
            "ids": v1.io.VarLenFeature(tf.int64), "words": v1.io.VarLenFeature(tf.string),
            "weights": v1.io.SparseFeature("idx", "val", tf.float32, 10)})
        weighted = tf.sparse.reduce_sum(f["weights"], axis=1, keepdims=True)
        return {"regress": _signature(v1, {"inputs": serialized}, {"outputs": weighted}, "regress"),
                "serving_default": _signature(v1, {"inputs": serialized}, {
                    "id_sum": tf.sparse.reduce_sum(f["ids"], axis=1),
                    "word_count": tf.math.bincount(tf.cast(f["words"].indices[:, 0], tf.int32),
                                                   minlength=tf.shape(serialized)[0]),
                    "weights": tf.sparse.to_dense(tf.sparse.reorder(f["weights"]), validate_indices=False)})}
    return _save_tf1(Path(base) / "1", build)


def write_tf1_shared_tensors(base: Path) -> Path:
    """Several signatures over the same tensors, one of them fed at an intermediate tensor (not a placeholder)."""
    def build(tf, v1):
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        w = v1.get_variable("w", initializer=[[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]])
        hidden = tf.identity(tf.matmul(x, w) + 0.125, name="hidden")
        relu = tf.nn.relu(hidden)
        return {"serving_default": _signature(v1, {"x": x}, {"hidden": hidden, "total": tf.reduce_sum(hidden, 1)}),
                "relu": _signature(v1, {"x": x}, {"relu": relu}),
                "both": _signature(v1, {"x": x}, {"hidden": hidden, "relu": relu}),
                "from_hidden": _signature(v1, {"hidden": hidden}, {"relu": relu, "doubled": hidden * 2.0})}
    return _save_tf1(Path(base) / "1", build)


def write_tf1_reference_variables(base: Path) -> Path:
    """Reference (non-resource) variables, as TF1 graphs made them: x @ w + b."""
    def build(tf, v1):
        x = v1.placeholder(tf.float32, [None, 2], name="x")
        w = v1.Variable([[1.5, -2.0], [0.25, 4.0]], name="w", use_resource=False)
        b = v1.Variable([0.5, -0.5], name="b", use_resource=False)
        return {"serving_default": _signature(v1, {"x": x}, {"y": tf.matmul(x, w) + b})}
    return _save_tf1(Path(base) / "1", build)


def write_tf1_vocabulary_table(base: Path) -> Path:
    """A hash table initialised from a vocabulary asset file by the main op: words -> ids (predict) and a
    classify signature whose classes are vocabulary words."""
    vocab = _vocabulary_file(base, "vocabulary.txt")

    def build(tf, v1):
        words = v1.placeholder(tf.string, [None], name="words")
        serialized = v1.placeholder(tf.string, [None], name="examples")
        table = v1.lookup.StaticHashTable(v1.lookup.TextFileInitializer(
            str(vocab), tf.string, v1.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
            v1.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
        word = v1.io.parse_example(serialized, {"word": v1.io.FixedLenFeature([], tf.string)})["word"]
        scores = tf.one_hot(table.lookup(word), 3)
        classes = tf.tile(tf.constant([list(VOCABULARY[:3])]), [tf.shape(word)[0], 1])
        return {"serving_default": _signature(v1, {"words": words}, {"ids": table.lookup(words)}),
                "classify": _signature(v1, {"inputs": serialized}, {"classes": classes, "scores": scores}, "classify")}
    return _save_tf1(Path(base) / "1", build, main_op=lambda v1: v1.saved_model.main_op.main_op())


def write_tf1_strings(base: Path) -> Path:
    """String inputs and outputs, one output of raw (non-UTF-8) bytes named `..._bytes`."""
    def build(tf, v1):
        names = v1.placeholder(tf.string, [None], name="names")
        return {"serving_default": _signature(v1, {"names": names}, {
            "greeting": tf.strings.join(["hello ", names]), "upper": tf.strings.upper(names),
            "length": tf.strings.length(names), "tagged_bytes": tf.strings.join([names, tf.constant(b"\xff\x00")])})}
    return _save_tf1(Path(base) / "1", build)


def write_half_plus_three(base: Path) -> Path:
    """y = 0.5x + 3 in the shape of TF Serving's half_plus_three test model (the one its REST API page walks
    through), as old TensorFlow wrote it: the tf.Example placeholder's shape attr is empty and the GraphDef's
    producer version is below 21, which means "unknown shape" to a Session but a scalar to a loader that
    believes the attr (TF2's tf.saved_model.load then fails to build ParseExample: "Shape must be rank 1 but
    is rank 0"). Version dir 00000123; signatures `tensorflow/serving/regress` and `.../classify` (x -> y),
    `regress_x2_to_y3` fed at the parsed x2 (default 0), `serving_default` predict x -> y fed at the parsed x."""
    def build(tf, v1):
        a, b, c = v1.Variable(0.5, name="a"), v1.Variable(3.0, name="b"), v1.Variable(4.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = tf.raw_ops.ParseExample(
            serialized=serialized, names=[], sparse_keys=[], dense_keys=[tf.constant("x"), tf.constant("x2")],
            dense_defaults=[tf.constant([], tf.float32), tf.constant([0.0])], sparse_types=[],
            dense_shapes=[[1], [1]])
        x, x2 = (tf.identity(t, name=n) for t, n in zip(parsed.dense_values, ("x", "x2")))
        y, y3 = tf.identity(a * x + b, name="y"), tf.identity(a * x2 + c, name="y3")
        return {"tensorflow/serving/regress": _signature(v1, {"inputs": serialized}, {"outputs": y}, "regress"),
                "tensorflow/serving/classify": _signature(v1, {"inputs": serialized}, {"scores": y}, "classify"),
                "regress_x2_to_y3": _signature(v1, {"inputs": x2}, {"outputs": y3}, "regress"),
                "serving_default": _signature(v1, {"x": x}, {"y": y})}
    export = _save_tf1(Path(base) / "00000123", build)
    _as_legacy_producer(export, "tf_example")
    return export


def _as_legacy_producer(export: Path, placeholder: str) -> None:
    """Rewrite saved_model.pb as a pre-version-21 producer wrote it: an empty Placeholder shape attr and no
    shape in the signatures' TensorInfo for that placeholder."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = export / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    meta = saved.meta_graphs[0]
    meta.graph_def.versions.producer = 20
    for node in meta.graph_def.node:
        if node.name == placeholder:
            node.attr["shape"].shape.Clear()
            node.attr.pop("_output_shapes", None)
    for signature in meta.signature_def.values():
        for info in signature.inputs.values():
            if info.name == f"{placeholder}:0":
                info.ClearField("tensor_shape")
    pb.write_bytes(saved.SerializeToString())


def write_tf2_scalars(base: Path) -> Path:
    """Scalar inputs (float, int64) with bool, float and `_bytes` outputs, a scalar-with-batch signature, and
    three named inputs of different ranks (string [?], int32 [?,5], int32 [?,2,2])."""
    import tensorflow as tf

    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32, name="x"), tf.TensorSpec([], tf.int64, name="n")])
    def scalars(x, n):
        return {"scaled": x * tf.cast(n, tf.float32), "positive": x > 0.0,
                "label_bytes": tf.strings.join([tf.strings.as_string(n), tf.constant(b"\xfe")])}

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32, name="bias"),
                                  tf.TensorSpec([None, 2], tf.float32, name="rows")])
    def shifted(bias, rows):
        return {"shifted": rows + bias}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="tag"),
                                  tf.TensorSpec([None, 5], tf.int32, name="signal"),
                                  tf.TensorSpec([None, 2, 2], tf.int32, name="sensor")])
    def tagged_signals(tag, signal, sensor):  # the row-format example of TF Serving's REST API page
        return {"tag_length": tf.strings.length(tag), "signal_sum": tf.reduce_sum(signal, axis=1),
                "sensor_sum": tf.reduce_sum(sensor, axis=[1, 2])}

    module.scalars, module.shifted, module.tagged_signals = scalars, shifted, tagged_signals
    export = Path(base) / "1"
    tf.saved_model.save(module, str(export), signatures={"serving_default": scalars, "shifted": shifted,
                                                         "tagged_signals": tagged_signals})
    return export


def write_tf2_image(base: Path) -> Path:
    """One 224x224x3 float32 image input: a strided convolution, pooling and a softmax over 5 classes."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(7)
    module = tf.Module()
    module.kernel = tf.Variable(rng.standard_normal((4, 4, 3, 8)).astype(np.float32) * 0.1)
    module.dense = tf.Variable(rng.standard_normal((8, 5)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32, name="image")])
    def classify_image(image):
        features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(image, module.kernel, 4, "VALID")), axis=[1, 2])
        probabilities = tf.nn.softmax(tf.matmul(features, module.dense))
        return {"probabilities": probabilities, "label": tf.argmax(probabilities, axis=1)}

    module.classify_image = classify_image
    export = Path(base) / "1"
    tf.saved_model.save(module, str(export), signatures={"serving_default": classify_image})
    return export


def write_keras3_export(base: Path) -> Path:
    """A Keras 3 functional model written by model.export() (its default tensor names)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(4,), name="features")
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model(np.zeros((1, 4), np.float32))
    export = Path(base) / "1"
    model.export(str(export), format="tf_saved_model", verbose=False)
    return export


def write_keras_subclassed(base: Path) -> Path:
    """A subclassed Keras 3 model with a custom layer (a trainable weight, a non-linear call), exported."""
    import keras
    import numpy as np

    @keras.saving.register_keras_serializable(package="zoo")
    class Wave(keras.layers.Layer):
        def build(self, input_shape):
            self.amplitude = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="amplitude")

        def call(self, x):
            return self.amplitude * keras.ops.sin(x) + x

    class WaveModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.wave, self.head = Wave(), keras.layers.Dense(2, kernel_initializer="glorot_uniform")

        def call(self, x):
            return self.head(self.wave(x))

    keras.utils.set_random_seed(5)
    model = WaveModel()
    model(np.zeros((1, 3), np.float32))
    export = Path(base) / "1"
    model.export(str(export), format="tf_saved_model", verbose=False)
    return export


def write_keras_text(base: Path) -> Path:
    """TextVectorization and StringLookup whose vocabularies are files (saved as SavedModel assets)."""
    import keras
    import numpy as np

    vocab = _vocabulary_file(base, "words.txt")
    text = keras.Input(shape=(), dtype="string", name="text")
    tag = keras.Input(shape=(1,), dtype="string", name="tag")
    tokens = keras.layers.TextVectorization(vocabulary=str(vocab), output_sequence_length=4)(text)
    tag_id = keras.layers.StringLookup(vocabulary=str(vocab))(tag)
    model = keras.Model({"text": text, "tag": tag}, {"tokens": tokens, "tag_id": tag_id})
    model({"text": np.array(["alpha beta"]), "tag": np.array([["gamma"]])})
    export = Path(base) / "1"
    model.export(str(export), format="tf_saved_model", verbose=False)
    return export


def write_keras2_legacy(base: Path) -> Path:
    """A Keras 2 (tf-keras) functional model saved as a SavedModel. Keras 2 is chosen at import time by
    TF_USE_LEGACY_KERAS=1, so it is built by a fresh Python process."""
    export = Path(base) / "1"
    code = f"from benchmarks.targets.zoo import _save_keras2; _save_keras2({str(export)!r})"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True,
                   capture_output=True, timeout=300, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    return export


def _save_keras2(export: str) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(11)
    inputs = tf.keras.Input(shape=(3,), name="measurements")
    hidden = tf.keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, name="value")(hidden))
    tf.saved_model.save(model, export)


def _in_version_1(write: Callable[..., Path]) -> Callable[[Path], Path]:
    return lambda base: write(base, "1")


ZOO: tuple[ZooModel, ...] = (
    ZooModel("tf1_half_plus_two", "TF1 graph", _in_version_1(tfs_models.write_half_plus_two_tf1),
             "unknown-rank tf.Example placeholder; predict fed after parsing; classify and regress"),
    ZooModel("half_plus_three", "TF1 graph", write_half_plus_three,
             "TF2 loader refuses it (ParseExample rank); fed at parsed tensors; version dir 00000123", fast=True),
    ZooModel("tf1_unknown_shapes", "TF1 graph", write_tf1_unknown_shapes, "unknown rank, unknown dims", fast=True),
    ZooModel("tf1_parse_dense", "TF1 graph", write_tf1_parse_dense,
             "dense features with and without defaults; classify scores only / classes + scores"),
    ZooModel("tf1_parse_sparse", "TF1 graph", write_tf1_parse_sparse, "var-len and sparse features", fast=True),
    ZooModel("tf1_shared_tensors", "TF1 graph", write_tf1_shared_tensors,
             "signatures sharing tensors, one fed at an intermediate tensor"),
    ZooModel("tf1_reference_variables", "TF1 graph", write_tf1_reference_variables, "reference variables", fast=True),
    ZooModel("tf1_vocabulary_table", "TF1 graph", write_tf1_vocabulary_table,
             "hash table from a vocabulary asset through the main op", fast=True),
    ZooModel("tf1_strings", "TF1 graph", write_tf1_strings, "string inputs and outputs, `_bytes` output", fast=True),
    ZooModel("tf2_half_plus_two", "TF2 tf.Module", _in_version_1(tfs_models.write_half_plus_two_tf2),
             "classify/regress-shaped signatures with the predict method name; tf.Example parsing inside a function",
             fast=True),
    ZooModel("tf2_dtypes", "TF2 tf.Module", _in_version_1(tfs_models.write_typed_tf2),
             "every dtype; several signatures; unknown-rank inputs", fast=True),
    ZooModel("tf2_scalars", "TF2 tf.Module", write_tf2_scalars,
             "scalar inputs, `_bytes` and bool outputs; several named inputs of different ranks", fast=True),
    ZooModel("tf2_image", "TF2 tf.Module", write_tf2_image, "224x224x3 float32 input"),
    ZooModel("tf2_multi_signature", "TF2 tf.Module", _in_version_1(tfs_models.write_multi_signature_tf2),
             "signatures returning constants over an any-shape input"),
    ZooModel("tf2_scale", "TF2 tf.Module", _in_version_1(tfs_models.write_scale_module),
             "one concrete function as the signature, two variables"),
    ZooModel("keras3_sequential", "Keras 3", _in_version_1(tfs_models.write_keras_sequential),
             "tf.saved_model.save of a Keras 3 model: its variables are not restored into a Session",
             session_fails="FAILED_PRECONDITION: Could not find variable"),
    ZooModel("keras3_export", "Keras 3", write_keras3_export, "model.export() default tensor names", fast=True),
    ZooModel("keras3_subclassed", "Keras 3", write_keras_subclassed, "subclassed model with a custom layer"),
    ZooModel("keras3_text", "Keras 3", write_keras_text, "TextVectorization / StringLookup vocabulary assets"),
    ZooModel("keras2_legacy", "Keras 2 (tf-keras)", write_keras2_legacy, "Keras 2 SavedModel (TF_USE_LEGACY_KERAS=1)"),
)


def zoo_models(names: list[str] | None = None, fast_only: bool = False) -> list[ZooModel]:
    known = {m.name: m for m in ZOO}
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown zoo model(s): {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[n] for n in names] if names else list(ZOO)
    return [m for m in chosen if m.fast or not fast_only]


def write_zoo(base: Path, models: list[ZooModel]) -> Path:
    """Write each model to `<base>/<name>/1/` and a ModelServerConfig serving them all; returns the config."""
    base = Path(base).resolve()
    for model in models:
        model.write(base / model.name)
    return tfs_models.write_model_config(base / "models.config", {m.name: base / m.name for m in models})
