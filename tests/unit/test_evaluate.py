"""evaluate.py: ModelMetrics from the packed model on the test split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from model_build.scripts import evaluate

SCRIPT = Path(evaluate.__file__)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_archive(tmp_path_factory, trained_model_dir) -> Path:
    """model.tar.gz as SageMaker packs SM_MODEL_DIR."""
    archive = tmp_path_factory.mktemp("archive") / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(trained_model_dir, arcname=".")
    return archive


def test_metrics_equal_rescoring_the_model(tmp_path, model_archive, trained_model_dir,
                                           abalone_split, schema):
    test_csv = abalone_split / "test" / "test.csv"
    report = evaluate.evaluate(model_archive, test_csv, tmp_path)

    test = pd.read_csv(test_csv)
    actual = test[schema["target"]]
    predicted = joblib.load(trained_model_dir / "model.joblib").predict(
        test.drop(columns=[schema["target"]]))
    expected = {
        "mse": mean_squared_error(actual, predicted),
        "rmse": np.sqrt(mean_squared_error(actual, predicted)),
        "mae": mean_absolute_error(actual, predicted),
        "r2": r2_score(actual, predicted),
    }
    metrics = report["regression_metrics"]
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        assert metrics[name]["value"] == pytest.approx(value)
        assert 0 < metrics[name]["standard_deviation"] < abs(value)
    assert json.loads((tmp_path / "evaluation.json").read_text()) == report
    assert (tmp_path / "prediction_plot.png").read_bytes().startswith(PNG_MAGIC)


def test_bootstrap_is_reproducible_and_sized_like_the_sample():
    rng = np.random.default_rng(1)
    actual = rng.normal(10, 3, size=400)
    predicted = actual + rng.normal(0, 2, size=400)
    first = evaluate.regression_metrics(actual, predicted)
    assert evaluate.regression_metrics(actual, predicted) == first
    # The standard error of a mean of n absolute errors is about sd(|e|) / sqrt(n).
    expected_sd = np.std(np.abs(predicted - actual)) / np.sqrt(len(actual))
    mae_sd = first["regression_metrics"]["mae"]["standard_deviation"]
    assert mae_sd == pytest.approx(expected_sd, rel=0.15)


def test_archive_without_model_is_refused(tmp_path, abalone_split):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(abalone_split / "test" / "test.csv", arcname="test.csv")
    with pytest.raises(evaluate.EvaluationError, match="holds no model.joblib"):
        evaluate.evaluate(archive, abalone_split / "test" / "test.csv", tmp_path / "out")


def test_test_split_missing_a_column_is_refused(tmp_path, model_archive, abalone_split):
    test_csv = tmp_path / "test.csv"
    pd.read_csv(abalone_split / "test" / "test.csv").drop(columns=["rings"]).to_csv(
        test_csv, index=False)
    with pytest.raises(evaluate.EvaluationError, match="missing column.*rings"):
        evaluate.evaluate(model_archive, test_csv, tmp_path / "out")


def _container(root: Path, archive: Path | None, abalone_split: Path) -> dict:
    """An evaluation processing job's layout and environment."""
    (root / "processing" / "model").mkdir(parents=True)
    (root / "processing" / "test").mkdir(parents=True)
    if archive:
        (root / "processing" / "model" / "model.tar.gz").write_bytes(archive.read_bytes())
    (root / "processing" / "test" / "test.csv").write_bytes(
        (abalone_split / "test" / "test.csv").read_bytes())
    return {**os.environ, "MLOPS_OPT_ML": str(root)}


def test_script_writes_evaluation(tmp_path, model_archive, abalone_split):
    env = _container(tmp_path / "job", model_archive, abalone_split)
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    output = tmp_path / "job" / "processing" / "evaluation"
    report = json.loads((output / "evaluation.json").read_text())
    assert report == evaluate.evaluate(model_archive, abalone_split / "test" / "test.csv",
                                       tmp_path / "again")
    assert (output / "prediction_plot.png").read_bytes().startswith(PNG_MAGIC)


def test_script_without_model_fails_with_message(tmp_path, abalone_split):
    env = _container(tmp_path / "job", None, abalone_split)
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "model archive not found" in (tmp_path / "job" / "output" / "message").read_text()
    assert "Traceback" not in result.stderr
