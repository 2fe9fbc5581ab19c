"""The model-quality check on synthetic capture and ground-truth files."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from mlops_core.config import ConfigError, Monitoring
from model_deploy.monitoring import drift_check, model_quality
from tests.helpers import variant

TEST = {"rmse": 2.0, "mae": 1.5, "r2": 0.5}
HOUR = "2026/11/23/15"


def capture_line(request: str, predictions: list[float], json_body: bool = False,
                 when: str = "2026-11-23T15:10:00.000Z") -> str:
    if json_body:
        output = {"observedContentType": "application/json", "mode": "OUTPUT",
                  "data": json.dumps({"predictions": predictions}), "encoding": "JSON"}
    else:
        output = {"observedContentType": "text/csv", "mode": "OUTPUT",
                  "data": "".join(f"{p!r}\n" for p in predictions), "encoding": "CSV"}
    return json.dumps({
        "captureData": {"endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                                          "data": "M,1\n" * len(predictions),
                                          "encoding": "CSV"},
                        "endpointOutput": output},
        "eventMetadata": {"eventId": f"event-{request}", "inferenceId": request,
                          "inferenceTime": when},
        "eventVersion": "0"})


def truth_line(request: str, labels: list[float]) -> str:
    return json.dumps({"groundTruthData": {"data": "\n".join(f"{v!r}" for v in labels),
                                           "encoding": "CSV"},
                       "eventMetadata": {"eventId": request}, "eventVersion": "0"})


def write(root, hour: str, lines: list[str]):
    folder = root / hour
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part.jsonl").write_text("\n".join(lines) + "\n")
    return drift_check.DirectorySource(root)


@pytest.fixture
def predictions() -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    return {f"id-{i}": [float(v) for v in rng.uniform(5, 15, size=1 + i % 3)]
            for i in range(200)}


def check(tmp_path, capture: dict, labels: dict, **options):
    lines = [capture_line(r, p, json_body=i % 2 == 1) for i, (r, p) in enumerate(capture.items())]
    source = write(tmp_path / "capture", HOUR, lines)
    truth = write(tmp_path / "truth", "2026/11/24/09",
                  [truth_line(r, v) for r, v in labels.items()])
    return model_quality.run(source, truth, TEST, tmp_path / "out", **options)


def test_labels_equal_to_the_predictions_give_no_violation(tmp_path, predictions):
    result = check(tmp_path, predictions, predictions)
    assert result.verdict == "ok" and result.violations == []
    assert result.metrics["rmse"] == pytest.approx(0, abs=1e-9)
    assert result.counts["rows_compared"] == sum(len(v) for v in predictions.values())
    written = json.loads((tmp_path / "out" / "model_quality.json").read_text())
    assert written["verdict"] == "ok"
    assert json.loads((tmp_path / "out" / "constraint_violations.json").read_text()) == {
        "violations": []}


def test_labels_shifted_by_three_test_rmse_give_a_violation(tmp_path, predictions):
    shifted = {r: [v + 3 * TEST["rmse"] for v in values] for r, values in predictions.items()}
    sent = []
    result = check(tmp_path, predictions, shifted, metrics_sink=sent.extend)
    assert result.verdict == "violation"
    assert result.metrics["rmse"] == pytest.approx(6.0)
    assert result.rmse_threshold == pytest.approx(1.2 * TEST["rmse"])
    (violation,) = result.violations
    assert violation["metric_name"] == "rmse"
    assert violation["constraint_check_type"] == "GreaterThanThreshold"
    metrics = {d["MetricName"]: d["Value"] for d in sent}
    assert metrics[model_quality.VIOLATIONS_METRIC] == 1
    assert metrics["rmse"] == pytest.approx(6.0)


def test_the_tolerance_sets_the_threshold(tmp_path, predictions):
    shifted = {r: [v + 3 * TEST["rmse"] for v in values] for r, values in predictions.items()}
    assert check(tmp_path, predictions, shifted, rmse_tolerance=3.5).verdict == "ok"
    with pytest.raises(model_quality.ModelQualityError, match="above 0"):
        check(tmp_path, predictions, shifted, rmse_tolerance=0)


def test_records_without_ground_truth_are_counted_not_guessed(tmp_path, predictions):
    ids = list(predictions)
    labelled = {r: predictions[r] for r in ids[:50]}
    labelled["never-captured"] = [9.0]
    labelled[ids[50]] = [1.0] * (len(predictions[ids[50]]) + 1)  # one label too many
    result = check(tmp_path, predictions, labelled)
    counts = result.counts
    assert counts["requests"] == 200
    assert counts["requests_with_ground_truth"] == 50
    assert counts["requests_without_ground_truth"] == 149
    assert counts["requests_with_mismatched_labels"] == 1
    assert counts["labels_without_prediction"] == 1
    assert counts["rows_compared"] == sum(len(predictions[r]) for r in ids[:50])
    assert result.verdict == "ok"


def test_no_ground_truth_is_not_a_verdict(tmp_path, predictions):
    result = check(tmp_path, predictions, {})
    assert result.verdict == "not compared"
    assert result.metrics["rmse"] is None
    assert result.counts["requests_without_ground_truth"] == 200


def test_the_window_keeps_out_requests_and_says_where_their_labels_went(tmp_path):
    lines = [capture_line("early", [5.0], when="2026-11-23T13:00:00.000Z"),
             capture_line("inside", [5.0], when="2026-11-23T15:10:00.000Z")]
    source = write(tmp_path / "capture", HOUR, lines)
    truth = write(tmp_path / "truth", "2026/11/23/16",
                  [truth_line("early", [50.0]), truth_line("inside", [5.0])])
    window = drift_check.Window(datetime(2026, 11, 23, 15, tzinfo=UTC))
    result = model_quality.run(source, truth, TEST, None, window)
    assert result.verdict == "ok"
    assert result.counts["labels_outside_window"] == 1
    assert result.counts["rows_compared"] == 1


def test_invalid_lines_are_counted_and_the_latest_label_wins(tmp_path):
    source = write(tmp_path / "capture", HOUR, [capture_line("a", [5.0]), "not json"])
    (tmp_path / "truth" / "2026/11/24/09").mkdir(parents=True)
    (tmp_path / "truth" / "2026/11/24/09" / "a.jsonl").write_text(
        truth_line("a", [50.0]) + "\n{\"groundTruthData\": {}}\n")
    (tmp_path / "truth" / "2026/11/24/10").mkdir(parents=True)
    (tmp_path / "truth" / "2026/11/24/10" / "b.jsonl").write_text(truth_line("a", [5.0]) + "\n")
    result = model_quality.run(source, drift_check.DirectorySource(tmp_path / "truth"), TEST,
                               None)
    assert result.counts["invalid_capture_lines"] == 1
    assert result.counts["invalid_ground_truth_lines"] == 1
    assert result.counts["labels_replaced"] == 1
    assert result.verdict == "ok"


def test_the_evaluation_gives_the_test_metrics(tmp_path):
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({"regression_metrics": {
        name: {"value": value, "standard_deviation": 0.1} for name, value in TEST.items()}}))
    assert model_quality.load_evaluation(path) == TEST
    path.write_text(json.dumps({"regression_metrics": {"rmse": {"value": 1}}}))
    with pytest.raises(model_quality.ModelQualityError, match="rmse, mae and r2"):
        model_quality.load_evaluation(path)
    with pytest.raises(model_quality.ModelQualityError, match="not found"):
        model_quality.load_evaluation(tmp_path / "missing.json")


def test_monitoring_settings_are_read_and_checked(tmp_path):
    assert variant(tmp_path).monitoring == Monitoring(rmse_tolerance=1.2,
                                                      retrain_on_violation=False)
    changed = variant(tmp_path, replace={"rmse_tolerance = 1.2": "rmse_tolerance = 1.5",
                                         "retrain_on_violation = false":
                                         "retrain_on_violation = true"})
    assert changed.monitoring == Monitoring(rmse_tolerance=1.5, retrain_on_violation=True)
    for old, new, message in (
            ("rmse_tolerance = 1.2", "rmse_tolerance = 0", "rmse_tolerance = 0 must be"),
            ("retrain_on_violation = false", 'retrain_on_violation = "yes"', "true or false"),
            ("rmse_tolerance = 1.2", "rmse_tolerence = 1.2", "unknown key(s) rmse_tolerence")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            variant(tmp_path, replace={old: new})


def test_cloud_job_reads_s3_and_the_package_and_puts_the_violation_metric(tmp_path, predictions):
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3, sagemaker = boto3.client("s3"), boto3.client("sagemaker")
        s3.create_bucket(Bucket="bucket")
        lines = [capture_line(r, p) for r, p in predictions.items()]
        s3.put_object(Bucket="bucket", Body="\n".join(lines).encode(),
                      Key=f"abalone/datacapture/prod/v1/e/AllTraffic/{HOUR}/a.jsonl")
        labels = [truth_line(r, [v + 3 * TEST["rmse"] for v in p]) for r, p in predictions.items()]
        s3.put_object(Bucket="bucket", Key=f"abalone/ground-truth/prod/{HOUR}/b.jsonl",
                      Body="\n".join(labels).encode())
        s3.put_object(Bucket="bucket", Key="abalone/evaluation.json", Body=json.dumps(
            {"regression_metrics": {k: {"value": v} for k, v in TEST.items()}}).encode())
        sagemaker.create_model_package_group(ModelPackageGroupName="abalone-models")
        arn = sagemaker.create_model_package(
            ModelPackageGroupName="abalone-models",
            InferenceSpecification={"Containers": [{"Image": "image"}],
                                    "SupportedContentTypes": ["text/csv"],
                                    "SupportedResponseMIMETypes": ["text/csv"]},
            ModelMetrics={"ModelQuality": {"Statistics": {
                "ContentType": "application/json",
                "S3Uri": "s3://bucket/abalone/evaluation.json"}}})["ModelPackageArn"]
        assert model_quality.main([
            "--capture-uri", "s3://bucket/abalone/datacapture/prod/v1",
            "--ground-truth-uri", "s3://bucket/abalone/ground-truth/prod",
            "--model-package-arn", arn, "--output", str(tmp_path / "out"),
            "--metric-namespace", "MLOps/ModelQuality",
            "--metric-dimension", "Endpoint=abalone-prod", "--region", "us-east-1"]) == 0
        written = json.loads((tmp_path / "out" / "model_quality.json").read_text())
        assert written["verdict"] == "violation"
        names = {m["MetricName"] for m in boto3.client("cloudwatch").list_metrics(
            Namespace="MLOps/ModelQuality")["Metrics"]}
        assert {model_quality.VIOLATIONS_METRIC, "rmse", "mae", "r2"} <= names
        assert model_quality.main([
            "--capture-uri", "s3://bucket/abalone/datacapture/prod/v1",
            "--ground-truth-uri", "s3://bucket/abalone/ground-truth/prod",
            "--model-package-arn", arn.replace("/1", "/2"), "--region", "us-east-1",
            "--output", str(tmp_path / "none")]) == 1


def test_labels_file_groups_rows_by_id_and_says_which_line_is_the_header():
    from mlops_local.model_quality import ModelQualityError, parse_labels

    labels, header = parse_labels("inference_id,rings\na,9\n\nb,10\na,11.5\n", "f.csv")
    assert labels == {"a": ["9", "11.5"], "b": ["10"]} and header == ["inference_id", "rings"]
    assert parse_labels("a,9\n", "f.csv") == ({"a": ["9"]}, None)
    with pytest.raises(ModelQualityError, match=r"line 2: label 'inf' is not a finite number"):
        parse_labels("a,9\na,inf\n", "f.csv")
    with pytest.raises(ModelQualityError, match="must be 1-64 characters"):
        parse_labels("a,9\n" + "x" * 65 + ",1\n", "f.csv")
    with pytest.raises(ModelQualityError, match="no inference id,label line"):
        parse_labels("inference_id,rings\n", "f.csv")
