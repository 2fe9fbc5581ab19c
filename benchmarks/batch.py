"""Local batch scoring: `mlops batch run` on 1,000,000 rows beside bare `model.predict` on the
same rows, with the pipeline's model registered and approved in a private state directory.

Beside the goal's reference (the estimator's own predict on one core) stands what the machine
gives that predict on as many cores as the transform uses, in as many processes at once: on a
shared virtual machine two busy cores do not give twice one, and this says by how much.
Rates are medians: each batch run is followed by the references' predicts."""

from __future__ import annotations

import statistics
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path

import joblib
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.endpoint import _private_state
from mlops_core import config
from mlops_local import batch
from mlops_local.engine import transform
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore

ROWS = 1_000_000
# The machine's speed drifts, so the batch runs ROUNDS times, each followed by the references:
# predicts of 100,000 rows (a rate, so fewer rows do), REFERENCE_REPEATS at a time.
ROUNDS = 2
REFERENCE_ROWS, REFERENCE_REPEATS = 100_000, 2
_REFERENCE: dict = {}


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


def _load_reference(estimator, matrix) -> None:
    _REFERENCE.update(estimator=estimator, matrix=matrix)


def _own_seconds() -> float:
    """Seconds of the estimator's own predict of the reference rows, on one core."""
    with threadpool_limits(1):
        started = time.perf_counter()
        _REFERENCE["estimator"].predict(_REFERENCE["matrix"])
        return time.perf_counter() - started


def _reference_rates(pool: ProcessPoolExecutor, workers: int) -> tuple[list[float], list[float]]:
    """Rows per second of the estimator's own predict, REFERENCE_REPEATS times each: alone on
    one core, and as `workers` predicts at once in the pool's processes."""
    rows = len(_REFERENCE["matrix"])
    alone, together = [], []
    for _ in range(REFERENCE_REPEATS):
        alone.append(rows / _own_seconds())
        started = time.perf_counter()
        list(pool.map(_pause_then_predict, [started + 0.2] * workers))
        together.append(workers * rows / (time.perf_counter() - started - 0.2))
    return alone, together


def _pause_then_predict(start: float) -> None:
    """Wait until `start` (every worker is up by then), then predict: the predicts overlap."""
    time.sleep(max(0.0, start - time.perf_counter()))
    _own_seconds()


def run(model_dir: Path) -> list[dict]:
    """Benchmark batch scoring with the model in `model_dir` (as the pipeline trained it)."""
    cfg = config.load()
    features = pd.read_csv(cfg.data_file)[cfg.feature_names]
    frame = pd.concat([features] * (ROWS // len(features) + 1), ignore_index=True).iloc[:ROWS]
    model = joblib.load(Path(model_dir) / "model.joblib")
    features_step, estimator = model.steps[0][1], model.steps[-1][1]
    reference = (estimator, features_step.transform(frame.iloc[:REFERENCE_ROWS]))
    _load_reference(*reference)
    alone, together, transform_rates, totals = [], [], [], []
    with _private_state() as home:
        rows = home / "rows.csv"
        frame.to_csv(rows, header=False, index=False)
        _approve(model_dir, cfg)
        for number in range(ROUNDS):
            started = time.perf_counter()
            result = batch.run(cfg, rows, home / f"rows-{number}.out")
            totals.append(time.perf_counter() - started)
            step = next(s for s in result.execution["Steps"] if s["StepType"] == "Transform")
            transform_rates.append(result.scored / _seconds(step))
            workers = transform.worker_count(step["Properties"])
            with ProcessPoolExecutor(workers, get_context("fork"), initializer=_load_reference,
                                     initargs=reference) as pool:
                rates = _reference_rates(pool, workers)
            alone += rates[0]
            together += rates[1]
    own_rate, transform_rate = statistics.median(alone), statistics.median(transform_rates)
    row = {
        "benchmark": f"batch run, {ROWS:,} csv rows, {ROUNDS} runs, {workers} workers",
        "rows_scored": result.scored,
        "transform_rows_per_s": round(transform_rate),
        "estimator_one_core_rows_per_s": round(own_rate),
        "ratio": round(transform_rate / own_rate, 2),
        "goal_ratio": 1.6,
        f"estimator_{workers}_at_once_ratio": round(statistics.median(together) / own_rate, 2),
        "command_seconds": round(statistics.median(totals), 1),
    }
    print("  ".join(f"{key}={value}" for key, value in row.items()))
    return [row]


if __name__ == "__main__":
    import sys

    run(Path(sys.argv[1]))  # a model directory: model.joblib, schema.json, code/inference.py
