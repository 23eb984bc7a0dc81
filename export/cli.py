"""``python -m export``: train the subclassed models on real data and export verified SavedModels.

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
    p.add_argument("--models-dir", type=Path, default=Path("artifacts/models"),
                   help="models folder (default artifacts/models)")
    p.add_argument("--out", dest="models_dir", type=Path, help=argparse.SUPPRESS)  # the name before --models-dir
    p.add_argument("--verbose", action="store_true", help="also show TensorFlow's start-up banners")
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
    p.add_argument("--models-dir", type=Path, default=Path("artifacts/models"),
                   help="models folder (default artifacts/models)")
    p.add_argument("--out", dest="models_dir", type=Path, help=argparse.SUPPRESS)  # the name before --models-dir
    p.add_argument("--verbose", action="store_true", help="also show TensorFlow's start-up banners")
    p.add_argument("--models", nargs="+", default=None, help="only these models (default: all found)")
    p.add_argument("--path", action="append", type=Path, default=[], help="verify this version directory (repeatable)")
    return p


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
    from export.verify import verify_version

    failed = 0
    for path in paths:
        if not path.is_dir():
            return _fail(f"{path} is not a directory")
        report = verify_version(path)
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
    return run_export(argv)
