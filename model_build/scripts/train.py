"""Training step: fit the feature engineering and the regressor as one scikit-learn Pipeline.

Run as ``python train.py --learning_rate 0.05 --max_iter 300 ...`` with the SageMaker
training environment (``SM_MODEL_DIR``, ``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``,
``SM_CHANNEL_SCHEMA``). Imports only what the SageMaker scikit-learn container has.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import mean_squared_error
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVR

INFERENCE_SCRIPT = Path(__file__).resolve().parent / "inference.py"
MODEL_FILE = "model.joblib"


class TrainError(Exception):
    """Bad input or arguments; the message names the problem."""


# The regressors train.py can fit and the hyperparameters each takes (sklearn's names).
# SVR wins on abalone by cross-validation; HistGradientBoosting stays selectable.
REGRESSORS = {
    "svr": (SVR, {"C": float, "epsilon": float, "gamma": float}),
    "hist_gradient_boosting": (
        HistGradientBoostingRegressor,
        {
            "learning_rate": float,
            "max_iter": int,
            "max_leaf_nodes": int,
            "min_samples_leaf": int,
            "l2_regularization": float,
            "loss": str,
        },
    ),
}
DEFAULT_REGRESSOR = "hist_gradient_boosting"


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise TrainError(f"bad hyperparameters: {message}")


def parse_hyperparameters(argv: list[str]) -> dict:
    """``--name value`` pairs: ``regressor`` (default hist_gradient_boosting) and the settings
    given for it, which must all belong to that regressor."""
    parser = _ArgumentParser(prog="train.py")
    parser.add_argument("--regressor", choices=sorted(REGRESSORS), default=DEFAULT_REGRESSOR)
    owner = {}
    for regressor, (_, types) in REGRESSORS.items():
        for name, kind in types.items():
            owner[name] = regressor
            parser.add_argument(f"--{name}", type=kind)
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    regressor = given.pop("regressor")
    foreign = [name for name in given if owner[name] != regressor]
    if foreign:
        raise TrainError(
            f"bad hyperparameters: {', '.join(foreign)} do not apply to regressor '{regressor}'"
        )
    return {"regressor": regressor, **given}


def load_schema(directory: Path) -> dict:
    path = Path(directory) / "schema.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainError(f"schema channel has no schema.json: {path}") from None
    except json.JSONDecodeError as err:
        raise TrainError(f"{path} is not valid JSON: {err}") from None


def read_channel(directory: Path, schema: dict) -> tuple[pd.DataFrame, pd.Series]:
    """The features (schema order) and target of the one CSV file in a channel directory."""
    files = sorted(Path(directory).glob("*.csv"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise TrainError(f"expected exactly one .csv file in {directory}, found {found}")
    try:
        frame = pd.read_csv(files[0])
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise TrainError(f"{files[0].name} cannot be read as CSV: {err}") from None
    features = [f["name"] for f in schema["features"]]
    missing = [c for c in features + [schema["target"]] if c not in frame.columns]
    if missing:
        raise TrainError(f"{files[0].name} is missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise TrainError(f"{files[0].name} has no rows")
    numeric = [f["name"] for f in schema["features"] if f["type"] == "numeric"]
    for column in numeric + [schema["target"]]:
        if not pd.api.types.is_numeric_dtype(frame[column]) or frame[column].isna().any():
            raise TrainError(f"{files[0].name}: column '{column}' must hold numbers only")
    return frame[features], frame[schema["target"]]


def build_pipeline(schema: dict, hyperparameters: dict) -> Pipeline:
    """One-hot for categoricals (an unseen category becomes all zeros), numbers scaled for
    the SVR and passed through for trees, then the regressor."""
    settings = dict(hyperparameters)
    regressor_class = REGRESSORS[settings.pop("regressor", DEFAULT_REGRESSOR)][0]
    categorical = [f for f in schema["features"] if f["type"] == "categorical"]
    encode = ColumnTransformer(
        [(
            "categorical",
            OneHotEncoder(categories=[f["values"] for f in categorical],
                          handle_unknown="ignore", sparse_output=False),
            [f["name"] for f in categorical],
        )],
        remainder=StandardScaler() if regressor_class is SVR else "passthrough",
    )
    if regressor_class is HistGradientBoostingRegressor:
        settings["random_state"] = schema["seed"]
    return Pipeline([("features", encode), ("regressor", regressor_class(**settings))])


def rmse(y_true, y_pred) -> float:
    return float(np.sqrt(mean_squared_error(y_true, y_pred)))


def train(train_dir: Path, validation_dir: Path, schema: dict,
          hyperparameters: dict) -> tuple[Pipeline, float]:
    """Fit on the train channel; returns the model and its validation RMSE."""
    x_train, y_train = read_channel(train_dir, schema)
    x_validation, y_validation = read_channel(validation_dir, schema)
    model = build_pipeline(schema, hyperparameters)
    try:
        model.fit(x_train, y_train)
    except ValueError as err:
        raise TrainError(f"cannot fit the model with these hyperparameters: {err}") from None
    return model, rmse(y_validation, model.predict(x_validation))


def save_model(model: Pipeline, model_dir: Path, schema_dir: Path, inference_script: Path):
    """model.joblib, schema.json and code/inference.py: what the serving container needs."""
    code_dir = Path(model_dir) / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, Path(model_dir) / MODEL_FILE)
    shutil.copyfile(Path(schema_dir) / "schema.json", Path(model_dir) / "schema.json")
    shutil.copyfile(inference_script, code_dir / "inference.py")


def main(argv: list[str]) -> int:
    opt_ml = Path(os.environ.get("MLOPS_OPT_ML", "/opt/ml"))
    channels = opt_ml / "input" / "data"
    model_dir = Path(os.environ.get("SM_MODEL_DIR", opt_ml / "model"))
    schema_dir = Path(os.environ.get("SM_CHANNEL_SCHEMA", channels / "schema"))
    try:
        if not INFERENCE_SCRIPT.is_file():
            raise TrainError(f"inference.py must sit next to train.py: {INFERENCE_SCRIPT}")
        hyperparameters = parse_hyperparameters(argv)
        model, validation_rmse = train(
            Path(os.environ.get("SM_CHANNEL_TRAIN", channels / "train")),
            Path(os.environ.get("SM_CHANNEL_VALIDATION", channels / "validation")),
            load_schema(schema_dir),
            hyperparameters,
        )
        save_model(model, model_dir, schema_dir, INFERENCE_SCRIPT)
    except TrainError as err:
        failure = opt_ml / "output" / "failure"
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(f"{err}\n")
        print(err, file=sys.stderr)
        return 1
    print(f"validation_rmse={validation_rmse:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
