import json
import tarfile

import pytest

from mlops_local.engine import run
from mlops_local.registry import LocalRegistry
from tests.helpers import load, stage


@pytest.fixture
def state(tmp_path):
    stage(tmp_path)
    return tmp_path


def step(execution: dict, name: str) -> dict:
    return next(s for s in execution["Steps"] if s["StepName"] == name)


def test_training_follows_the_container_contract_and_registers(state):
    execution = run(load("training"), {"Epochs": "4"}, pipeline_name="fit", state=state)
    assert execution["PipelineExecutionStatus"] == "Succeeded", execution["FailureReason"]
    fit = step(execution, "Fit")["Properties"]
    job = fit["TrainingJobName"]
    model_uri = f"s3://test/models/{job}/output/model.tar.gz"
    assert fit["ModelArtifacts"]["S3ModelArtifacts"] == model_uri
    with tarfile.open(state / "s3" / model_uri.removeprefix("s3://")) as archive:
        model = json.load(archive.extractfile("model.json"))
    assert (model["epochs"], model["alpha"], model["hp_epochs"]) == (4, 0.5, "4")
    assert model["columns"] == ["length", "diameter"] and model["note"] == "plain text"
    assert model["hps"] == {"epochs": 4, "alpha": 0.5, "columns": ["length", "diameter"],
                            "note": "plain text"}
    assert model["channels"] == ["train", "code", "sm_drivers"]
    assert model["cwd"].endswith("opt_ml/input/data/code") and model["job"] == job
    (metric,) = fit["FinalMetricDataList"]
    assert metric["MetricName"] == "train:mae" and metric["Value"] > 0

    registered = step(execution, "Register")["Properties"]
    package = LocalRegistry(state / "registry.db").describe_model_package(
        registered["ModelPackageArn"])
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == model_uri
    assert package["CustomerMetadataProperties"] == {"mae": str(metric["Value"]), "job": job}
    assert package["ModelApprovalStatus"] == "PendingManualApproval"


def test_training_failure_reads_the_failure_file(state):
    execution = run(load("training"), {"Epochs": 0}, pipeline_name="fit", state=state)
    fit = step(execution, "Fit")
    assert fit["StepStatus"] == "Failed"
    assert fit["FailureReason"].startswith("epochs must be positive, got 0")
    assert step(execution, "Register")["StepStatus"] == "Skipped"
    assert not (state / "s3" / "test" / "models").exists()
    assert not LocalRegistry(state / "registry.db").list_model_packages(
        ModelPackageGroupName="test-models")["ModelPackageSummaryList"]


def test_cached_training_keeps_the_first_model(state):
    first = run(load("training"), pipeline_name="fit", state=state)
    second = run(load("training"), {"Approval": "Approved"}, pipeline_name="fit", state=state)
    assert step(second, "Fit")["CacheHitResult"]["SourceExecutionId"] == first["ExecutionId"]
    model = step(first, "Fit")["Properties"]["ModelArtifacts"]
    assert step(second, "Fit")["Properties"]["ModelArtifacts"] == model
    packages = LocalRegistry(state / "registry.db").list_model_packages(
        ModelPackageGroupName="test-models", SortOrder="Descending")["ModelPackageSummaryList"]
    assert [p["ModelApprovalStatus"] for p in packages] == ["Approved", "PendingManualApproval"]
