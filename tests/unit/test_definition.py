"""The pipeline definition: its steps, their wiring, and how it is built (offline, repeatably)."""

from __future__ import annotations

import json
import re

import botocore.httpsession
import pytest

from mlops import config as project_config
from mlops import targets
from mlops.store import LocalStore
from model_build import definition


class NetworkUsed(AssertionError):
    pass


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two builds of the local definition, each with every HTTP request from botocore refused."""
    patch = pytest.MonkeyPatch()
    patch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    patch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path_factory.mktemp("aws") / "none"))

    def refuse(self, request):
        raise NetworkUsed(f"network call while building: {request.method} {request.url}")

    patch.setattr(botocore.httpsession.URLLib3Session, "send", refuse)
    config = project_config.load()
    store = LocalStore(tmp_path_factory.mktemp("store"))
    target = targets.local(config, store)
    try:
        first, second = definition.build(config, target), definition.build(config, target)
    finally:
        patch.undo()
    return config, target, store, first, second


@pytest.fixture(scope="module")
def steps(built):
    doc = json.loads(built[3])
    flat = {}

    def collect(items):
        for step in items:
            flat[step["Name"]] = step
            collect(step.get("Arguments", {}).get("IfSteps", []))
            collect(step.get("Arguments", {}).get("ElseSteps", []))

    collect(doc["Steps"])
    return flat


def test_build_is_offline_and_byte_identical(built):
    _, _, _, first, second = built
    assert first == second


def test_code_is_uploaded_to_the_store_by_content(built):
    config, target, store, text, _ = built
    uris = set(re.findall(rf's3://{target.bucket}/{config.project}/code/[0-9a-f]{{16}}[^"]*', text))
    assert uris, "no code URI in the definition"
    for uri in uris:
        assert store.exists(uri), uri


def test_steps_and_types(steps):
    assert {name: step["Type"] for name, step in steps.items()} == {
        "ValidateAndPreprocess": "Processing",
        "DataQualityBaseline": "Processing",
        "Train": "Training",
        "Evaluate": "Processing",
        "CheckMetric": "Condition",
        "RegisterModel": "RegisterModel",
        "MetricAboveThreshold": "Fail",
    }


def _gets(value) -> set[str]:
    return set(re.findall(r'"Get": "([^"]+)"', json.dumps(value)))


def test_property_references_connect_the_steps(steps):
    train_inputs = _gets(steps["Train"]["Arguments"]["InputDataConfig"])
    assert "Steps.ValidateAndPreprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri" \
        in train_inputs
    baseline_inputs = _gets(steps["DataQualityBaseline"]["Arguments"]["ProcessingInputs"])
    assert any(ref.startswith("Steps.ValidateAndPreprocess.") for ref in baseline_inputs)
    assert not any(ref.startswith("Steps.Train.") for ref in baseline_inputs), \
        "the baseline must run in parallel with training, not after it"
    evaluate_inputs = _gets(steps["Evaluate"]["Arguments"]["ProcessingInputs"])
    assert "Steps.Train.ModelArtifacts.S3ModelArtifacts" in evaluate_inputs
    condition = steps["CheckMetric"]["Arguments"]["Conditions"][0]
    assert condition["LeftValue"]["Std:JsonGet"]["PropertyFile"] == {
        "Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"}
    assert condition["RightValue"] == {"Get": "Parameters.MetricThreshold"}
    register = steps["RegisterModel"]["Arguments"]
    container = register["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataUrl"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert register["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert "Steps.DataQualityBaseline.ProcessingOutputConfig.Outputs['baseline'].S3Output.S3Uri" \
        in _gets(register["DriftCheckBaselines"])
    assert "Steps.Evaluate.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri" \
        in _gets(register["ModelMetrics"]["ModelQuality"])


def test_parameters_have_defaults(built):
    config = built[0]
    parameters = {p["Name"]: p for p in json.loads(built[3])["Parameters"]}
    for name in ("InputDataUrl", "ProcessingInstanceType", "ProcessingInstanceCount",
                 "TrainingInstanceType", "MetricThreshold", "ModelApprovalStatus"):
        assert "DefaultValue" in parameters[name], name
    assert parameters["MetricThreshold"]["DefaultValue"] == config.threshold
    assert parameters["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    for hyperparameter, value in config.hyperparameters.items():
        name = "".join(part[:1].upper() + part[1:] for part in hyperparameter.split("_"))
        assert parameters[name]["DefaultValue"] == value


def test_no_account_but_the_configured_one(built):
    """ARNs name only the configured role's account (image URIs name AWS's own registries)."""
    _, target, _, text, _ = built
    account = target.role.split(":")[4]
    assert set(re.findall(r"arn:aws:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):", text)) == {account}


def test_outputs_are_per_execution(steps):
    """Cached steps reuse outputs of earlier executions, so no execution may overwrite them."""
    for name in ("ValidateAndPreprocess", "DataQualityBaseline", "Evaluate"):
        for output in steps[name]["Arguments"]["ProcessingOutputConfig"]["Outputs"]:
            assert "Execution.PipelineExecutionId" in json.dumps(output["S3Output"]["S3Uri"])
