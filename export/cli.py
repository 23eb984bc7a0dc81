"""``python -m export``: train the subclassed models on real data and export verified SavedModels; ``python -m
export keras`` / ``savedmodel`` bring a model of the user's own through the same path.

Kept free of TensorFlow imports at module level so that mistakes in the command line are reported in
a second, not after TensorFlow has loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.data import DATASETS
from export.catalog import MODEL_NAMES

EPILOG = """\
examples:
  python -m export                                   # all three models, diabetes data, next version
  python -m export --models residual_regressor       # one model
  python -m export --dataset synthetic --features 64 # a wider input for width studies
  python -m export --version 7                       # an explicit version (must not exist)
  python -m export verify                            # re-check every exported version in a fresh process
  python -m export keras my.keras --name mine --import mypkg.layers   # a Keras model of your own
  python -m export savedmodel path/to/saved_model --name theirs       # an existing SavedModel

layout written (TF Serving's base_path/version layout):
  <models-dir>/<model>/<version>/saved_model.pb, variables/      the SavedModel (signatures serving_default[, reconstruct])
  <models-dir>/<model>/<version>/assets.extra/                   warmup requests, manifest, model.keras (eager path)
  <models-dir>/models.config, <models-dir>/models.local.config          TF Serving model config (container / local paths)
"""


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Train the Keras subclassed models, trace them into versioned SavedModels for TF Serving, "
        "and verify each version in a fresh process before publishing it atomically.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), metavar="MODEL",
                   help=f"models to export (default: all of {', '.join(MODEL_NAMES)})")
    p.add_argument("--dataset", default="diabetes", metavar="NAME",
                   help=f"training data: {', '.join(DATASETS)} (default: diabetes, ships with scikit-learn)")
    p.add_argument("--features", type=int, default=16, help="number of features for --dataset synthetic (default 16)")
    _add_models_dir(p)
    p.add_argument("--version", type=int, default=None, help="version to write (default: highest existing + 1)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs (default 40)")
    p.add_argument("--seed", type=int, default=42, help="random seed for split, init and shuffling (default 42)")
    p.add_argument("--no-verify", action="store_true", help="skip the fresh-process verification (not recommended)")
    return p


def _verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export verify",
        description="Load each exported version through TensorFlow's loader in this fresh process and check "
        "signatures, SavedModel-vs-eager-Keras agreement (1e-5), batch-vs-row agreement, saved_model_cli, "
        "custom gradients at ±200 and the warmup file.",
    )
    _add_models_dir(p)
    p.add_argument("--models", nargs="+", default=None, help="only these models (default: all found)")
    p.add_argument("--path", action="append", type=Path, default=[], help="verify this version directory (repeatable)")
    _add_import(p)
    return p


def _add_models_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", type=Path, default=Path("artifacts/models"),
                   help="models folder (default artifacts/models)")
    p.add_argument("--out", dest="models_dir", type=Path, help=argparse.SUPPRESS)  # the name before --models-dir
    p.add_argument("--verbose", action="store_true", help="also show TensorFlow's start-up banners")


def _add_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first: the module that registers your custom Keras classes (repeatable)")


def _signature(text: str) -> tuple[str, str]:
    name, sep, method = text.partition("=")
    if not (sep and name and method):
        raise argparse.ArgumentTypeError(f"expected NAME=METHOD, got {text!r}")
    return name, method


def _own_model_parser(kind: str) -> argparse.ArgumentParser:
    what = "a Keras model file (.keras)" if kind == "keras" else "an existing SavedModel directory"
    p = argparse.ArgumentParser(
        prog=f"python -m export {kind}",
        description=f"Bring {what} into the models layout: the next version (or --version), signatures with a None "
        "batch dimension, warmup records for batch sizes 1 and 8, a manifest of where it came from, verified in a "
        "fresh process in staging and renamed into place; models.config / models.local.config list every model "
        "under --models-dir. Nothing is left in --models-dir after a failure.",
    )
    p.add_argument("path", type=Path, help="the .keras file" if kind == "keras" else "the SavedModel directory")
    p.add_argument("--name", required=True, help="model name (its directory under --models-dir, the name clients call)")
    _add_models_dir(p)
    p.add_argument("--version", type=int, default=None, help="version to write (default: highest existing + 1)")
    if kind == "keras":
        _add_import(p)
        p.add_argument("--signature", dest="signatures", action="append", default=[], type=_signature,
                       metavar="NAME=METHOD", help="one more signature NAME computed by the model's METHOD on the "
                       "same inputs (repeatable); serving_default always calls the model")
        p.add_argument("--sample-data", type=Path, default=None, metavar="FILE",
                       help=".npz (one array per input), .npy (one input) or a TF Serving REST predict body (.json): "
                       "warmup and verification inputs (default: seeded inputs from the input specs)")
    return p


def run_own_model(kind: str, argv: list[str]) -> int:
    from export.own_model import OwnModelConfig, export_keras, import_saved_model
    from export.pipeline import ExportError
    from export.verify import VerificationError

    args = _own_model_parser(kind).parse_args(argv)
    config = OwnModelConfig(args.path, args.name, args.models_dir, args.version, tuple(getattr(args, "imports", ())),
                            tuple(getattr(args, "signatures", ())), getattr(args, "sample_data", None))
    try:
        results = (export_keras if kind == "keras" else import_saved_model)(config)
    except (ExportError, VerificationError) as exc:
        return _fail(str(exc))
    for r in results:
        print(f"published {r.model} v{r.version} -> {r.path}")
    print(f"model configs: {args.models_dir / 'models.config'} (container), {args.models_dir / 'models.local.config'} (local)")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_verify(argv: list[str]) -> int:
    args = _verify_parser().parse_args(argv)
    paths: list[Path] = list(args.path)
    if not paths:
        from export.contract import model_names, version_dirs

        if not args.models_dir.is_dir():
            return _fail(f"{args.models_dir} does not exist; run `make export` first")
        for name in args.models or model_names(args.models_dir):
            found = version_dirs(args.models_dir / name)
            if not found:
                return _fail(f"no exported versions of {name!r} under {args.models_dir}")
            paths += [v.path for v in found]
    from export.keras_source import import_modules
    from export.pipeline import ExportError
    from export.verify import verify_version

    try:
        import_modules(args.imports)
    except ExportError as exc:
        return _fail(str(exc))
    failed = 0
    for path in paths:
        if not path.is_dir():
            return _fail(f"{path} is not a directory")
        try:
            report = verify_version(path)
        except ExportError as exc:  # e.g. a custom class the child cannot import: say which
            print(f"FAIL {path}\n  {exc}")
            failed += 1
            continue
        print(f"{'ok  ' if report.ok else 'FAIL'} {path}")
        print("\n".join(report.lines()))
        failed += not report.ok
    print(f"verified {len(paths)} version(s): {len(paths) - failed} ok, {failed} failed")
    return 1 if failed else 0


def run_export(argv: list[str]) -> int:
    from export.pipeline import ExportConfig, ExportError, export_models, validate

    args = _export_parser().parse_args(argv)
    config = ExportConfig(
        models=tuple(args.models), dataset=args.dataset, features=args.features, out_dir=args.models_dir,
        version=args.version, epochs=args.epochs, seed=args.seed, verify=not args.no_verify,
    )
    try:
        validate(config)
        results = export_models(config)
    except ExportError as exc:
        return _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - a single clear line; details were printed above
        from export.data import DatasetUnavailable
        from export.verify import VerificationError

        if isinstance(exc, (DatasetUnavailable, VerificationError)):
            return _fail(str(exc))
        raise
    for r in results:
        print(f"published {r.model} v{r.version} -> {r.path}")
    print(f"model configs: {args.models_dir / 'models.config'} (container), {args.models_dir / 'models.local.config'} (local)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify"]:
        return run_verify(argv[1:])
    if argv[:1] in (["keras"], ["savedmodel"]):
        return run_own_model(argv[0], argv[1:])
    return run_export(argv)
