"""train.py: hyperparameters, the saved Pipeline, comparisons, and the training job contract."""

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
    [
        ["--regressor", "svr", "--C", "5"],
        ["--regressor", "hist_gradient_boosting", "--max_iter", "50"],
        ["--regressor", "random_forest", "--n_estimators", "20", "--max_features", "0.5"],
        ["--regressor", "k_neighbors", "--n_neighbors", "10", "--weights", "distance"],
        ["--regressor", "ridge", "--alpha", "2"],
    ],
)
def test_each_regressor_fits_raw_rows(argv, abalone_split, abalone, schema):
    hyperparameters = train.parse_hyperparameters(argv)
    model, metrics = train.train(
        abalone_split / "train", abalone_split / "validation", schema, hyperparameters
    )
    assert metrics["rmse"] < pd.read_csv(abalone_split / "validation" / "validation.csv")[
        "rings"
    ].std()
    row = abalone[[f["name"] for f in schema["features"]]].head(3).assign(sex=["M", "?", "I"])
    assert np.isfinite(model.predict(row)).all()


def test_model_dir_holds_what_serving_needs(trained_model_dir, schema):
    assert json.loads((trained_model_dir / "schema.json").read_text()) == schema
    assert (trained_model_dir / "code" / "inference.py").is_file()


def test_validation_metrics_are_the_models_errors(abalone_split, schema, project_config):
    hyperparameters = train.parse_hyperparameters(
        [f"--{k}={v}" for k, v in project_config.hyperparameters.items()]
    )
    model, metrics = train.train(
        abalone_split / "train", abalone_split / "validation", schema, hyperparameters
    )
    errors = _validation_errors(model, abalone_split, schema)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(errors)))


def _validation_errors(model, abalone_split: Path, schema: dict) -> np.ndarray:
    validation = pd.read_csv(abalone_split / "validation" / "validation.csv")
    predicted = model.predict(validation.drop(columns=[schema["target"]]))
    return np.asarray(predicted - validation[schema["target"]])


def test_one_letter_hyperparameters_take_the_training_toolkits_form():
    """SageMaker's framework images (tuning jobs) pass C as -C, the SDK's drivers as --C."""
    assert train.parse_hyperparameters(["--regressor", "svr", "-C", "3"]) == \
        train.parse_hyperparameters(["--regressor", "svr", "--C", "3"]) == \
        {"regressor": "svr", "C": 3.0}


# A comparison: quick candidates of three kinds, compared on the real split.
CANDIDATES = {
    "svr": {"regressor": "svr", "C": 20.0, "epsilon": 1.5, "gamma": 0.05},
    "ridge": {"regressor": "ridge", "alpha": 1.0},
    "k_neighbors": {"regressor": "k_neighbors", "n_neighbors": 15},
}


@pytest.fixture(scope="module")
def comparison(abalone_split, schema):
    return train.compare(abalone_split / "train", abalone_split / "validation", schema,
                         CANDIDATES)


