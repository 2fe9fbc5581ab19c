"""Training step: fit the feature engineering and the regressor as one scikit-learn Pipeline.

Run as ``python train.py --regressor svr --C 20 ...`` with the SageMaker training environment
(``SM_MODEL_DIR``, ``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``, ``SM_CHANNEL_SCHEMA``).
With ``--candidates '{"name": {"regressor": ..., ...}, ...}'`` it trains every candidate on
the same split, writes the comparison (``comparison.json``, ``comparison.png``) next to the
model and keeps the best by ``--selection_metric``. Imports only what the SageMaker
scikit-learn container has, and the data contract shipped beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVR

try:
    import contract  # shipped in the job's source directory
except ImportError:
    from model_build.scripts import contract

INFERENCE_SCRIPT = Path(__file__).resolve().parent / "inference.py"
MODEL_FILE = "model.joblib"
COMPARISON_FILE = "comparison.json"
COMPARISON_PLOT = "comparison.png"


class TrainError(Exception):
    """Bad input or arguments; the message names the problem."""


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class Regressor:
    estimator: type
    settings: dict  # hyperparameter -> type (sklearn's names)
    scaled: bool  # distance- and kernel-based models need scaled numbers; trees do not
    seeded: bool  # takes random_state, set from the schema's seed


# The regressors train.py can fit. SVR wins on abalone by cross-validation.
REGRESSORS = {
    "svr": Regressor(SVR, {"C": float, "epsilon": float, "gamma": float}, True, False),
    "hist_gradient_boosting": Regressor(
        HistGradientBoostingRegressor,
        {
            "learning_rate": float,
            "max_iter": int,
            "max_leaf_nodes": int,
            "min_samples_leaf": int,
            "l2_regularization": float,
            "loss": str,
        },
        False,
        True,
    ),
    "random_forest": Regressor(
        RandomForestRegressor,
        {
            "n_estimators": int,
            "max_depth": int,
            "min_samples_leaf": int,
            "max_features": _number_or_text,
        },
        False,
        True,
    ),
    "k_neighbors": Regressor(
        KNeighborsRegressor, {"n_neighbors": int, "weights": str, "p": int}, True, False
    ),
    "ridge": Regressor(Ridge, {"alpha": float}, True, False),
}
DEFAULT_REGRESSOR = "hist_gradient_boosting"
# Validation metrics of a comparison; the selection metric is one of them.
LOWER_IS_BETTER = {"rmse": True, "mse": True, "mae": True, "r2": False}

class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise TrainError(f"bad hyperparameters: {message}")


def parse_hyperparameters(argv: list[str]) -> dict:
    """``--name value`` pairs: ``regressor`` (default hist_gradient_boosting) and the settings
    given for it, which must all belong to that regressor."""
    parser = _ArgumentParser(prog="train.py")
    parser.add_argument("--regressor", choices=sorted(REGRESSORS), default=DEFAULT_REGRESSOR)
    kinds = {}
    for spec in REGRESSORS.values():
        for name, kind in spec.settings.items():
            if name not in kinds:
                kinds[name] = kind
                # The training toolkit of SageMaker's framework images (tuning jobs use it)
                # passes a one-letter hyperparameter as -C, the SDK's drivers as --C.
                flags = [f"-{name}", f"--{name}"] if len(name) == 1 else [f"--{name}"]
                parser.add_argument(*flags, dest=name, type=kind)
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    regressor = given.pop("regressor")
    foreign = [name for name in given if name not in REGRESSORS[regressor].settings]
    if foreign:
        raise TrainError(
            f"bad hyperparameters: {', '.join(foreign)} do not apply to regressor '{regressor}'"
        )
    return {"regressor": regressor, **given}


def parse_arguments(argv: list[str]) -> tuple[dict[str, dict] | None, str, list[str]]:
    """The job's mode: (candidates, selection metric, []) for a comparison, or
    (None, "rmse", the regressor's ``--name value`` pairs) for one model."""
    parser = _ArgumentParser(prog="train.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--candidates")
    parser.add_argument("--selection_metric", choices=sorted(LOWER_IS_BETTER))
    known, rest = parser.parse_known_args(argv)
    if known.candidates is None:
        if known.selection_metric is not None:
            raise TrainError("bad hyperparameters: selection_metric needs candidates")
        return None, "rmse", rest
    if rest:
        raise TrainError(
            "bad hyperparameters: with candidates, each candidate carries its own settings; "
            f"drop {' '.join(rest)}"
        )
    return parse_candidates(known.candidates), known.selection_metric or "rmse", []


def parse_candidates(text: str) -> dict[str, dict]:
    """``{"name": {"regressor": "svr", "C": 20.0, ...}, ...}``; each spec is checked when its
    candidate is trained, so one bad candidate does not stop the others."""
    try:
        candidates = json.loads(text)
    except json.JSONDecodeError as err:
        raise TrainError(f"bad hyperparameters: candidates is not valid JSON: {err}") from None
    if not isinstance(candidates, dict) or not candidates or not all(
        isinstance(spec, dict) for spec in candidates.values()
    ):
        raise TrainError(
            "bad hyperparameters: candidates must be a JSON object of named objects, "
            'e.g. {"svr": {"regressor": "svr", "C": 20}}'
        )
    return candidates


def load_schema(directory: Path) -> dict:
    try:
        return contract.load_schema(Path(directory) / contract.SCHEMA_FILE)
    except contract.ContractError as err:
        raise TrainError(f"schema channel: {err}") from None


def read_channel(directory: Path, schema: dict) -> tuple[pd.DataFrame, pd.Series]:
    """The features (schema order) and target of the one CSV file in a channel directory."""
    files = sorted(Path(directory).glob("*.csv"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise TrainError(f"expected exactly one .csv file in {directory}, found {found}")
    try:
        return contract.read_split(files[0], schema)
    except contract.ContractError as err:
        raise TrainError(str(err)) from None


def build_pipeline(schema: dict, hyperparameters: dict) -> Pipeline:
    """One-hot for categoricals (an unseen category becomes all zeros), numbers scaled for
    kernel, distance and linear models and passed through for trees, then the regressor."""
    settings = dict(hyperparameters)
    regressor = REGRESSORS[settings.pop("regressor", DEFAULT_REGRESSOR)]
    categorical = [f for f in schema["features"] if f["type"] == "categorical"]
    encode = ColumnTransformer(
        [(
            "categorical",
            OneHotEncoder(categories=[f["values"] for f in categorical],
                          handle_unknown="ignore", sparse_output=False),
            [f["name"] for f in categorical],
        )],
        remainder=StandardScaler() if regressor.scaled else "passthrough",
    )
    if regressor.seeded:
        settings["random_state"] = schema["seed"]
    return Pipeline([("features", encode), ("regressor", regressor.estimator(**settings))])


def validation_metrics(y_true, y_pred) -> dict[str, float]:
    mse = float(mean_squared_error(y_true, y_pred))
    return {
        "rmse": float(np.sqrt(mse)),
        "mse": mse,
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def train(train_dir: Path, validation_dir: Path, schema: dict,
          hyperparameters: dict) -> tuple[Pipeline, dict[str, float]]:
    """Fit on the train channel; returns the model and its validation metrics."""
    x_train, y_train = read_channel(train_dir, schema)
    x_validation, y_validation = read_channel(validation_dir, schema)
    model = build_pipeline(schema, hyperparameters)
    try:
        model.fit(x_train, y_train)
    except ValueError as err:
        raise TrainError(f"cannot fit the model with these hyperparameters: {err}") from None
    return model, validation_metrics(y_validation, model.predict(x_validation))


def _argv(spec: dict) -> list[str]:
    return [f"--{name}={value}" for name, value in spec.items()]


def compare(train_dir: Path, validation_dir: Path, schema: dict, candidates: dict[str, dict],
            metric: str = "rmse") -> tuple[Pipeline, dict]:
    """Fit every candidate on the train channel and score it on validation. Returns the best
    model by ``metric`` and the comparison report; a candidate that fails is recorded with
    its error, and only when every candidate fails is the job a failure."""
    x_train, y_train = read_channel(train_dir, schema)
    x_validation, y_validation = read_channel(validation_dir, schema)
    results, models = [], {}
    for name, spec in candidates.items():
        started = time.perf_counter()
        try:
            model = build_pipeline(schema, parse_hyperparameters(_argv(spec)))
            model.fit(x_train, y_train)
            predicted = model.predict(x_validation)
            if not np.isfinite(predicted).all():
                raise ValueError("the model predicts non-finite values")
        # Any error of one candidate (bad setting, failed fit) must not end the comparison.
        except Exception as err:
            results.append({"name": name, "hyperparameters": spec, "status": "Failed",
                            "error": str(err) or type(err).__name__})
            continue
        models[name] = model
        results.append({"name": name, "hyperparameters": spec, "status": "Succeeded",
                        "validation": validation_metrics(y_validation, predicted),
                        "fit_seconds": round(time.perf_counter() - started, 3)})
    if not models:
        raise TrainError("every candidate failed: " + "; ".join(
            f"{result['name']}: {result['error']}" for result in results))
    sign = 1 if LOWER_IS_BETTER[metric] else -1
    best = min((r for r in results if r["status"] == "Succeeded"),
               key=lambda r: sign * r["validation"][metric])
    report = {"selection_metric": metric, "best": best["name"], "candidates": results}
    return models[best["name"]], report


def write_comparison(report: dict, model_dir: Path) -> None:
    """comparison.json and a bar chart of each candidate's validation errors."""
    # Imported here: matplotlib takes a quarter of a second, and only a comparison draws.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / COMPARISON_FILE).write_text(json.dumps(report, indent=2) + "\n")
    results = report["candidates"]
    figure = Figure(figsize=(7, 1.2 + 0.5 * len(results)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    rows = np.arange(len(results))
    scored = [r for r in results if r["status"] == "Succeeded"]
    for offset, error in ((-0.2, "rmse"), (0.2, "mae")):
        bars = axes.barh([rows[results.index(r)] + offset for r in scored],
                         [r["validation"][error] for r in scored], height=0.4,
                         label=error.upper())
        axes.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    # Room right of the longest bar for its label and the legend.
    axes.set_xlim(0, 1.3 * max((r["validation"]["rmse"] for r in scored), default=1))
    labels = [
        f"{r['name']} (R2 {r['validation']['r2']:.3f})" if r["status"] == "Succeeded"
        else f"{r['name']} (failed)"
        for r in results
    ]
    labels = [f"* {label}" if r["name"] == report["best"] else label
              for r, label in zip(results, labels, strict=True)]
    axes.set_yticks(rows, labels)
    axes.invert_yaxis()
    axes.set_xlabel("validation error")
    axes.set_title(f"Candidates on the validation split (* best by {report['selection_metric']})")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(model_dir / COMPARISON_PLOT, dpi=100)


def save_model(model: Pipeline, model_dir: Path, schema_dir: Path, inference_script: Path):
    """model.joblib, schema.json and code/ (inference.py and the data contract it imports):
    what the serving container needs."""
    code_dir = Path(model_dir) / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, Path(model_dir) / MODEL_FILE)
    shutil.copyfile(Path(schema_dir) / contract.SCHEMA_FILE, Path(model_dir) / contract.SCHEMA_FILE)
    shutil.copyfile(inference_script, code_dir / "inference.py")
    shutil.copyfile(contract.__file__, code_dir / "contract.py")


def main(argv: list[str]) -> int:
    opt_ml = contract.opt_ml()
    channels = opt_ml / "input" / "data"
    model_dir = Path(os.environ.get("SM_MODEL_DIR", opt_ml / "model"))
    schema_dir = Path(os.environ.get("SM_CHANNEL_SCHEMA", channels / "schema"))
    train_dir = Path(os.environ.get("SM_CHANNEL_TRAIN", channels / "train"))
    validation_dir = Path(os.environ.get("SM_CHANNEL_VALIDATION", channels / "validation"))
    try:
        if not INFERENCE_SCRIPT.is_file():
            raise TrainError(f"inference.py must sit next to train.py: {INFERENCE_SCRIPT}")
        candidates, metric, settings = parse_arguments(argv)
        schema = load_schema(schema_dir)
        if candidates is None:
            model, metrics = train(train_dir, validation_dir, schema,
                                   parse_hyperparameters(settings))
        else:
            model, report = compare(train_dir, validation_dir, schema, candidates, metric)
            write_comparison(report, model_dir)
            for result in report["candidates"]:
                scores = result.get("validation")
                print(f"candidate {result['name']}: " + (
                    " ".join(f"{k} {v:.4f}" for k, v in scores.items()) if scores
                    else f"failed: {result['error']}"))
            metrics = next(r["validation"] for r in report["candidates"]
                           if r["name"] == report["best"])
            print(f"best candidate: {report['best']} by validation {metric}")
        save_model(model, model_dir, schema_dir, INFERENCE_SCRIPT)
    except TrainError as err:
        return contract.fail(str(err), "failure")
    for name in ("rmse", "mae", "r2"):
        print(f"validation_{name}={metrics[name]:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
