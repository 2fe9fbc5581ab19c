"""Model-quality check: captured predictions merged with ground-truth labels, against the
served model's own test metrics, as SageMaker Model Monitor's model quality job does it.

One script for both engines. On AWS it runs as a step of the monitoring pipeline (see `main`);
locally `mlops_local.model_quality` imports `run`.

- Predictions: SageMaker data capture of one model version (`captureData.endpointOutput`, CSV
  or JSON `{"predictions": [...]}`), keyed by `eventMetadata.inferenceId` (else `eventId`),
  in the window by `inferenceTime`.
- Ground truth: JSON Lines under `<ground truth root>/YYYY/MM/DD/HH/`, one record per request:
  `{"groundTruthData": {"data": "<label>", "encoding": "CSV"}, "eventMetadata": {"eventId":
  "<inference id>"}, "eventVersion": "0"}`. A request of several rows is one capture record,
  so its ground truth holds one label per row, in row order (CSV lines, or a JSON list).
  Labels arrive after their predictions: only hour folders from the window's start on are read.
- The model's test metrics: its registered `evaluation.json` (`regression_metrics`).

A violation is a window RMSE above `rmse_tolerance` x the model's test RMSE. Requests without
ground truth, labels without a captured prediction, and requests whose label count differs
from their prediction count are counted and left out, never guessed. Writes
`statistics.json` (the window's `regression_metrics`), `constraint_violations.json` and
`model_quality.json` (verdict, counts, thresholds).

Imports only the standard library, numpy, the data contract and the drift check beside it
(boto3 only in `main`), so it runs in the SageMaker scikit-learn container.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

if __package__:
    from model_build.scripts import contract

    from . import drift_check
else:  # run as a script (the Processing job): contract.py and drift_check.py sit beside it
    import contract
    import drift_check

DEFAULT_RMSE_TOLERANCE = 1.2
VIOLATIONS_METRIC = "model_quality_violations"


class ModelQualityError(Exception):
    """The check cannot run; the message names the problem."""


@dataclass
class QualityResult:
    verdict: str  # "violation", "ok", or "not compared" (no request with ground truth)
    metrics: dict  # rmse, mae, mse, r2 of the window (None when not compared)
    test_metrics: dict  # the model's rmse, mae, r2 on its test split
    rmse_tolerance: float
    rmse_threshold: float
    violations: list[dict]
    counts: dict
    window: dict
    output_dir: Path | None = None
    examples: list[str] = field(default_factory=list)
    time: str = ""  # when the check ran, ISO 8601 UTC


# ---------------------------------------------------------------------------- reading values


def values_of(payload: dict) -> list[float]:
    """The numbers of a capture payload or a groundTruthData: CSV cells (one per line or
    comma-separated), or JSON (a number, a list, or {"predictions": [...]}), maybe BASE64."""
    data, encoding = payload["data"], str(payload.get("encoding", "CSV")).upper()
    content_type = str(payload.get("observedContentType", "")).lower()
    if encoding == "BASE64":
        data = base64.b64decode(data, validate=True).decode("utf-8")
    if encoding == "JSON" or "json" in content_type:
        body = json.loads(data) if isinstance(data, str) else data
        if isinstance(body, dict):
            body = body["predictions"]
        cells = body if isinstance(body, list) else [body]
    else:
        cells = [cell for line in str(data).splitlines() for cell in line.split(",")
                 if cell.strip()]
    try:
        return [contract.to_number(cell) for cell in cells]
    except contract.ContractError as err:
        raise ValueError(str(err)) from None


def _lines(source, keys: list[str]):
    for key in keys:
        for line in source.read(key).splitlines():
            if line.strip():
                yield key, line


@dataclass
class Predictions:
    inside: dict[str, list[float]]  # inference id -> predictions, requests in the window
    outside: set[str]  # ids captured outside the window
    invalid: int = 0
    examples: list[str] = field(default_factory=list)


def read_predictions(source, window: drift_check.Window) -> Predictions:
    """Every captured request's predictions, split by the window (all files: a label may
    refer to a request outside the window, which is counted apart)."""
    found = Predictions({}, set())
    for key, line in _lines(source, source.keys()):
        try:
            record = json.loads(line)
            metadata = record["eventMetadata"]
            request = str(metadata.get("inferenceId") or metadata["eventId"])
            moment = drift_check.parse_time(metadata["inferenceTime"])
            values = values_of(record["captureData"]["endpointOutput"])
        except (ValueError, KeyError, TypeError, binascii.Error, drift_check.DriftCheckError):
            found.invalid += 1
            if len(found.examples) < 3:
                found.examples.append(f"{key}: {line[:80]}")
            continue
        if (window.start and moment < window.start) or (window.end and moment >= window.end):
            found.outside.add(request)
        else:
            found.inside[request] = values
    return found


@dataclass
class Labels:
    by_id: dict[str, list[float]]
    invalid: int = 0
    replaced: int = 0  # records for an id seen before; the later one counts
    examples: list[str] = field(default_factory=list)


def read_ground_truth(source, window: drift_check.Window) -> Labels:
    """Ground-truth records from the hour folders at or after the window's start."""
    keys = drift_check.files_in_window(source.keys(), drift_check.Window(window.start))
    found = Labels({})
    for key, line in _lines(source, keys):
        try:
            record = json.loads(line)
            request = str(record["eventMetadata"]["eventId"])
            values = values_of(record["groundTruthData"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            found.invalid += 1
            if len(found.examples) < 3:
                found.examples.append(f"{key}: {line[:80]}")
            continue
        found.replaced += request in found.by_id
        found.by_id[request] = values
    return found


def evaluation_metrics(evaluation: dict, source: str) -> dict:
    """rmse, mae and r2 of the model's evaluation.json (`regression_metrics`)."""
    try:
        metrics = evaluation["regression_metrics"]
        return {name: float(metrics[name]["value"]) for name in ("rmse", "mae", "r2")}
    except (KeyError, TypeError, ValueError):
        raise ModelQualityError(
            f"{source} has no regression_metrics rmse, mae and r2 values") from None


def load_evaluation(path: Path) -> dict:
    try:
        return evaluation_metrics(json.loads(Path(path).read_text()), str(path))
    except FileNotFoundError:
        raise ModelQualityError(f"the model's evaluation not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ModelQualityError(f"the model's evaluation {path} is not JSON: {err}") from None


# ---------------------------------------------------------------------------- the check


def regression(actual: np.ndarray, predicted: np.ndarray) -> dict:
    errors = predicted - actual
    mse = float(np.mean(errors ** 2))
    spread = float(np.sum((actual - actual.mean()) ** 2))
    r2 = 1 - float(np.sum(errors ** 2)) / spread if len(actual) > 1 and spread > 0 else None
    return {"mse": mse, "rmse": mse ** 0.5, "mae": float(np.mean(np.abs(errors))), "r2": r2}


def merge(predictions: Predictions, labels: Labels) -> tuple[np.ndarray, np.ndarray, dict]:
    """(labels, predictions) of every row whose request has ground truth, and the counts."""
    actual, predicted = [], []
    matched = missing = mismatched = 0
    for request, values in predictions.inside.items():
        truth = labels.by_id.get(request)
        if truth is None:
            missing += 1
        elif len(truth) != len(values):
            mismatched += 1
        else:
            matched += 1
            actual += truth
            predicted += values
    unmatched = [r for r in labels.by_id if r not in predictions.inside]
    counts = {
        "requests": len(predictions.inside),
        "requests_with_ground_truth": matched,
        "requests_without_ground_truth": missing,
        "requests_with_mismatched_labels": mismatched,
        "rows_compared": len(actual),
        "labels": len(labels.by_id),
        "labels_outside_window": sum(1 for r in unmatched if r in predictions.outside),
        "labels_without_prediction": sum(1 for r in unmatched if r not in predictions.outside),
        "labels_replaced": labels.replaced,
        "invalid_capture_lines": predictions.invalid,
        "invalid_ground_truth_lines": labels.invalid,
    }
    return np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float), counts


def metric_data(result: QualityResult) -> list[dict]:
    """CloudWatch MetricDatum entries: the window's metrics and the violation count."""
    data = [{"MetricName": name, "Value": value, "Unit": "None"}
            for name, value in result.metrics.items() if value is not None]
    data.append({"MetricName": "rows_compared", "Value": float(result.counts["rows_compared"]),
                 "Unit": "Count"})
    data.append({"MetricName": VIOLATIONS_METRIC, "Value": float(len(result.violations)),
                 "Unit": "Count"})
    return data


def summary(result: QualityResult) -> dict:
    return {"verdict": result.verdict, "time": result.time, "window": result.window,
            "metrics": result.metrics,
            "test_metrics": result.test_metrics, "rmse_tolerance": result.rmse_tolerance,
            "rmse_threshold": result.rmse_threshold, "records": result.counts,
            "violations": result.violations, "invalid_examples": result.examples}


def run(
    capture_source,
    ground_truth_source,
    model_metrics: dict,
    output_dir: Path | None,
    window: drift_check.Window | None = None,
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE,
    metrics_sink: drift_check.MetricSink | None = None,
) -> QualityResult:
    """Merge the window's predictions with their ground truth and compare with
    `model_metrics` (see `evaluation_metrics`); write the outputs and emit the metrics."""
    if not rmse_tolerance > 0:
        raise ModelQualityError(f"the RMSE tolerance must be above 0, got {rmse_tolerance}")
    window = window or drift_check.Window()
    predictions = read_predictions(capture_source, window)
    labels = read_ground_truth(ground_truth_source, window)
    actual, predicted, counts = merge(predictions, labels)
    threshold = rmse_tolerance * model_metrics["rmse"]
    metrics = (regression(actual, predicted) if len(actual)
               else dict.fromkeys(("mse", "rmse", "mae", "r2")))
    violations = []
    if metrics["rmse"] is not None and metrics["rmse"] > threshold:
        violations.append({
            "metric_name": "rmse", "constraint_check_type": "GreaterThanThreshold",
            "description": f"Metric rmse with {metrics['rmse']:.4f} was GreaterThanThreshold "
                           f"{threshold:.4f} ({rmse_tolerance:g} x the model's test rmse "
                           f"{model_metrics['rmse']:.4f}) over {len(actual)} rows"})
    verdict = "violation" if violations else ("ok" if len(actual) else "not compared")
    result = QualityResult(
        verdict, metrics, model_metrics, rmse_tolerance, threshold, violations, counts,
        {"start": window.start.isoformat() if window.start else None,
         "end": window.end.isoformat() if window.end else None,
         "capture": capture_source.name, "ground_truth": ground_truth_source.name},
        examples=predictions.examples + labels.examples, time=datetime.now(UTC).isoformat(),
    )
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        drift_check.write_json(output_dir / "statistics.json", {
            "dataset": {"item_count": counts["rows_compared"]},
            "regression_metrics": {name: {"value": value} for name, value in metrics.items()}})
        drift_check.write_json(output_dir / "constraint_violations.json",
                               {"violations": violations})
        drift_check.write_json(output_dir / "model_quality.json", summary(result))
        result.output_dir = output_dir
    if metrics_sink is not None:
        metrics_sink(metric_data(result))
    return result


# ---------------------------------------------------------------------------- Processing job


def package_metrics(session, package_arn: str) -> dict:
    """The test metrics of a registered package: its ModelQuality statistics in S3."""
    package = session.client("sagemaker").describe_model_package(ModelPackageName=package_arn)
    uri = package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get(
        "S3Uri")
    match = re.fullmatch(r"s3://([^/]+)/(.+)", uri or "")
    if not match:
        raise ModelQualityError(f"model package {package_arn} registers no ModelQuality "
                                "statistics (its evaluation.json)")
    body = session.client("s3").get_object(Bucket=match[1], Key=match[2])["Body"].read()
    try:
        return evaluation_metrics(json.loads(body), uri)
    except json.JSONDecodeError as err:
        raise ModelQualityError(f"{uri} is not JSON: {err}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture-uri", required=True,
                        help="s3://... capture prefix of one model version")
    parser.add_argument("--ground-truth-uri", required=True,
                        help="s3://... prefix of the ground truth (YYYY/MM/DD/HH below it)")
    parser.add_argument("--model-package-arn", required=True,
                        help="the served package; its evaluation.json gives the test metrics")
    parser.add_argument("--rmse-tolerance", type=float, default=DEFAULT_RMSE_TOLERANCE)
    parser.add_argument("--output", type=Path, default=Path("/opt/ml/processing/output"))
    parser.add_argument("--start", type=drift_check.parse_time, help="ISO 8601, inclusive")
    parser.add_argument("--end", type=drift_check.parse_time, help="ISO 8601, exclusive")
    parser.add_argument("--metric-namespace", help="emit CloudWatch metrics to this namespace")
    parser.add_argument("--metric-dimension", action="append", default=[],
                        type=drift_check._dimension, help="Name=Value, repeatable")
    parser.add_argument("--region")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import boto3  # only the cloud job talks to AWS
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        args = parse_args(argv)
        session = boto3.session.Session(region_name=args.region)
        s3 = session.client("s3")
        sink = (drift_check.cloudwatch_sink(session.client("cloudwatch"), args.metric_namespace,
                                            args.metric_dimension)
                if args.metric_namespace else None)
        result = run(drift_check.S3Source(s3, args.capture_uri),
                     drift_check.S3Source(s3, args.ground_truth_uri),
                     package_metrics(session, args.model_package_arn), args.output,
                     drift_check.Window(args.start, args.end), args.rmse_tolerance, sink)
    except (ModelQualityError, drift_check.DriftCheckError, BotoCoreError, ClientError) as err:
        return drift_check.job_failed("model quality check", err)
    print(f"{result.verdict}: {result.counts['rows_compared']} rows with ground truth, "
          f"rmse {result.metrics['rmse']} against {result.rmse_threshold:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
