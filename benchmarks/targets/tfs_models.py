"""TF Serving-style SavedModels written by the project's own code, for the tests of the embedded server and
for benchmarks that need a model of that kind (`python -m benchmarks inference-cpu`).

Every model here is built by this file, from TensorFlow's public APIs, in the layouts tensorflow_model_server
reads (`<base_path>/<version>/saved_model.pb + variables/`). They play the roles of TF Serving's own test
models, whose behaviour its integration test (model_servers/tensorflow_model_server_test.py) describes:

* `write_half_plus_two_tf1`: a TF1 graph + session SavedModel, y = a*x + b, that reads serialized
  `tf.Example` protos: `serving_default` (predict: x -> y, fed at the tensor after parsing, declared [-1,1]),
  `classify_x_to_y` (classify: inputs -> scores), `regress_x_to_y` (regress: inputs -> outputs), and
  `classify_x_to_classes` (classify with string class labels and scores).
* `write_half_plus_two_tf2`: the same function as a TF2 `tf.Module`; its classify/regress signatures carry
  TF2's fixed method name `tensorflow/serving/predict` (what native TF2 exports look like).
* `write_typed_tf2`: a TF2 module with several signatures and one identity-like signature per dtype TF
  Serving carries (float, double, half, int8..int64, uint8, bool, string), plus string and int signatures.
* `write_keras_sequential`: a Keras Sequential model (Input 'x' of shape (1,), output doubled) exported
  with `tf.saved_model.save`; `write_mirrored_keras_sequential`: one built under MirroredStrategy.
* `write_multi_signature_tf2` / `write_scale_module`: TF Serving's `tf.saved_model.save` cases (two
  signatures returning constants; a function over a scalar-or-any-shape input with two variables).

`write_example_warmup` adds a TF Serving warmup file with predict, classify, regress and multi-inference
records. Version directories are named as asked (`"123"` or zero-padded `"00000123"`).
"""
from __future__ import annotations

from pathlib import Path

CLASSES = (b"negative", b"positive")


def _example_parser(tf, feature: str = "x"):
    spec = {feature: tf.io.FixedLenFeature([1], tf.float32)}
    return lambda serialized: tf.io.parse_example(serialized, spec)[feature]


def write_half_plus_two_tf1(base: Path, version_dir: str = "123", a: float = 0.5, b: float = 2.0) -> Path:
    """TF1 SavedModel (SavedModelBuilder over a graph and a session) with predict, classify and regress."""
    import tensorflow as tf

    v1 = tf.compat.v1
    export = Path(base) / version_dir
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, None, name="tf_example")  # unknown rank, as TF Serving's own
        parsed = _example_parser(tf)(serialized)
        parsed.set_shape([None, 1])  # serialized has unknown rank, so the parse result would too
        x = tf.identity(parsed, name="x")
        a_var, b_var = v1.Variable(a, name="a"), v1.Variable(b, name="b")
        y = tf.add(tf.multiply(a_var, x), b_var, name="y")
        # Two classes: the label strings per row, the scores (sigmoid of y) as [batch, 2].
        score = tf.sigmoid(y)
        scores = tf.concat([1.0 - score, score], axis=1, name="class_scores")
        labels = tf.tile(tf.constant([list(CLASSES)]), tf.stack([tf.shape(y)[0], 1]), name="class_labels")
        signatures = {
            "serving_default": v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
            "classify_x_to_y": v1.saved_model.classification_signature_def(serialized, None, y),
            "regress_x_to_y": v1.saved_model.regression_signature_def(serialized, y),
            "classify_x_to_classes": v1.saved_model.classification_signature_def(serialized, labels, scores),
        }
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export))
            builder.add_meta_graph_and_variables(sess, [v1.saved_model.tag_constants.SERVING],
                                                 signature_def_map=signatures)
            builder.save()
    return export


def write_half_plus_two_tf2(base: Path, version_dir: str = "123", a: float = 0.5, b: float = 2.0) -> Path:
    """The same model as a TF2 tf.Module saved with tf.saved_model.save (every method name is 'predict')."""
    import tensorflow as tf

    module = tf.Module()
    module.a, module.b = tf.Variable(a), tf.Variable(b)
    parse = _example_parser(tf)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(x):
        return {"y": module.a * x + module.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(inputs):
        return {"scores": module.a * parse(inputs) + module.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(inputs):
        return {"outputs": module.a * parse(inputs) + module.b}

    export = Path(base) / version_dir
    tf.saved_model.save(module, str(export), signatures={
        "serving_default": predict, "classify_x_to_y": classify, "regress_x_to_y": regress})
    return export


# Signature name -> (dtype name, what the signature returns for input v).
TYPED_SIGNATURES = {
    "echo_float": "float32", "echo_double": "float64", "echo_half": "float16", "echo_int8": "int8",
    "echo_int16": "int16", "echo_int32": "int32", "echo_int64": "int64", "echo_uint8": "uint8",
    "echo_bool": "bool", "echo_string": "string",
}


def write_typed_tf2(base: Path, version_dir: str = "1") -> Path:
    """Several signatures over every dtype: `echo_<dtype>` returns its input as `out`; `greet` (string ->
    string, its length as int32 and the input again as `name_bytes`, which REST returns as b64), `count_up` (int64 [None] -> int64 [None]), `serving_default` (two
    inputs of different dtypes: float 'x' [None,2] and int32 'k' [None] -> 'sum' = sum(x)*k)."""
    import tensorflow as tf

    module = tf.Module()
    signatures = {}
    for name, dtype in TYPED_SIGNATURES.items():
        fn = tf.function(lambda v: {"out": tf.identity(v)},
                         input_signature=[tf.TensorSpec(None, tf.as_dtype(dtype), name="v")])
        setattr(module, name, fn)
        signatures[name] = fn

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="names")])
    def greet(names):
        return {"greeting": tf.strings.join(["hello ", names]), "length": tf.strings.length(names, "UTF8_CHAR"),
                "name_bytes": tf.identity(names)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="n")])
    def count_up(n):
        return {"next": n + 1}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.int32, name="k")])
    def weighted(x, k):
        return {"sum": tf.reduce_sum(x, axis=1) * tf.cast(k, tf.float32)}

    module.greet, module.count_up, module.weighted = greet, count_up, weighted
    signatures.update(greet=greet, count_up=count_up, serving_default=weighted)
    export = Path(base) / version_dir
    tf.saved_model.save(module, str(export), signatures=signatures)
    return export


