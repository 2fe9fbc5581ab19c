"""Local batch scoring: `mlops batch run` on 1,000,000 rows beside bare `model.predict` on the
same rows, with the pipeline's model registered and approved in a private state directory.
Rates are medians: the runs and the reference's predicts alternate."""

from __future__ import annotations

import statistics
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path

import joblib
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.endpoint import _private_state
from mlops_core import config
from mlops_local import batch
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore

ROWS = 1_000_000
# The machine's speed drifts, so the batch runs ROUNDS times with the reference measured
# before each round and after the last: predicts of 100,000 rows (a rate, so fewer rows do),
# REFERENCE_REPEATS at a time. The ratio is of the two medians.
ROUNDS = 2
REFERENCE_ROWS, REFERENCE_REPEATS = 100_000, 2


def _approve(model_dir: Path, cfg: config.Config) -> None:
    """Register `model_dir` as an approved package, as training and a person would."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in Path(model_dir).iterdir():
                tar.add(path, arcname=path.name)
        uri = LocalStore().put_file(archive, f"s3://mlops-local/{cfg.project}/bench/model.tar.gz")
    LocalRegistry().create_model_package(
        ModelPackageGroupName=cfg.model_package_group, ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": "sklearn", "ModelDataUrl": uri}]},
    )


def _seconds(step: dict) -> float:
    return (datetime.fromisoformat(step["EndTime"])
            - datetime.fromisoformat(step["StartTime"])).total_seconds()


def _own_rates(estimator, matrix) -> list[float]:
    """Rows per second of the estimator's own predict on one core, REFERENCE_REPEATS times."""
    rates = []
    with threadpool_limits(1):
        for _ in range(REFERENCE_REPEATS):
            started = time.perf_counter()
            estimator.predict(matrix)
            rates.append(len(matrix) / (time.perf_counter() - started))
    return rates


def run(model_dir: Path) -> list[dict]:
    """Benchmark batch scoring with the model in `model_dir` (as the pipeline trained it)."""
    cfg = config.load()
    features = pd.read_csv(cfg.data_file)[cfg.feature_names]
    frame = pd.concat([features] * (ROWS // len(features) + 1), ignore_index=True).iloc[:ROWS]
    model = joblib.load(Path(model_dir) / "model.joblib")
    features_step, estimator = model.steps[0][1], model.steps[-1][1]
    matrix = features_step.transform(frame.iloc[:REFERENCE_ROWS])
    rates, transform_rates, totals = [], [], []
    with _private_state() as home:
        rows = home / "rows.csv"
        frame.to_csv(rows, header=False, index=False)
        _approve(model_dir, cfg)
        for number in range(ROUNDS):
            rates += _own_rates(estimator, matrix)
            started = time.perf_counter()
            result = batch.run(cfg, rows, home / f"rows-{number}.out")
            totals.append(time.perf_counter() - started)
            transform = next(s for s in result.execution["Steps"]
                             if s["StepType"] == "Transform")
            transform_rates.append(result.scored / _seconds(transform))
    rates += _own_rates(estimator, matrix)
    own_rate, transform_rate = statistics.median(rates), statistics.median(transform_rates)
    row = {
        "benchmark": f"batch run, {ROWS:,} csv rows, {ROUNDS} runs",
        "rows_scored": result.scored,
        "transform_rows_per_s": round(transform_rate),
        "estimator_one_core_rows_per_s": round(own_rate),
        "ratio": round(transform_rate / own_rate, 2),
        "goal_ratio": 1.6,
        "command_seconds": round(statistics.median(totals), 1),
    }
    print("  ".join(f"{key}={value}" for key, value in row.items()))
    return [row]


if __name__ == "__main__":
    import sys

    run(Path(sys.argv[1]))  # a model directory: model.joblib, schema.json, code/inference.py
