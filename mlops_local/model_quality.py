"""Model quality of a stage's endpoint, locally, as the cloud monitoring pipeline checks it.

Ground truth lives in the local store as SageMaker's model quality monitoring expects it:
`s3://<bucket>/<project>/ground-truth/<stage>/YYYY/MM/DD/HH/<file>.jsonl`, one record per
request (`model_deploy/monitoring/model_quality.py` has the format). `write_ground_truth`
turns a CSV of inference id and label into such records; `run_local` merges them with the
capture of the model version the endpoint served and compares with that package's own test
metrics (its registered evaluation.json), writing the outputs under
`s3://<bucket>/<project>/monitoring/<stage>/model-quality/<timestamp>/`.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mlops_core import config as mlops_config
from mlops_core.names import INFERENCE_ID
from mlops_local.endpoint import lifecycle
from mlops_local.endpoint.server import header_rules
from mlops_local.monitor import (
    MODEL_QUALITY,
    MODEL_QUALITY_FOLDER,
    local_metrics_sink,
    monitoring_uri,
)
from mlops_local.registry import LocalRegistry, RegistryError
from mlops_local.store import LocalStore, StoreError
from model_build.scripts import contract
from model_deploy.monitoring import drift_check, model_quality

METRIC_NAMESPACE = "MLOps/ModelQuality"  # what the cloud step emits to
MAX_LISTED = 10  # bad lines named in one message


class ModelQualityError(ValueError):
    """Model quality cannot be checked, or ground truth not taken; the message says why."""


def ground_truth_uri(cfg: mlops_config.Config, stage: str) -> str:
    return f"s3://{cfg.local['bucket']}/{cfg.project}/ground-truth/{stage}"


# ---------------------------------------------------------------------------- ground truth


def parse_labels(text: str, source: str) -> tuple[dict[str, list[str]], list[str] | None]:
    """Inference id -> its labels in file order (a request of n rows has n lines), from CSV
    lines `<inference id>,<label>`, and the header: a first line whose label is no number.
    Every bad line is named."""
    rule = next(r for r in header_rules() if r.header == INFERENCE_ID)
    labels: dict[str, list[str]] = {}
    header = None
    problems = []
    rows = list(csv.reader(io.StringIO(text)))
    for number, row in enumerate(rows, start=1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            problems.append(f"line {number}: {len(row)} fields, expected inference id,label")
            continue
        request, label = row[0].strip(), row[1].strip()
        if number == 1 and _is_header(label):
            header = row
            continue
        problem = rule.problem(request)
        try:
            contract.to_number(label)
        except contract.ContractError as err:
            problem = problem or f"label {label!r} is {err}"
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        labels.setdefault(request, []).append(label)
    if problems:
        listed = "; ".join(problems[:MAX_LISTED])
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise ModelQualityError(f"{source}: {len(problems)} bad line(s), nothing written: "
                                f"{listed}{more}")
    if not labels:
        raise ModelQualityError(f"{source} holds no inference id,label line")
    return labels, header


def _is_header(label: str) -> bool:
    try:
        contract.to_number(label)
    except contract.ContractError:
        return True
    return False


def write_ground_truth(stage: str, file: Path, *, cfg: mlops_config.Config | None = None,
                       store: LocalStore | None = None
                       ) -> tuple[str, int, int, list[str] | None]:
    """Write the labels of `file` as one ground-truth file of this hour; returns its URI, the
    number of records (requests) and of labels, and the header line it skipped."""
    cfg = cfg or mlops_config.load()
    store = store or LocalStore()
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelQualityError(f"cannot read {file}: {getattr(err, 'strerror', err)}") from None
    labels, header = parse_labels(text, str(file))
    lines = [json.dumps({"groundTruthData": {"data": "\n".join(values), "encoding": "CSV"},
                         "eventMetadata": {"eventId": request}, "eventVersion": "0"})
             for request, values in labels.items()]
    now = datetime.now(UTC)
    uri = (f"{ground_truth_uri(cfg, stage)}/{now:%Y/%m/%d/%H}/"
           f"{now:%M-%S}-{uuid.uuid4().hex[:12]}.jsonl")
    store.put_bytes(uri, ("\n".join(lines) + "\n").encode())  # atomic: whole file or none
    return uri, len(lines), sum(len(v) for v in labels.values()), header


# ---------------------------------------------------------------------------- the check


def package_metrics(registry: LocalRegistry, package_arn: str, store: LocalStore) -> dict:
    """The test metrics of a package: its registered ModelQuality statistics."""
    try:
        package = registry.describe_model_package(ModelPackageName=package_arn)
        uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
        return model_quality.load_evaluation(store.path(uri))
    except (RegistryError, StoreError, model_quality.ModelQualityError) as err:
        raise ModelQualityError(str(err)) from None
    except KeyError:
        raise ModelQualityError(f"model package {package_arn} registers no ModelQuality "
                                "statistics (its evaluation.json)") from None


def run_local(stage: str, start: datetime | str | None = None,
              end: datetime | str | None = None, *, cfg: mlops_config.Config | None = None,
              store: LocalStore | None = None, registry: LocalRegistry | None = None
              ) -> tuple[model_quality.QualityResult, str]:
    """Check the model quality of the stage's requests in [start, end); returns the result
    and the URI of its `model_quality.json`."""
    cfg = cfg or mlops_config.load()
    store = store or LocalStore()
    registry = registry or LocalRegistry(region=cfg.local.get("region", "us-east-1"))
    try:
        endpoint = lifecycle.last_record(stage)
        window = drift_check.Window(*(drift_check.parse_time(t) if isinstance(t, str) else t
                                      for t in (start, end)))
    except (lifecycle.EndpointError, drift_check.DriftCheckError) as err:
        raise ModelQualityError(str(err)) from None
    info = endpoint.get("model_info") or {}
    if "ModelPackageArn" not in info or not endpoint.get("capture_uri"):
        raise ModelQualityError(f"the endpoint of stage {stage} records no model package or "
                                "no data capture")
    metrics = package_metrics(registry, info["ModelPackageArn"], store)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    prefix = monitoring_uri(cfg, stage)
    output_uri = f"{prefix}/{MODEL_QUALITY_FOLDER}/{stamp}"
    dimensions = [{"Name": "Endpoint",
                   "Value": endpoint.get("endpoint_name") or cfg.endpoint_name(stage)}]
    truth_uri = ground_truth_uri(cfg, stage)
    try:
        result = model_quality.run(
            drift_check.DirectorySource(store.path(endpoint["capture_uri"]),
                                        endpoint["capture_uri"]),
            drift_check.DirectorySource(store.path(truth_uri), truth_uri),
            metrics, store.path(output_uri), window, cfg.monitoring.rmse_tolerance,
            local_metrics_sink(store, f"{prefix}/metrics/model-quality-{stamp}.json",
                               dimensions, METRIC_NAMESPACE))
    except (model_quality.ModelQualityError, StoreError) as err:
        raise ModelQualityError(f"stage {stage}: {err}") from None
    return result, f"{output_uri}/{MODEL_QUALITY}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(result: model_quality.QualityResult, report_uri: str) -> str:
    """The result as the CLI prints it: the metrics against the model's, the merge counts."""
    counts = result.counts
    table = Table(title=f"model quality: {counts['rows_compared']} rows with ground truth -> "
                        f"{result.verdict}")
    for column in ("metric", "window", "model (test)", "threshold", "verdict"):
        table.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
    for name in ("rmse", "mae", "r2"):
        value = result.metrics[name]
        verdict = ""
        if name == "rmse":
            verdict = {"violation": "[bold red]violation[/]", "ok": "[green]ok[/]"}.get(
                result.verdict, "not compared")
        table.add_row(name, _number(value), _number(result.test_metrics[name]),
                      _number(result.rmse_threshold) if name == "rmse" else "", verdict)
    buffer = io.StringIO()
    console = Console(file=buffer, width=110, force_terminal=False)
    console.print(table)
    console.print(
        f"{counts['requests']} requests in the window: {counts['requests_with_ground_truth']} "
        f"with ground truth, {counts['requests_without_ground_truth']} without (not guessed), "
        f"{counts['requests_with_mismatched_labels']} whose label count differs from their "
        f"prediction count; {counts['labels_without_prediction']} labels without a captured "
        f"prediction, {counts['labels_outside_window']} for requests outside the window")
    if counts["invalid_capture_lines"] or counts["invalid_ground_truth_lines"]:
        console.print(f"skipped {counts['invalid_capture_lines']} invalid capture lines and "
                      f"{counts['invalid_ground_truth_lines']} invalid ground-truth lines")
    return buffer.getvalue() + f"model quality report: {report_uri}\n"
