"""Processing step "evaluate": score the trained model on the test split.

Writes ``evaluation.json`` in the SageMaker ModelMetrics ``regression_metrics`` shape and a
predicted-vs-actual plot. Imports only what the SageMaker scikit-learn container has, and the
data contract shipped with it.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

try:
    import contract  # shipped with the job
except ImportError:
    from model_build.scripts import contract

MODEL_FILE = "model.joblib"
SCHEMA_FILE = contract.SCHEMA_FILE
BOOTSTRAP_ROUNDS = 1000
BOOTSTRAP_SEED = 0


class EvaluationError(Exception):
    """A missing or unreadable input; the message names it."""


def load_model(archive: Path) -> tuple[object, dict]:
    """The model and schema that train.py packed into model.tar.gz. Members are read from the
    archive, never extracted to disk, so no member can write outside the job's directories."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            files = {os.path.normpath(m.name): m for m in tar.getmembers() if m.isfile()}
            payloads = {}
            for name in (MODEL_FILE, SCHEMA_FILE):
                if name not in files:
                    raise EvaluationError(f"{archive.name} holds no {name}")
                payloads[name] = tar.extractfile(files[name]).read()
    except FileNotFoundError:
        raise EvaluationError(f"model archive not found: {archive}") from None
    except tarfile.TarError as err:
        raise EvaluationError(f"{archive.name} is not a gzip tar archive: {err}") from None
    try:
        schema = contract.parse_schema(payloads[SCHEMA_FILE].decode(),
                                       f"{archive.name}:{SCHEMA_FILE}")
    except (contract.ContractError, UnicodeDecodeError) as err:
        raise EvaluationError(str(err)) from None
    return joblib.load(io.BytesIO(payloads[MODEL_FILE])), schema


def read_test(path: Path, schema: dict) -> tuple[pd.DataFrame, pd.Series]:
    """Features (schema order) and target of the test split."""
    try:
        return contract.read_split(path, schema)
    except contract.ContractError as err:
        raise EvaluationError(str(err)) from None


def _metrics(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """mse, rmse, mae, r2 of each row of equally shaped (rounds, n) arrays."""
    errors = predicted - actual
    mse = np.mean(errors**2, axis=-1)
    total = np.sum((actual - actual.mean(axis=-1, keepdims=True)) ** 2, axis=-1)
    r2 = 1 - np.sum(errors**2, axis=-1) / total
    return np.stack([mse, np.sqrt(mse), np.mean(np.abs(errors), axis=-1), r2])


def regression_metrics(actual, predicted) -> dict:
    """ModelMetrics regression_metrics. Each standard deviation is the spread of the metric
    over BOOTSTRAP_ROUNDS resamples of the test rows (with replacement, fixed seed
    BOOTSTRAP_SEED), so the same model and data always give the same figures."""
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    values = _metrics(actual, predicted)
    rows = np.random.default_rng(BOOTSTRAP_SEED).integers(
        0, len(actual), size=(BOOTSTRAP_ROUNDS, len(actual)))
    spreads = np.nanstd(_metrics(actual[rows], predicted[rows]), axis=1)
    names = ("mse", "rmse", "mae", "r2")
    return {
        "regression_metrics": {
            name: {"value": float(value), "standard_deviation": float(spread)}
            for name, value, spread in zip(names, values, spreads, strict=True)
        }
    }


def plot_predictions(actual, predicted, path: Path, rmse: float) -> None:
    figure = Figure(figsize=(6, 6))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.scatter(actual, predicted, s=8, alpha=0.5)
    low = float(min(np.min(actual), np.min(predicted)))
    high = float(max(np.max(actual), np.max(predicted)))
    axes.plot([low, high], [low, high], color="black", linewidth=1, label="predicted = actual")
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.set_title(f"Test set: RMSE {rmse:.3f}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def evaluate(archive: Path, test_csv: Path, output_dir: Path) -> dict:
    """Score the model in ``archive`` on ``test_csv``; writes evaluation.json and
    prediction_plot.png to ``output_dir`` and returns the metrics."""
    model, schema = load_model(archive)
    features, actual = read_test(test_csv, schema)
    try:
        predicted = model.predict(features)
    except (ValueError, KeyError) as err:
        raise EvaluationError(f"the model cannot score {test_csv.name}: {err}") from None
    report = regression_metrics(actual, predicted)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "evaluation.json").write_text(json.dumps(report, indent=2))
    plot_predictions(actual, predicted, output_dir / "prediction_plot.png",
                     report["regression_metrics"]["rmse"]["value"])
    return report


def main() -> int:
    processing = contract.opt_ml() / "processing"
    try:
        report = evaluate(processing / "model" / "model.tar.gz",
                          processing / "test" / "test.csv", processing / "evaluation")
    except EvaluationError as err:
        return contract.fail(str(err))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
