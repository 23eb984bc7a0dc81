"""Real regression data that ships inside a package, split and described for training and export.

No data is fetched at run time by default: scikit-learn's diabetes set is inside the wheel. California
housing uses scikit-learn's own loader and works when its cache exists or the machine is online; it fails
with one clear line otherwise. ``synthetic`` makes a regression problem of any width for width studies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from export.catalog import DATASETS  # re-exported


class DatasetUnavailable(RuntimeError):
    """The requested data set cannot be loaded on this machine."""


@dataclass(frozen=True)
class Dataset:
    name: str
    feature_names: list[str]
    x_train: np.ndarray  # float32 [n, features], raw units
    y_train: np.ndarray  # float32 [n, 1]
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def x_all(self) -> np.ndarray:
        return np.concatenate([self.x_train, self.x_val])


def _load_raw(name: str, features: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn import datasets

    if name == "diabetes":
        bunch = datasets.load_diabetes()
        return bunch.data, bunch.target, list(bunch.feature_names)
    if name == "california":
        try:
            bunch = datasets.fetch_california_housing(download_if_missing=True)
        except Exception as exc:  # OSError/URLError/HTTPError: not cached and not online
            raise DatasetUnavailable(
                "California housing is not in scikit-learn's cache and could not be downloaded "
                f"({type(exc).__name__}: {exc}); use --dataset diabetes (ships with scikit-learn)"
            ) from exc
        return bunch.data, bunch.target, list(bunch.feature_names)
    if name == "synthetic":
        if features < 1:
            raise ValueError("--features must be at least 1 for the synthetic data set")
        x, y = datasets.make_regression(
            n_samples=2000, n_features=features, n_informative=max(1, features // 2), noise=10.0, random_state=seed
        )
        return x, y, [f"x{i}" for i in range(features)]
    raise ValueError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")


def load_dataset(name: str = "diabetes", features: int = 16, seed: int = 42, val_fraction: float = 0.2) -> Dataset:
    """Load ``name`` and split it reproducibly into train and validation parts."""
    x, y, feature_names = _load_raw(name, features, seed)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32).reshape(-1, 1)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * val_fraction)))
    val, train = order[:n_val], order[n_val:]
    return Dataset(name, feature_names, x[train], y[train], x[val], y[val])