def test_comparison_scores_every_candidate_and_keeps_the_best(comparison, abalone_split,
                                                              schema):
    model, report = comparison
    assert [r["name"] for r in report["candidates"]] == list(CANDIDATES)
    assert all(r["status"] == "Succeeded" for r in report["candidates"])
    scores = {r["name"]: r["validation"] for r in report["candidates"]}
    assert report["best"] == min(scores, key=lambda name: scores[name]["rmse"])
    # The kept model is the best candidate, refitted nowhere else: its errors are the report's.
    errors = _validation_errors(model, abalone_split, schema)
    best = scores[report["best"]]
    assert best["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))
    assert best["mae"] == pytest.approx(np.mean(np.abs(errors)))
    assert model.named_steps["regressor"].__class__ is \
        train.REGRESSORS[CANDIDATES[report["best"]]["regressor"]].estimator
    # Each candidate's figures are its own, not copies of one model's.
    assert len({round(s["rmse"], 9) for s in scores.values()}) == len(CANDIDATES)


def test_comparison_picks_by_the_configured_metric(abalone_split, schema, comparison):
    _, report = train.compare(abalone_split / "train", abalone_split / "validation", schema,
                              CANDIDATES, metric="r2")
    scores = {r["name"]: r["validation"]["r2"] for r in comparison[1]["candidates"]}
    assert report["selection_metric"] == "r2"
    assert report["best"] == max(scores, key=scores.get)  # higher R2 is better


def test_a_crashing_candidate_is_reported_and_the_rest_compared(abalone_split, schema):
    candidates = {
        "negative_c": {"regressor": "svr", "C": -1.0},
        "ridge": CANDIDATES["ridge"],
        "wrong_setting": {"regressor": "ridge", "n_neighbors": 3},
        "k_neighbors": CANDIDATES["k_neighbors"],
    }
    model, report = train.compare(abalone_split / "train", abalone_split / "validation",
                                  schema, candidates)
    results = {r["name"]: r for r in report["candidates"]}
    assert results["negative_c"]["status"] == "Failed"
    assert "'C' parameter of SVR" in results["negative_c"]["error"]
    assert results["wrong_setting"]["status"] == "Failed"
    assert "n_neighbors do not apply to regressor 'ridge'" in results["wrong_setting"]["error"]
    succeeded = {n: r["validation"]["rmse"] for n, r in results.items()
                 if r["status"] == "Succeeded"}
    assert set(succeeded) == {"ridge", "k_neighbors"}
    assert report["best"] == min(succeeded, key=succeeded.get)


def test_all_candidates_crashing_fails_with_each_reason(abalone_split, schema):
    candidates = {"negative_c": {"regressor": "svr", "C": -1.0},
                  "no_neighbours": {"regressor": "k_neighbors", "n_neighbors": 0}}
    with pytest.raises(train.TrainError) as raised:
        train.compare(abalone_split / "train", abalone_split / "validation", schema, candidates)
    message = str(raised.value)
    assert message.startswith("every candidate failed")
    assert "negative_c: The 'C' parameter of SVR" in message
    assert "no_neighbours: The 'n_neighbors' parameter" in message


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--candidates", "{not json"], "candidates is not valid JSON"),
        (["--candidates", "[1, 2]"], "JSON object of named objects"),
        (["--candidates", json.dumps(CANDIDATES), "--C", "3"], "drop --C 3"),
        (["--selection_metric", "mae", "--C", "3"], "selection_metric needs candidates"),
        (["--candidates", json.dumps(CANDIDATES), "--selection_metric", "mape"],
         "selection_metric"),
    ],
)
def test_bad_comparison_arguments_name_the_problem(argv, expected):
    with pytest.raises(train.TrainError, match=re.escape(expected)):
        train.parse_arguments(argv)


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


def test_script_compares_candidates(tmp_path, abalone_split, schema):
    root = tmp_path / "job"
    env = _training_job(root, abalone_split, schema)
    candidates = {**CANDIDATES, "negative_c": {"regressor": "svr", "C": -1.0}}
    result = _run(root, env, ["--candidates", json.dumps(candidates),
                              "--selection_metric", "mae"])
    assert result.returncode == 0, result.stderr
    report = json.loads((root / "model" / "comparison.json").read_text())
    scores = {r["name"]: r["validation"]["mae"] for r in report["candidates"]
              if r["status"] == "Succeeded"}
    assert set(scores) == set(CANDIDATES) and report["best"] == min(scores, key=scores.get)
    assert (root / "model" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "candidate negative_c: failed" in result.stdout
    model = joblib.load(root / "model" / "model.joblib")
    errors = _validation_errors(model, abalone_split, schema)
    logged = float(re.search(r"validation_mae=([0-9.]+)", result.stdout).group(1))
    assert logged == pytest.approx(np.mean(np.abs(errors)), abs=1e-6)


def test_script_fails_when_every_candidate_fails(tmp_path, abalone_split, schema):
    root = tmp_path / "job"
    env = _training_job(root, abalone_split, schema)
    candidates = {"negative_c": {"regressor": "svr", "C": -1.0},
                  "negative_alpha": {"regressor": "ridge", "alpha": -1.0}}
    result = _run(root, env, ["--candidates", json.dumps(candidates)])
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert "negative_c: The 'C' parameter" in failure
    assert "negative_alpha: The 'alpha' parameter" in failure
    assert "Traceback" not in result.stderr
    assert not (root / "model" / "model.joblib").exists()


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