def write_keras_sequential(base: Path, version_dir: str = "123") -> Path:
    """Keras Sequential (Input 'x' (1,), Dense(1) with weight 2, no bias) saved with tf.saved_model.save."""
    import keras
    import numpy as np
    import tensorflow as tf

    model = keras.Sequential([keras.Input(shape=(1,), name="x", dtype="float32"),
                              keras.layers.Dense(1, use_bias=False, name="y")])
    model.layers[-1].set_weights([np.array([[2.0]], dtype=np.float32)])
    export = Path(base) / version_dir
    tf.saved_model.save(model, str(export))
    return export


def write_mirrored_keras_sequential(base: Path, version_dir: str = "123") -> Path:
    """A Keras Sequential built under tf.distribute.MirroredStrategy over two virtual CPUs (Dense(1), weight 1,
    no bias), saved with tf.saved_model.save. Virtual devices can only be set up before TensorFlow starts,
    so the model is written by a fresh Python process."""
    import subprocess
    import sys

    export = Path(base) / version_dir
    code = f"from benchmarks.targets.tfs_models import _save_mirrored_keras; _save_mirrored_keras({str(export)!r})"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True,
                   capture_output=True, timeout=300)
    return export


def _save_mirrored_keras(export: str) -> None:
    import keras
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    with tf.distribute.MirroredStrategy(devices=("/cpu:0", "/cpu:1")).scope():
        model = keras.Sequential([keras.Input(shape=(1,), name="x", dtype="float32"),
                                  keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")])
    tf.saved_model.save(model, export)


def write_multi_signature_tf2(base: Path, version_dir: str = "00000123") -> Path:
    """Two signatures over an any-shape float input returning constants: serving_default -> y=1,
    custom_signature_key -> y=2 (TF Serving's test of several signatures)."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": tf.constant(1.0)}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": tf.constant(2.0)}, input_signature=[tf.TensorSpec(None, tf.float32)])
    export = Path(base) / version_dir
    tf.saved_model.save(root, str(export), signatures={"serving_default": root.f, "custom_signature_key": root.g})
    return export


def write_scale_module(base: Path, version_dir: str = "00000123") -> Path:
    """y = v1 * v2 * x with v1=3, v2=2 over an input of any shape (TF Serving's tf.saved_model.save case)."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.v1, root.v2 = tf.Variable(3.0), tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    export = Path(base) / version_dir
    tf.saved_model.save(root, str(export), root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))
    return export


def write_example_warmup(version_dir: Path, classify_signature: str = "classify_x_to_y") -> Path:
    """A warmup file (assets.extra/tf_serving_warmup_requests) with one record of each kind TF Serving
    replays: predict_log (x = [[2.0]]), classify_log, regress_log and multi_inference_log over one
    tf.Example with x = 2. `classify_signature` names the classify record's signature (a predict one makes
    the warmup, and so the load, fail)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from export.contract import WARMUP_FILE
    from export.warmup import write_warmup_file

    predict, classify = prediction_log_pb2.PredictionLog(), prediction_log_pb2.PredictionLog()
    regress, multi = prediction_log_pb2.PredictionLog(), prediction_log_pb2.PredictionLog()
    predict.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
    classify.classify_log.request.model_spec.signature_name = classify_signature
    regress.regress_log.request.model_spec.signature_name = "regress_x_to_y"
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = multi.multi_inference_log.request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name = "warmup", signature
        task.method_name = f"tensorflow/serving/{method}"
    for request in (classify.classify_log.request, regress.regress_log.request, multi.multi_inference_log.request):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    path = Path(version_dir) / WARMUP_FILE
    write_warmup_file(path, [predict, classify, regress, multi])
    return path


def write_model_config(path: Path, models: dict[str, Path]) -> Path:
    """A ModelServerConfig text file serving each name from its base path."""
    entries = "".join(f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
                      for name, base in models.items())
    Path(path).write_text("model_config_list {\n" + entries + "}\n")
    return Path(path)
