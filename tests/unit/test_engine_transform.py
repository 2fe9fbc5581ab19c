"""The engine's Transform step: a registered model package scores CSV rows with its handlers.

The definition below is what `model_deploy.batch.get_batch_pipeline` emits (CreateModel from
the package, then the transform); tests/integration/test_batch.py runs the SDK-built one.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile

import joblib
import numpy as np
import pandas as pd
import pytest

from mlops_core import config
from mlops_local.engine import runner, transform
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore
from tests.helpers import build_model_dir

BUCKET = "mlops-test"
OUTPUT = f"s3://{BUCKET}/abalone/batch/output"


def batch_definition(**transform) -> dict:
    arguments = {
        "ModelName": {"Get": "Steps.CreateModel.ModelName"},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                            "S3Uri": {"Get": "Parameters.InputDataUrl"}}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {
            "S3OutputPath": {"Std:Join": {"On": "/", "Values": [
                OUTPUT, {"Get": "Execution.PipelineExecutionId"}]}},
            "Accept": "text/csv",
            "AssembleWith": "Line",
        },
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
        "DataProcessing": {"JoinSource": "Input"},
    }
    for key, value in transform.items():
        arguments[key] = {**arguments[key], **value} if isinstance(value, dict) else value
    return {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "ModelPackageArn", "Type": "String"},
                       {"Name": "InputDataUrl", "Type": "String"}],
        "Steps": [
            {"Name": "CreateModel", "Type": "Model", "Arguments": {
                "ExecutionRoleArn": "arn:aws:iam::000000000000:role/mlops-local",
                "Containers": [{"ModelPackageName": {"Get": "Parameters.ModelPackageArn"}}]}},
            {"Name": "BatchTransform", "Type": "Transform", "Arguments": arguments},
        ],
    }


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(model.tar.gz as training writes it, the fitted pipeline, feature rows as CSV lines)."""
    root = tmp_path_factory.mktemp("transform-model")
    model_dir, _, _ = build_model_dir(root / "model")
    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in model_dir.iterdir():
            tar.add(path, arcname=path.name)
    cfg = config.load()
    rows = pd.read_csv(cfg.data_file)[cfg.feature_names]
    return archive, joblib.load(model_dir / "model.joblib"), rows


@pytest.fixture
def batch(tmp_path, model):
    """Register the model, put `lines` under an input prefix, run the batch definition."""
    archive, _, _ = model
    store = LocalStore(tmp_path / "s3")
    model_data = store.put_file(archive, f"s3://{BUCKET}/abalone/models/model.tar.gz")
    arn = LocalRegistry(tmp_path / "registry.db").create_model_package(
        ModelPackageGroupName="abalone-models", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": "sklearn", "ModelDataUrl": model_data}]},
    )["ModelPackageArn"]

    def run(files: dict[str, list[str]], definition: dict | None = None):
        prefix = f"s3://{BUCKET}/abalone/batch/input/"
        for name, lines in files.items():
            store.put_bytes(prefix + name, "".join(line + "\n" for line in lines).encode())
        execution = runner.run(definition or batch_definition(),
                               {"ModelPackageArn": arn, "InputDataUrl": prefix},
                               pipeline_name="abalone-batch", state=tmp_path)
        step = next(s for s in execution["Steps"] if s["StepName"] == "BatchTransform")
        return execution, step, store

    return run


def csv_lines(frame: pd.DataFrame) -> list[str]:
    return frame.to_csv(header=False, index=False).splitlines()


def read(store: LocalStore, uri: str) -> list[str]:
    return store.path(uri).read_text().splitlines()


