import copy
import json

import pytest

from mlops_local.engine import run
from mlops_local.engine.errors import DefinitionError
from mlops_local.engine.graph import build
from tests.helpers import load


def processing(name, **extra):
    return {"Name": name, "Type": "Processing", "Arguments": {
        "AppSpecification": {"ContainerEntrypoint": ["python3", "x.py"]}, **extra}}


def test_branch_steps_are_flattened_and_ordered_after_their_dependencies():
    graph = build(load("branching"))
    assert graph.order == ["Summarize", "CheckRings", "Publish", "RingsTooHigh"]
    assert graph["Publish"].branch == ("CheckRings", True)
    assert graph["RingsTooHigh"].branch == ("CheckRings", False)
    assert graph["CheckRings"].needs == {"Summarize"}
    assert graph["Publish"].needs == {"Summarize", "CheckRings"}


def test_depends_on_orders_steps():
    graph = build(load("parallel"))
    assert graph["After"].needs == {"Left", "Right"}
    assert graph.order[-1] == "After"


def test_a_cycle_is_named_before_anything_runs(tmp_path):
    definition = {"Steps": [
        processing("A", Environment={"X": {"Get": "Steps.B.ProcessingJobName"}}),
        processing("B"),
    ]}
    definition["Steps"][1]["DependsOn"] = ["A"]
    with pytest.raises(DefinitionError, match="cycle: (A -> B -> A|B -> A -> B)"):
        run(definition, state=tmp_path)
    assert not (tmp_path / "executions").exists()


@pytest.mark.parametrize(("path", "message"), [
    ("Steps.Nope.ProcessingJobName", "missing step 'Nope'"),
    ("Parameters.Missing", "undeclared parameter 'Parameters.Missing'"),
    ("Steps.Summarize.ProcessingOutputConfig.Outputs['nope'].S3Output.S3Uri",
     "missing property .*has no item named 'nope'"),
    ("Steps.Summarize.ModelArtifacts.S3ModelArtifacts", "missing property .*'ModelArtifacts'"),
    ("Steps.Summarize.PropertyFiles.Other", "missing property .*no property file"),
    ("Execution.Tomorrow", "unknown execution variable"),
])
def test_a_missing_reference_is_named(path, message, tmp_path):
    definition = load("branching")
    publish = definition["Steps"][1]["Arguments"]["IfSteps"][0]
    publish["Arguments"]["Environment"] = {"X": {"Get": path}}
    with pytest.raises(DefinitionError, match=f"step Publish refers to {message}"):
        run(definition, state=tmp_path)
    assert not (tmp_path / "executions").exists()


def test_missing_depends_on_and_unsupported_types_are_all_listed():
    definition = {"Steps": [
        {**processing("A"), "DependsOn": ["Ghost"]},
        {"Name": "T", "Type": "EMR", "Arguments": {}},
        processing("C", Environment={"X": {"Std:Concat": ["a"]}}),
        {"Name": "D", "Type": "Condition", "Arguments": {
            "Conditions": [{"Type": "And", "Conditions": []}], "IfSteps": [], "ElseSteps": []}},
    ]}
    with pytest.raises(DefinitionError) as raised:
        build(definition)
    message = str(raised.value)
    assert "step A depends on missing step 'Ghost'" in message
    assert "step T has unsupported type 'EMR'" in message
    assert "step C uses unsupported function 'Std:Concat'" in message
    assert "unsupported condition type 'And'" in message


def test_duplicate_names_and_bad_expire_after_are_refused(tmp_path):
    with pytest.raises(DefinitionError, match="'A' is used twice"):
        build({"Steps": [processing("A"), processing("A")]})
    definition = copy.deepcopy(load("branching"))
    definition["Steps"][0]["CacheConfig"]["ExpireAfter"] = "30 days"
    with pytest.raises(DefinitionError, match="Summarize: ExpireAfter '30 days'"):
        run(definition, state=tmp_path)


def test_not_a_definition():
    with pytest.raises(DefinitionError, match="'Steps' list"):
        build(json.loads('{"Version": "2020-12-01"}'))
