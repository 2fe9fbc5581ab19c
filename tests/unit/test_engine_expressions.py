import json

import pytest

from mlops_local.engine.errors import DefinitionError, EngineError
from mlops_local.engine.expressions import Context, parse_path, references
from mlops_local.store import LocalStore

PROPERTIES = {
    "ProcessingOutputConfig": {"Outputs": [
        {"OutputName": "train", "S3Output": {"S3Uri": "s3://b/train"}},
        {"OutputName": "report", "S3Output": {"S3Uri": "s3://b/report"}},
    ]},
    "FinalMetricDataList": [{"MetricName": "val:rmse", "Value": 2.5}],
}


@pytest.fixture
def context(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("s3://b/report/report.json",
                    json.dumps({"metrics": {"rmse": {"value": 2.25}}, "rows": [3, 4]}).encode())
    ctx = Context(
        parameters={"Threshold": 2.5, "Name": "abalone", "Flag": True},
        execution={"PipelineExecutionId": "exec-1"},
        property_files={"Prep": {"Report": {"PropertyFileName": "Report",
                                            "OutputName": "report", "FilePath": "report.json"}}},
        store=store,
    )
    ctx.set_properties("Prep", PROPERTIES)
    return ctx


def test_parse_path_splits_attributes_and_indexes():
    assert parse_path("Steps.A.Outputs['train'].S3Output.S3Uri") == [
        "Steps", "A", "Outputs", "train", "S3Output", "S3Uri"]
    assert parse_path('Steps.A.List[2].X["y z"]') == ["Steps", "A", "List", 2, "X", "y z"]


def test_get_parameter_execution_variable_and_named_list_item(context):
    assert context.resolve({"Get": "Parameters.Threshold"}) == 2.5
    assert context.resolve({"Get": "Execution.PipelineExecutionId"}) == "exec-1"
    get = {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}
    assert context.resolve(get) == "s3://b/train"
    assert context.resolve({"Get": "Steps.Prep.FinalMetricDataList['val:rmse'].Value"}) == 2.5
    assert context.resolve({"Get": "Steps.Prep.FinalMetricDataList[0].MetricName"}) == "val:rmse"


def test_join_writes_numbers_and_booleans_as_text(context):
    join = {"Std:Join": {"On": "/", "Values": [
        "s3://b", {"Get": "Execution.PipelineExecutionId"}, {"Get": "Parameters.Threshold"},
        {"Get": "Parameters.Flag"}, 7]}}
    assert context.resolve(join) == "s3://b/exec-1/2.5/true/7"


def test_json_get_reads_a_property_file_and_an_s3_uri(context):
    by_file = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Prep.PropertyFiles.Report"},
                               "Path": "metrics.rmse.value"}}
    assert context.resolve(by_file) == 2.25
    by_uri = {"Std:JsonGet": {"S3Uri": {"Std:Join": {"On": "/", "Values": [
        {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['report'].S3Output.S3Uri"},
        "report.json"]}}, "Path": "rows[1]"}}
    assert context.resolve(by_uri) == 4


def test_nested_values_resolve_inside_dicts_and_lists(context):
    value = {"A": [{"Get": "Parameters.Name"}, 1], "B": {"C": {"Get": "Parameters.Flag"}}}
    assert context.resolve(value) == {"A": ["abalone", 1], "B": {"C": True}}


def test_json_get_missing_path_names_the_file(context):
    missing = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Prep.PropertyFiles.Report"},
                               "Path": "metrics.mae.value"}}
    with pytest.raises(EngineError, match="metrics.mae.value.*Report of step Prep.*'mae'"):
        context.resolve(missing)


def test_json_get_missing_file_is_a_clear_error(context):
    missing = {"Std:JsonGet": {"S3Uri": "s3://b/none.json", "Path": "a"}}
    with pytest.raises(EngineError, match="s3://b/none.json does not exist"):
        context.resolve(missing)


def test_unknown_function_is_refused(context):
    with pytest.raises(DefinitionError, match="Std:Concat"):
        context.resolve({"Std:Concat": ["a", "b"]})


def test_references_finds_gets_inside_functions():
    value = {"X": {"Std:Join": {"On": "", "Values": [
        {"Get": "Parameters.A"},
        {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.S.PropertyFiles.F"}, "Path": "p"}}]}}}
    assert sorted(references(value)) == ["Parameters.A", "Steps.S.PropertyFiles.F"]
