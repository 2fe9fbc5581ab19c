"""The local run refuses what the SageMaker API would refuse: each job step's request checked
against botocore's SageMaker service model, in the engine, at build time and for a file."""

from __future__ import annotations

import json
import re

import pytest

from mlops_core import service_model
from mlops_local.engine import list_executions, run
from mlops_local.engine.expressions import Context
from model_build import definition
from tests.helpers import DEFINITIONS, load, run_mlops, stage

OPERATIONS = sorted({operation for operation, _ in service_model.STEP_OPERATIONS.values()})


@pytest.fixture
def state(tmp_path):
    stage(tmp_path)
    return tmp_path


def _fit(document: dict) -> dict:
    return document["Steps"][0]["Arguments"]


def _set(path: str, value):
    def change(document):
        *parents, last = path.split(".")
        target = _fit(document)
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value
    return change


def _delete(path: str):
    def change(document):
        *parents, last = path.split(".")
        target = _fit(document)
        for part in parents:
            target = target[part]
        del target[last]
    return change


def _role_parameter(document):
    document["Parameters"].append({"Name": "Role", "Type": "String",
                                   "DefaultValue": "arn:aws:iam::000000000000:role/test"})
    _fit(document)["RoleArn"] = {"Get": "Parameters.Role"}


# Each: how to break training.json's Fit step, parameter overrides, what the refusal says.
REFUSED = {
    "wrong type": (_set("HyperParameters.alpha", 0.5), {},
                   "HyperParameters.alpha: expected a string, got float 0.5"),
    "typed parameter at a string": (
        _set("HyperParameters.epochs", {"Get": "Parameters.Epochs"}), {},
        "HyperParameters.epochs: expected a string, got the Integer parameter Epochs"),
    "missing required member": (_delete("OutputDataConfig.S3OutputPath"), {},
                                "OutputDataConfig.S3OutputPath: required member missing"),
    "below the minimum": (_set("StoppingCondition.MaxRuntimeInSeconds", 0), {},
                          "StoppingCondition.MaxRuntimeInSeconds: 0 is below the minimum 1"),
    "too long a name": (_set("InputDataConfig.0.ChannelName", "c" * 65), {},
                        "InputDataConfig[0].ChannelName: 'ccccc"),
    "bad enum": (_set("InputDataConfig.0.InputMode", "Stream"), {},
                 "InputDataConfig[0].InputMode: 'Stream' is not one of Pipe, File, FastFile"),
    "pattern mismatch": (_set("RoleArn", "arn:aws:iam::123:role/test"), {},
                         "RoleArn: 'arn:aws:iam::123:role/test' does not match the pattern"),
    "unknown member": (_set("Hyperparameters", {}), {},
                       "Hyperparameters: unknown member of CreateTrainingJobRequest"),
    "parameter value": (_role_parameter, {"Role": "my-role"},
                        "RoleArn: 'my-role' is 7 characters long, at least 20 needed "
                        "(from the String parameter Role)"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_engine_refuses_a_step_the_api_would_refuse_before_its_job(state, case):
    change, parameters, expected = REFUSED[case]
    document = load("training")
    change(document)
    execution = run(document, parameters, state=state)
    fit = next(s for s in execution["Steps"] if s["StepName"] == "Fit")
    assert fit["StepStatus"] == "Failed"
    assert fit["FailureReason"].startswith(
        "SageMaker would refuse this CreateTrainingJob request: ")
    assert expected in fit["FailureReason"]
    assert not (state / "jobs" / execution["ExecutionId"] / "Fit").exists()


def test_the_build_time_check_names_the_same_members():
    document = load("training")
    _set("HyperParameters.epochs", {"Get": "Parameters.Epochs"})(document)
    _set("InputDataConfig.0.InputMode", {"Get": "Parameters.Approval"})(document)
    with pytest.raises(definition.DefinitionRefused) as refused:
        definition.check(document, "the test definition")
    assert str(refused.value).splitlines() == [
        "SageMaker would refuse the test definition:",
        "  step Fit: HyperParameters.epochs: expected a string, got the Integer parameter Epochs",
        "  step Fit: InputDataConfig[0].InputMode: 'PendingManualApproval' is not one of Pipe, "
        "File, FastFile (the default of the String parameter Approval)",
    ]


@pytest.mark.parametrize("name", ["training", "tuning", "branching", "parallel"])
def test_the_hand_written_definitions_pass(name):
    assert service_model.definition_problems(load(name)) == []


def test_steps_lack_only_what_pipelines_fills_in():
    """A step gives no job name (SageMaker Pipelines names each execution's job), but a
    request outside a pipeline must."""
    arguments = _fit(load("training"))
    resolved = {**arguments, "HyperParameters": {"epochs": "3", "alpha": "0.5"}}
    parameters = {"Epochs": ("Integer", 3), "Alpha": ("Float", 0.5), "Approval": ("String", "")}
    assert service_model.step_problems("Training", arguments, parameters, resolved) == []
    assert service_model.request_problems("CreateTrainingJob", resolved) == [
        "TrainingJobName: required member missing"]


def test_a_null_member_is_unset_and_map_keys_are_checked():
    request = {"ModelName": "m", "ExecutionRoleArn": None,
               "PrimaryContainer": {"Environment": {"k" * 1025: "v", "1ok": "v"}}}
    problems = service_model.request_problems("CreateModel", request)
    assert len(problems) == 2, problems
    assert problems[0].startswith("PrimaryContainer.Environment key 'kkkk")
    assert problems[0].endswith("is 1025 characters long, at most 1024 allowed")
    assert problems[1].startswith("PrimaryContainer.Environment key '1ok': '1ok' does not match")


def test_every_pattern_of_the_checked_operations_translates():
    patterns = set()

    def collect(shape, seen=()):
        if shape.name in seen:
            return
        if shape.metadata.get("pattern"):
            patterns.add(shape.metadata["pattern"])
        children = {"structure": lambda: shape.members.values(), "list": lambda: [shape.member],
                    "map": lambda: [shape.key, shape.value]}.get(shape.type_name, list)()
        for child in children:
            collect(child, (*seen, shape.name))

    for operation in OPERATIONS:
        collect(service_model.input_shape(operation))
    assert patterns
    assert [p for p in sorted(patterns) if service_model.java_pattern(p) is None] == []


@pytest.mark.parametrize("value, accepted", [
    ("s3://bucket/abalone/executions/1/preprocess/test/test.csv", True),
    ("Données 2024", True),
    ("a,b", False),
])
def test_java_unicode_classes_are_translated(value, accepted):
    shape = service_model.input_shape("CreateModelPackage").members[
        "CustomerMetadataProperties"].value
    assert bool(service_model.java_pattern(shape.metadata["pattern"]).fullmatch(value)) is accepted


def test_a_std_join_of_a_float_parameter_is_its_text():
    context = Context(parameters={"C": 20.0, "N": 3}, execution={}, property_files={},
                      store=None)
    joined = {"C": {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.C"}]}},
              "N": {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.N"}]}}}
    assert context.resolve(joined) == {"C": "20.0", "N": "3"}


# ---------------------------------------------------------------- mlops pipeline run --definition

def test_cli_runs_a_definition_file(state):
    result = run_mlops(state, "pipeline", "run", "--definition",
                       str(DEFINITIONS / "training.json"), "-p", "Epochs=2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"execution \S+: Succeeded", result.stdout)
    executions = list_executions("training", state=state)  # a file runs as its name
    assert [e["PipelineExecutionStatus"] for e in executions] == ["Succeeded"]


def _refused_training() -> dict:
    document = load("training")
    _set("HyperParameters.epochs", {"Get": "Parameters.Epochs"})(document)
    return document


@pytest.mark.parametrize("document, expected", [
    (lambda: "{", "is not a JSON pipeline definition"),
    (lambda: {"Version": "2020-12-01"},
     "a pipeline definition is a JSON object with a 'Steps' list"),
    (_refused_training,
     "step Fit: HyperParameters.epochs: expected a string, got the Integer parameter Epochs"),
])
def test_cli_refuses_a_bad_definition_file_with_one_error(state, tmp_path, document, expected):
    content = document()
    path = tmp_path / "definition.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    result = run_mlops(state, "pipeline", "run", "--definition", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "executions").exists(), "nothing runs"
