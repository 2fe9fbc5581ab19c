"""Model selection end to end: `mlops pipeline run` with candidates compared, and with
hyperparameter tuning switched on locally, each against its own state and configuration."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore
from model_build.scripts import train
from tests.helpers import run_mlops, variant

# Quick candidates, and one that crashes (a negative C), to keep the runs short.
CANDIDATES = """
[model.candidates.svr]
regressor = "svr"
C = 20.0
epsilon = 1.5
gamma = 0.05

[model.candidates.ridge]
regressor = "ridge"
alpha = 1.0

[model.candidates.k_neighbors]
regressor = "k_neighbors"
n_neighbors = 15

[model.candidates.broken]
regressor = "svr"
C = -1.0
"""
# Four trials in a region around the default SVR (larger C, smaller gamma, epsilon kept).
TUNING = {
    "local = false": "local = true",
    "max_jobs = 20": "max_jobs = 4",
    "min = 1.0\nmax = 100.0": "min = 20.0\nmax = 80.0",
    "min = 0.005\nmax = 0.5": "min = 0.02\nmax = 0.05",
    '[tuning.ranges.epsilon]\ntype = "continuous"\nmin = 0.1\nmax = 2.0\nscaling = "Linear"\n':
        "",
}


def _run(directory: Path, *args: str, **changes):
    """A pipeline run with a variant of mlops.toml in `directory`: (state, config, CLI result)."""
    config = variant(directory, **changes)
    state = directory / "state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_CONFIG", str(directory / "mlops.toml"))
        result = run_mlops(state, "pipeline", "run", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return state, config, result


def _registered(state: Path, config, version: int = 1) -> tuple[dict, dict[str, bytes]]:
    """A registered package and the files of its model.tar.gz."""
    registry = LocalRegistry(state / "registry.db")
    package = registry.describe_model_package(f"{config.model_package_group}/{version}")
    archive = LocalStore(state / "s3").path(
        package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return package, files


def _executions(state: Path) -> list[dict]:
    """Every execution record, oldest first."""
    records = [json.loads(p.read_text()) for p in (state / "executions").glob("*.json")]
    return sorted(records, key=lambda r: r["execution"]["StartTime"])


def _execution(state: Path) -> dict:
    return _executions(state)[0]


def _split(state: Path, execution: dict, name: str) -> Path:
    """A split this execution's preprocess step wrote (a channel directory)."""
    preprocess = execution["steps"]["ValidateAndPreprocess"]
    uri = next(o for o in preprocess["Outputs"] if o.rstrip("/").endswith(f"/{name}"))
    return LocalStore(state / "s3").path(uri)


def _rmse(model, directory: Path, schema: dict) -> float:
    frame = pd.read_csv(next(directory.glob("*.csv")))
    predicted = model.predict(frame[[f["name"] for f in schema["features"]]])
    return float(np.sqrt(np.mean((predicted - frame[schema["target"]]) ** 2)))


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("compare"), candidates=CANDIDATES, replace={
        'selection = "single"': 'selection = "compare"', "aws = true": "aws = false"})


def test_comparison_travels_with_the_registered_model(compared):
    state, config, _ = compared
    _, files = _registered(state, config)
    report = json.loads(files["comparison.json"])
    assert [r["name"] for r in report["candidates"]] == list(config.candidates)
    assert files["comparison.png"][:8] == b"\x89PNG\r\n\x1a\n"
    broken = next(r for r in report["candidates"] if r["name"] == "broken")
    assert broken["status"] == "Failed" and "'C' parameter of SVR" in broken["error"]


def test_registered_model_is_the_best_candidate(compared):
    state, config, _ = compared
    _, files = _registered(state, config)
    report = json.loads(files["comparison.json"])
    scores = {r["name"]: r["validation"]["rmse"] for r in report["candidates"]
              if r["status"] == "Succeeded"}
    assert set(scores) == {"svr", "ridge", "k_neighbors"}
    assert report["best"] == min(scores, key=scores.get)
    model = joblib.load(io.BytesIO(files["model.joblib"]))
    regressor = config.candidates[report["best"]]["regressor"]
    assert isinstance(model.named_steps["regressor"], train.REGRESSORS[regressor].estimator)
    validation = _split(state, _execution(state), "validation")
    assert _rmse(model, validation, config.schema()) == pytest.approx(scores[report["best"]])