def test_good_and_bad_rows_add_up_and_bad_rows_are_named(model, batch):
    _, pipeline, rows = model
    lines = csv_lines(rows.iloc[:300])
    lines[9] = "X," + lines[9].split(",", 1)[1]
    lines[120] = "M,abc,0.3,0.1,0.2,0.1,0.05,0.1"
    lines[200] = ""
    lines[250] = "M,0.3"
    execution, step, store = batch({"rows.csv": lines})

    assert execution["PipelineExecutionStatus"] == "Succeeded", execution.get("FailureReason")
    output = read(store, f"{step['Outputs'][0]}/rows.csv.out")
    errors = [json.loads(e) for e in read(store, f"{step['Outputs'][0]}/rows.csv.errors.jsonl")]
    assert len(output) + len(errors) == len(lines) == 300
    assert step["Metadata"]["Rows"]["Scored"] == 296
    assert step["Metadata"]["Rows"]["Bad"] == 4
    assert [e["line"] for e in errors] == [10, 121, 201, 251]
    assert [e["row"] for e in errors] == [lines[9], lines[120], lines[200], lines[250]]
    assert "'X' is an unknown category" in errors[0]["message"]
    assert "'length': 'abc' is not a number" in errors[1]["message"]
    assert errors[2]["message"] == "empty line"
    assert "expected 8 columns" in errors[3]["message"]

    good = [i for i in range(300) if i not in (9, 120, 200, 250)]
    # JoinSource Input: each output line is its input row, then the prediction.
    assert [line.rsplit(",", 1)[0] for line in output] == [lines[i] for i in good]
    expected = pipeline.predict(rows.iloc[good])
    np.testing.assert_allclose([float(line.rsplit(",", 1)[1]) for line in output], expected)


@pytest.mark.parametrize("concurrent", [1, 2])
def test_mini_batches_keep_every_row_in_order(model, batch, concurrent):
    """About 2.6 MB of rows at MaxPayloadInMB 1: three requests, bad rows in two of them,
    scored one at a time or by two worker processes at once (MaxConcurrentTransforms)."""
    _, pipeline, rows = model
    many = pd.concat([rows] * 15, ignore_index=True)
    lines = csv_lines(many)
    bad = [5, 30_000, len(lines) - 1]
    for index in bad:
        lines[index] = "?," + lines[index].split(",", 1)[1]
    execution, step, store = batch({"many.csv": lines}, batch_definition(
        MaxPayloadInMB=1, MaxConcurrentTransforms=concurrent))

    assert execution["PipelineExecutionStatus"] == "Succeeded", execution.get("FailureReason")
    output = read(store, f"{step['Outputs'][0]}/many.csv.out")
    errors = [json.loads(e) for e in read(store, f"{step['Outputs'][0]}/many.csv.errors.jsonl")]
    assert [e["line"] for e in errors] == [i + 1 for i in bad]
    assert len(output) + len(errors) == len(lines)
    good = many.drop(index=bad)
    assert [line.rsplit(",", 1)[0] for line in output] == csv_lines(good)
    np.testing.assert_allclose([float(line.rsplit(",", 1)[1]) for line in output],
                               pipeline.predict(good))


def test_every_object_under_the_prefix_is_scored_beside_its_name(model, batch):
    _, _, rows = model
    execution, step, store = batch({"a.csv": csv_lines(rows.iloc[:5]),
                                    "day/b.csv": csv_lines(rows.iloc[5:12])})

    assert execution["PipelineExecutionStatus"] == "Succeeded", execution.get("FailureReason")
    assert len(read(store, f"{step['Outputs'][0]}/a.csv.out")) == 5
    assert len(read(store, f"{step['Outputs'][0]}/day/b.csv.out")) == 7
    assert step["Metadata"]["Rows"] == {"Scored": 12, "Bad": 0, "ErrorFiles": [],
                                        "FirstErrors": []}


def test_all_rows_refused_fails_the_step_with_the_first_messages(batch):
    execution, step, store = batch({"bad.csv": ["sex,length", "M,x,1,1,1,1,1,1"]})

    assert execution["PipelineExecutionStatus"] == "Failed"
    reason = step["FailureReason"]
    assert "no row could be scored (2 refused)" in reason
    assert "bad.csv line 1: expected 8 columns" in reason
    assert "bad.csv line 2: column 'length': 'x' is not a number" in reason
    assert not store.path(OUTPUT).exists()


def test_settings_the_engine_does_not_run_are_refused_by_name(batch, model):
    _, _, rows = model
    definition = batch_definition(TransformInput={"SplitType": "None"},
                                  DataProcessing={"JoinSource": "Input", "InputFilter": "$[1:]"})
    execution, step, _ = batch({"rows.csv": csv_lines(rows.iloc[:3])}, definition)

    assert execution["PipelineExecutionStatus"] == "Failed"
    assert "SplitType 'None'" in step["FailureReason"]
    assert "InputFilter '$[1:]'" in step["FailureReason"]


