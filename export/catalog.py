"""Names the command line checks before TensorFlow is imported (so mistakes are reported in a second)."""

MODEL_NAMES: tuple[str, ...] = ("residual_regressor", "reconstructing_regressor", "softplus_regressor")
DATASETS: tuple[str, ...] = ("diabetes", "california", "synthetic")