def test_comparison_is_found_in_the_training_job_directory(compared):
    state, _, result = compared
    execution = _execution(state)["execution"]
    assert f"job directories: {state}" in " ".join(result.stdout.split())
    model_dir = Path(execution["JobsDir"]) / "Train" / "opt_ml" / "model"
    assert {"comparison.json", "comparison.png", "model.joblib"} <= {
        p.name for p in model_dir.iterdir()}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Two tuning runs in one state: the second on a copy of the data at another key, so no
    step is reused from the first (the copy is what changes; the search and its seed do not)."""
    directory = tmp_path_factory.mktemp("tune")
    state, config, _ = _run(directory, replace=TUNING)
    copy = f"s3://{config.local['bucket']}/{config.project}/data/rerun/{config.data_file.name}"
    LocalStore(state / "s3").put_bytes(copy, config.data_file.read_bytes())
    _run(directory, "-p", f"InputDataUrl={copy}", replace=TUNING)
    _run(directory, replace=TUNING)  # the first run's data again: its Tune step is reused
    return state, config


def _best_trial(execution: dict) -> dict:
    return execution["steps"]["Tune"]["Properties"]["TrainingJobSummaries"][0]


def test_tuning_registers_its_best_trial(tuned):
    state, config = tuned
    package, files = _registered(state, config)
    execution = _execution(state)
    trials = execution["steps"]["Tune"]["Properties"]["TrainingJobSummaries"]
    assert [t["ObjectiveStatus"] for t in trials] == ["Succeeded"] * config.tuning.max_jobs
    objectives = {t["TrainingJobName"]: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
                  for t in trials}
    best = min(objectives, key=objectives.get)
    model_url = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert f"/{best}/output/model.tar.gz" in model_url
    model = joblib.load(io.BytesIO(files["model.joblib"]))
    validation = _split(state, execution, "validation")
    assert _rmse(model, validation, config.schema()) == pytest.approx(objectives[best], abs=1e-5)


def test_tuning_is_at_least_as_good_as_the_default_hyperparameters(tuned):
    state, config = tuned
    _, files = _registered(state, config)
    execution = _execution(state)
    validation = _split(state, execution, "validation")
    default, _ = train.train(_split(state, execution, "train"), validation, config.schema(),
                             train.parse_hyperparameters(
                                 [f"--{k}={v}" for k, v in config.hyperparameters.items()]))
    tuned_model = joblib.load(io.BytesIO(files["model.joblib"]))
    schema = config.schema()
    assert _rmse(tuned_model, validation, schema) <= _rmse(default, validation, schema)


def test_same_seed_picks_the_same_best(tuned):
    state, config = tuned
    first, second, _ = _executions(state)
    assert not second["steps"]["Tune"].get("CacheHitResult"), "the second search must run"
    assert _best_trial(first)["TunedHyperParameters"] == \
        _best_trial(second)["TunedHyperParameters"]
    assert _registered(state, config, 2)[0]["ModelApprovalStatus"] == "PendingManualApproval"


def test_cached_tuning_hands_on_the_models_of_the_run_that_tuned(tuned):
    """A reused Tune step points at the first run's trials, which must still be there."""
    state, config = tuned
    first, _, third = _executions(state)
    source = third["steps"]["Tune"]["CacheHitResult"]["SourceExecutionId"]
    assert source == first["execution"]["ExecutionId"]
    assert third["steps"]["Evaluate"]["StepStatus"] == "Succeeded"
    assert _best_trial(third) == _best_trial(first)
    model_url = _registered(state, config, 3)[0]["InferenceSpecification"]["Containers"][0][
        "ModelDataUrl"]
    assert f"/{_best_trial(first)['TrainingJobName']}/output/model.tar.gz" in model_url
