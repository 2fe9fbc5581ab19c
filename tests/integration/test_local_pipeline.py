"""`mlops pipeline run` end to end on abalone: the SDK's definition run by the local engine.

Driven through the CLI as a person runs it, with its own state directory.
"""

from __future__ import annotations

import json
import tarfile

import joblib
import numpy as np
import pandas as pd
import pytest

from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore
from tests.helpers import BROKEN, run_mlops

JOB_STEPS = ("ValidateAndPreprocess", "DataQualityBaseline", "Train", "Evaluate")


mlops = run_mlops


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("mlops-state")


@pytest.fixture(scope="module")
def first_run(state):
    return mlops(state, "pipeline", "run")


@pytest.fixture(scope="module")
def second_run(state, first_run):
    return mlops(state, "pipeline", "run")


def executions(state) -> list[dict]:
    """Every execution record, oldest first (ids sort by second only, so order by start)."""
    records = [json.loads(p.read_text()) for p in (state / "executions").glob("*.json")]
    return sorted(records, key=lambda r: r["execution"]["StartTime"])


def packages(state, config) -> list[dict]:
    return LocalRegistry(state / "registry.db").list_model_packages(
        ModelPackageGroupName=config.model_package_group, MaxResults=100
    )["ModelPackageSummaryList"]


def test_run_registers_a_model_pending_approval(first_run, state, project_config):
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    assert "Succeeded" in first_run.stdout
    registered = packages(state, project_config)
    assert [(p["ModelPackageVersion"], p["ModelApprovalStatus"]) for p in registered] == [
        (1, "PendingManualApproval")]
    assert f"registered {project_config.model_package_group}/1" in first_run.stdout


def test_metric_matches_rescoring_the_saved_model(first_run, state, tmp_path, project_config):
    registry = LocalRegistry(state / "registry.db")
    package = registry.describe_model_package(f"{project_config.model_package_group}/1")
    store = LocalStore(state / "s3")
    model_tar = store.path(package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
    with tarfile.open(model_tar) as tar:
        tar.extractall(tmp_path, filter="data")
    assert (tmp_path / "code" / "inference.py").is_file()
    model = joblib.load(tmp_path / "model.joblib")
    test = pd.read_csv(store.path(package["CustomerMetadataProperties"]["TestDataUri"]))
    features = project_config.feature_names
    rescored = float(np.sqrt(np.mean(
        (model.predict(test[features]) - test[project_config.target]) ** 2)))
    evaluation = json.loads(store.path(
        package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]).read_text())
    assert evaluation["regression_metrics"]["rmse"]["value"] == pytest.approx(rescored, rel=1e-9)
    assert rescored <= project_config.threshold
    baseline = package["DriftCheckBaselines"]["ModelDataQuality"]
    statistics = json.loads(store.path(baseline["Statistics"]["S3Uri"]).read_text())
    assert [f["name"] for f in statistics["features"]] == features


def test_second_run_reuses_cached_steps(second_run, state, project_config):
    assert second_run.returncode == 0, second_run.stdout + second_run.stderr
    first, second = executions(state)[:2]
    for name in JOB_STEPS:
        step = second["steps"][name]
        assert step["StepStatus"] == "Succeeded"
        assert step["CacheHitResult"]["SourceExecutionId"] == first["execution"]["ExecutionId"]
    assert "definition reused" in second_run.stdout
    assert [p["ModelPackageVersion"] for p in packages(state, project_config)] == [1, 2]


def test_executions_and_steps_are_listed(second_run, state):
    listing = mlops(state, "pipeline", "executions")
    ids = [e["execution"]["ExecutionId"] for e in executions(state)]
    assert listing.returncode == 0 and all(i in listing.stdout for i in ids)
    steps = mlops(state, "pipeline", "steps", ids[0])
    assert steps.returncode == 0
    for name in (*JOB_STEPS, "CheckMetric", "RegisterModel"):
        assert name in steps.stdout
    unknown = mlops(state, "pipeline", "steps", "no-such-execution")
    assert unknown.returncode == 2 and "no-such-execution" in unknown.stderr


def test_unmet_threshold_fails_with_the_metric_and_registers_nothing(second_run, state,
                                                                     project_config):
    before = len(packages(state, project_config))
    result = mlops(state, "pipeline", "run", "-p", "MetricThreshold=0.5")
    assert result.returncode == 1
    assert "is above the threshold 0.5" in " ".join(result.stdout.split())
    assert len(packages(state, project_config)) == before
    latest = executions(state)[-1]
    assert latest["execution"]["PipelineExecutionStatus"] == "Failed"
    assert latest["steps"]["MetricAboveThreshold"]["StepStatus"] == "Failed"
    assert latest["steps"]["RegisterModel"]["StepStatus"] == "Skipped"


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_data_stops_at_validation(case, second_run, state, project_config, abalone_path):
    break_lines, expected = BROKEN[case]
    lines = break_lines(abalone_path.read_text().splitlines())
    uri = f"s3://mlops-local/{project_config.project}/raw/broken/{case.replace(' ', '-')}.csv"
    LocalStore(state / "s3").put_bytes(uri, ("\n".join(lines) + ("\n" if lines else "")).encode())
    before = len(packages(state, project_config))
    result = mlops(state, "pipeline", "run", "-p", f"InputDataUrl={uri}")
    assert result.returncode == 1
    latest = executions(state)[-1]
    step = latest["steps"]["ValidateAndPreprocess"]
    assert step["StepStatus"] == "Failed"
    for fragment in expected:
        assert fragment in step["FailureReason"], (fragment, step["FailureReason"])
    assert all(latest["steps"][name]["StepStatus"] == "Skipped"
               for name in ("DataQualityBaseline", "Train", "Evaluate"))
    assert len(packages(state, project_config)) == before
    outputs = LocalStore(state / "s3").list(
        f"s3://mlops-local/{project_config.project}/executions/"
        f"{latest['execution']['ExecutionId']}")
    assert outputs == [], "a failed validation must leave no outputs"