# Seven ways a row goes bad, each made from a good row's cells (sex first, then 7 numbers).
BAD_KINDS = {
    "unterminated quote": (lambda c: ",".join(c[:-1]) + ',"' + c[-1], "unterminated quote"),
    "too few columns": (lambda c: ",".join(c[:-2]), "expected 8 columns"),
    "too many columns": (lambda c: ",".join(c + ["0.1"]), "expected 8 columns"),
    "text in a numeric column": (lambda c: ",".join([c[0], "long", *c[2:]]),
                                 "column 'length': 'long' is not a number"),
    "unknown category": (lambda c: ",".join(["Q", *c[1:]]), "'Q' is an unknown category"),
    "empty field": (lambda c: ",".join([*c[:3], "", *c[4:]]),
                    "column 'height': '' is a missing value"),
    "NaN": (lambda c: ",".join([*c[:5], "NaN", *c[6:]]),
            "column 'shucked_weight': 'NaN' is a missing value"),
}


def test_each_line_is_one_record_and_every_bad_line_is_reported(model, batch):
    """A quote cannot carry a field onto the next line: the pair of lines that once made the
    model answer 10 lines for 11 rows is two refused lines, among 10% bad rows of 7 kinds."""
    _, pipeline, rows = model
    lines = csv_lines(rows.iloc[:200])
    lines[40:42] = ['M,0.455,0.365,0.095,0.514,0.2245,0.101,"0.15', '"']
    expected = {41: "unterminated quote", 42: "unterminated quote"}
    kinds = list(BAD_KINDS.values())
    for count, index in enumerate(range(3, 200, 10)):  # 20 rows, every kind at least twice
        make, message = kinds[count % len(kinds)]
        lines[index] = make(lines[index].split(","))
        expected[index + 1] = message
    assert len(lines) == 200 and len(expected) == 22

    execution, step, store = batch({"rows.csv": lines})

    assert execution["PipelineExecutionStatus"] == "Succeeded", execution.get("FailureReason")
    text = store.path(f"{step['Outputs'][0]}/rows.csv.out").read_text()
    output = list(csv.reader(io.StringIO(text), strict=True))
    errors = [json.loads(e) for e in read(store, f"{step['Outputs'][0]}/rows.csv.errors.jsonl")]
    assert len(output) + len(errors) == len(text.splitlines()) + len(errors) == len(lines)
    assert step["Metadata"]["Rows"]["Scored"] == len(output) == 200 - len(expected)
    assert step["Metadata"]["Rows"]["Bad"] == len(errors) == len(expected)
    assert [e["line"] for e in errors] == sorted(expected)
    for error in errors:
        assert error["row"] == lines[error["line"] - 1]
        assert expected[error["line"]] in error["message"], error
    assert all(len(record) == 9 for record in output)  # 8 features, then the prediction

    good = [i for i in range(200) if i + 1 not in expected]
    assert [",".join(record[:-1]) for record in output] == [lines[i] for i in good]
    np.testing.assert_allclose([float(record[-1]) for record in output],
                               pipeline.predict(rows.iloc[good]))


def test_a_plain_object_sent_whole_names_its_bad_rows_as_one_read_line_by_line(model, batch):
    """With no quote, CR or blank line an object goes to the model as it is; one blank line
    more makes the engine take its lines one by one. Both give the same answers and errors."""
    _, _, rows = model
    lines = csv_lines(rows.iloc[:120])
    kinds = [kind for name, kind in BAD_KINDS.items() if "quote" not in name]
    for count, index in enumerate(range(5, 120, 10)):
        make, _ = kinds[count % len(kinds)]
        lines[index] = make(lines[index].split(","))
    settings = transform.Settings("s3://bucket/out", transform.MB, transform.CSV, True)
    results = []
    for spelled in (lines, [*lines, "   "]):
        whole = transform._as_one_batch((1, "".join(f"{line}\n" for line in spelled).encode()),
                                        settings)
        assert (whole is None) is (spelled is not lines)
        _, step, store = batch({"rows.csv": spelled})
        errors = [json.loads(e) for e in read(store, f"{step['Outputs'][0]}/rows.csv.errors.jsonl")]
        results.append((read(store, f"{step['Outputs'][0]}/rows.csv.out"),
                        [e for e in errors if e["line"] <= len(lines)]))
    assert results[0] == results[1]
    assert [e["line"] for e in results[0][1]] == list(range(6, 121, 10))
