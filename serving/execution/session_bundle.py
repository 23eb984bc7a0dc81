"""A SavedModel loaded the way tensorflow_model_server loads it: TensorFlow's v1 loader into a Session
(tf.compat.v1.saved_model.loader.load: restore the variables, run the main op, point the asset tensors at
the version's assets/), signatures run by feeding and fetching their TensorInfo tensor names.

Two users:
* the oracle (serving/cli/oracle.py, `python -m serving check-model`, the model zoo tests): `SessionBundle.run`
  is `Session.run(fetches, feed_dict)`, the reference answer;
* the server's fallback (`SessionRunner`, chosen by runners.load_runner): a TF1 SavedModel whose signatures
  TF2's tf.saved_model.load cannot build is served this way instead of being refused. Example: old graphs
  whose tf.Example placeholder has an empty shape attr (GraphDef producer < 21, "unknown shape" to a
  Session) make the TF2 loader build ParseExample over a scalar and fail with "Shape must be rank 1 but is
  rank 0". The runner calls the Session through one callable per signature made at load from
  CallableOptions (what `Session.make_callable` builds, minus its Python feed-shape check), so like TF
  Serving's C++ Session::Run it takes any shape the graph accepts. What a call costs on each path:
  docs/performance.md ("TF1 signatures: TF2 function or v1 Session").
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from serving.execution.runners import INIT_OP_SIGNATURE, SERVE_TAG, Runner, as_output

log = logging.getLogger("serving.execution.session_bundle")


def session_config() -> Any:
    """The server's thread settings (serving.cli.server.tf_thread_counts) as a Session's ConfigProto, with one
    change: one inter-op thread becomes the caller's thread (inter_op_parallelism_threads = -1, "all operations
    are performed in caller's thread"). The graph's ops still run one at a time, as on a one-thread pool, but
    without handing every call to that pool thread and waking the caller when it is done; the hand-off, most of
    all to a pool thread gone idle since the last call, cost more than the batch-1 model itself
    (docs/performance.md, "Graph execution: v1 Session or TF2 function")."""
    import tensorflow as tf

    threads = tf.config.threading
    inter = threads.get_inter_op_parallelism_threads()
    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads.get_intra_op_parallelism_threads(),
                                    inter_op_parallelism_threads=-1 if inter == 1 else inter)


class SessionBundle:
    """One version in its own Graph and Session; `signature_defs` as the loader returned them."""

    def __init__(self, version_dir: Path) -> None:
        import tensorflow as tf

        v1 = tf.compat.v1
        self.graph = tf.Graph()
        self.session = v1.Session(graph=self.graph, config=session_config())
        try:
            with self.graph.as_default():
                meta = v1.saved_model.loader.load(self.session, [SERVE_TAG], str(version_dir))
        except Exception:
            self.session.close()
            raise
        self.signature_defs = {k: v for k, v in meta.signature_def.items() if k != INIT_OP_SIGNATURE}

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Session.run keyed by the signature's tensor names (Python checks feed shapes against the graph)."""
        sig = self.signature_defs[signature]
        names = sorted(sig.outputs)
        values = self.session.run([sig.outputs[k].name for k in names],
                                  {sig.inputs[k].name: v for k, v in inputs.items()})
        return dict(zip(names, (as_output(v) for v in values)))

    def callable(self, signature: str) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """A made-once callable for one signature: no per-call graph lookups and, through CallableOptions (what
        make_callable uses underneath, minus its Python feed-shape check), any shape the graph accepts."""
        from tensorflow.core.protobuf import config_pb2

        sig = self.signature_defs[signature]
        in_names, out_names = sorted(sig.inputs), sorted(sig.outputs)
        feeds, fetches = [sig.inputs[k].name for k in in_names], [sig.outputs[k].name for k in out_names]
        with self.graph.as_default():
            make = getattr(self.session, "_make_callable_from_options", None)
            call = make(config_pb2.CallableOptions(feed=feeds, fetch=fetches)) if make is not None else \
                self.session.make_callable(fetches, feeds)  # another TF version: the shape-checking public call

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(out_names, (as_output(v) for v in call(*(inputs[k] for k in in_names)))))
        return run

    def close(self) -> None:
        self.session.close()


class SessionRunner(Runner):
    """graph/xla mode for a TF1 SavedModel the TF2 loader refused: every signature through the Session."""

    mode = "graph"

    def __init__(self, version_dir: Path, label: str) -> None:
        super().__init__(version_dir, label)
        self.bundle = SessionBundle(self.version_dir)
        for name in self.signatures:
            self._calls[name] = self.bundle.callable(name)

    def close(self) -> None:
        super().close()
        self.bundle.close()


def load_tf1_fallback(version_dir: Path, label: str, refusal: Exception) -> Any:
    """SessionRunner for a TF1 version whose TF2 load failed with `refusal`; re-raises it for TF2 models."""
    from serving.execution.runners import is_tf1_meta_graph, read_serve_meta_graph

    if not is_tf1_meta_graph(read_serve_meta_graph(Path(version_dir))):
        raise refusal
    runner = SessionRunner(version_dir, label)
    log.warning("%s: TF2's loader refused this TF1 SavedModel (%s: %s); serving it through a v1 Session, as "
                "TF Serving does", label, type(refusal).__name__, str(refusal).splitlines()[0][:300])
    return runner
