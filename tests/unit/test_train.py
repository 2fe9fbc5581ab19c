"""train.py: hyperparameters, the saved Pipeline, and the training job contract."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from model_build.scripts import train

SCRIPT = Path(train.__file__)


def test_every_configured_hyperparameter_is_accepted(project_config):
    configured = project_config.hyperparameters
    parsed = train.parse_hyperparameters([f"--{k}={v}" for k, v in configured.items()])
    assert {k: parsed[k] for k in configured} == configured


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--max_depth", "3"], "max_depth"),
        (["--max_iter", "many"], "max_iter"),
        (["--regressor", "svr", "--max_iter", "3"], "max_iter do not apply to regressor 'svr'"),
        (["--regressor", "lasso"], "regressor"),
    ],
)
def test_bad_hyperparameters_name_the_argument(argv, expected):
    with pytest.raises(train.TrainError, match=expected):
        train.parse_hyperparameters(argv)


def test_model_predicts_from_raw_rows(trained_model_dir, abalone, schema):
    model = joblib.load(trained_model_dir / "model.joblib")
    features = [f["name"] for f in schema["features"]]
    rows = abalone[features].head(20)
    predictions = model.predict(rows)
    assert predictions.shape == (20,) and np.isfinite(predictions).all()
    # The model learned something: its error on these rows is far below the spread of rings.
    assert np.sqrt(np.mean((predictions - abalone["rings"].head(20)) ** 2)) < abalone[
        "rings"
    ].std()


def test_unseen_category_does_not_crash(trained_model_dir, abalone, schema):
    model = joblib.load(trained_model_dir / "model.joblib")
    row = abalone[[f["name"] for f in schema["features"]]].head(1).assign(sex="unknown")
    assert np.isfinite(model.predict(row)).all()


@pytest.mark.parametrize(
    "argv",
    [["--regressor", "svr", "--C", "5"], ["--regressor", "hist_gradient_boosting",
                                          "--max_iter", "50"]],
)
def test_each_regressor_fits_raw_rows(argv, abalone_split, abalone, schema):
    hyperparameters = train.parse_hyperparameters(argv)
    model, validation_rmse = train.train(
        abalone_split / "train", abalone_split / "validation", schema, hyperparameters
    )
    assert validation_rmse < pd.read_csv(abalone_split / "validation" / "validation.csv")[
        "rings"
    ].std()
    row = abalone[[f["name"] for f in schema["features"]]].head(3).assign(sex=["M", "?", "I"])
    assert np.isfinite(model.predict(row)).all()


def test_model_dir_holds_what_serving_needs(trained_model_dir, schema):
    assert json.loads((trained_model_dir / "schema.json").read_text()) == schema
    assert (trained_model_dir / "code" / "inference.py").is_file()


def test_validation_rmse_is_the_models_error(abalone_split, schema, project_config):
    hyperparameters = train.parse_hyperparameters(
        [f"--{k}={v}" for k, v in project_config.hyperparameters.items()]
    )
    model, validation_rmse = train.train(
        abalone_split / "train", abalone_split / "validation", schema, hyperparameters
    )
    validation = pd.read_csv(abalone_split / "validation" / "validation.csv")
    predicted = model.predict(validation.drop(columns=[schema["target"]]))
    assert validation_rmse == pytest.approx(
        np.sqrt(np.mean((predicted - validation[schema["target"]]) ** 2))
    )


def test_channel_missing_a_column_is_refused(tmp_path, abalone_split, schema):
    frame = pd.read_csv(abalone_split / "train" / "train.csv").drop(columns=["height"])
    frame.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(train.TrainError, match="train.csv is missing column.*height"):
        train.read_channel(tmp_path, schema)


def test_text_in_numeric_column_is_refused(tmp_path, abalone_split, schema):
    frame = pd.read_csv(abalone_split / "train" / "train.csv").astype({"length": str})
    frame.loc[3, "length"] = "long"
    frame.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(train.TrainError, match="column 'length' must hold numbers"):
        train.read_channel(tmp_path, schema)


def _training_job(root: Path, abalone_split: Path, schema: dict, with_inference=True) -> dict:
    """A training container's layout: the source dir (train.py next to inference.py),
    the channels, and the SM_* environment that points at them."""
    source = root / "code"
    source.mkdir(parents=True)
    shutil.copy(SCRIPT, source / "train.py")
    if with_inference:
        (source / "inference.py").write_text("# placeholder for the serving script\n")
    channels = root / "input" / "data"
    for name in ("train", "validation"):
        (channels / name).mkdir(parents=True)
        shutil.copy(abalone_split / name / f"{name}.csv", channels / name)
    (channels / "schema").mkdir()
    (channels / "schema" / "schema.json").write_text(json.dumps(schema))
    return {
        **os.environ,
        "MLOPS_OPT_ML": str(root),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_CHANNEL_TRAIN": str(channels / "train"),
        "SM_CHANNEL_VALIDATION": str(channels / "validation"),
        "SM_CHANNEL_SCHEMA": str(channels / "schema"),
    }


def _run(root: Path, env: dict, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "code" / "train.py"), *argv], cwd=root.parent,
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_script_trains_and_logs_the_metric(tmp_path, abalone_split, schema, project_config):
    root = tmp_path / "job"
    env = _training_job(root, abalone_split, schema)
    argv = [part for k, v in project_config.hyperparameters.items() for part in (f"--{k}", str(v))]
    result = _run(root, env, argv)
    assert result.returncode == 0, result.stderr
    match = re.search(r"validation_rmse=([0-9.]+)", result.stdout)
    assert match and float(match.group(1)) > 0
    model = joblib.load(root / "model" / "model.joblib")
    validation = pd.read_csv(abalone_split / "validation" / "validation.csv")
    predicted = model.predict(validation.drop(columns=[schema["target"]]))
    rmse = np.sqrt(np.mean((predicted - validation[schema["target"]]) ** 2))
    assert float(match.group(1)) == pytest.approx(rmse, abs=1e-6)
    assert (root / "model" / "code" / "inference.py").is_file()
    assert not (root / "output" / "failure").exists()


def test_script_fails_on_bad_channel(tmp_path, abalone_split, schema):
    root = tmp_path / "job"
    env = _training_job(root, abalone_split, schema)
    validation = root / "input" / "data" / "validation" / "validation.csv"
    pd.read_csv(validation).drop(columns=["sex"]).to_csv(validation, index=False)
    result = _run(root, env, [])
    assert result.returncode == 1
    assert "missing column(s) sex" in (root / "output" / "failure").read_text()
    assert "Traceback" not in result.stderr
    assert not (root / "model" / "model.joblib").exists()


def test_script_requires_inference_script(tmp_path, abalone_split, schema):
    root = tmp_path / "job"
    env = _training_job(root, abalone_split, schema, with_inference=False)
    result = _run(root, env, [])
    assert result.returncode == 1
    assert "inference.py" in (root / "output" / "failure").read_text()
