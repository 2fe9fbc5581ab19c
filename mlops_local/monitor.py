"""Run the drift check locally for a stage's endpoint, as the cloud monitoring schedule does.

The endpoint record (`<state>/endpoints/<stage>.json`) names the model package that served the
traffic and its capture prefix; the registry names that package's data-quality baseline; the
check (`model_deploy/monitoring/drift_check.py`, the same script the Processing job runs)
writes its outputs under `s3://<local bucket>/<project>/monitoring/<stage>/<timestamp>/`.
Requests the endpoint refused are counted beside the drift, and fail the check above
`[monitoring] max_refused_share` of the rows; the staging gate's probes are left out.
`history` lists the stage's earlier data-quality and model-quality runs from what they wrote.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mlops_core import config as mlops_config
from mlops_local.endpoint import lifecycle
from mlops_local.registry import LocalRegistry, RegistryError
from mlops_local.store import LocalStore, StoreError
from model_deploy.monitoring import drift_check
from model_deploy.monitoring.history import MODEL_QUALITY as MODEL_QUALITY
from model_deploy.monitoring.history import MODEL_QUALITY_FOLDER as MODEL_QUALITY_FOLDER
from model_deploy.monitoring.history import read_history

METRIC_NAMESPACE = "aws/sagemaker/Endpoints/data-metrics"


class MonitorError(ValueError):
    """The local drift check cannot run or give a verdict; the message says why."""


@dataclass(frozen=True)
class Row:
    feature: str
    check: str
    distance: float | None
    threshold: float | None
    verdict: str


@dataclass
class MonitorResult:
    stage: str
    model_package_arn: str
    model_version: int
    verdict: str
    rows: list[Row]
    violations: list[dict]
    counts: dict
    output_uri: str
    report_path: Path
    metrics_uri: str = ""
    window: dict = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)


def baseline_uris(registry: LocalRegistry, package_arn: str) -> tuple[str, str]:
    """The data-quality statistics and constraints URIs registered with a model package."""
    try:
        package = registry.describe_model_package(ModelPackageName=package_arn)
    except RegistryError as err:
        raise MonitorError(str(err)) from None
    quality = package.get("DriftCheckBaselines", {}).get("ModelDataQuality", {})
    try:
        return quality["Statistics"]["S3Uri"], quality["Constraints"]["S3Uri"]
    except KeyError:
        raise MonitorError(
            f"model package {package_arn} registers no data-quality baseline "
            "(DriftCheckBaselines.ModelDataQuality.Statistics/Constraints)"
        ) from None


def monitoring_uri(cfg: mlops_config.Config, stage: str) -> str:
    """The prefix every monitoring run of the stage writes under."""
    return f"s3://{cfg.local['bucket']}/{cfg.project}/monitoring/{stage}"


def history(stage: str, *, cfg: mlops_config.Config | None = None,
            store: LocalStore | None = None) -> list[dict]:
    """The stage's earlier monitoring runs, newest first, read from the files each run wrote:
    kind ("data quality" or "model quality"), time, verdict, window, report_path (the local
    report.html or model_quality.json, None if missing), uri, relative_path (under the stage's
    monitoring prefix) and summary (rows checked and refused share, or rmse, mae and r2)."""
    cfg = cfg or mlops_config.load()
    store = store or LocalStore()
    prefix = monitoring_uri(cfg, stage)
    runs = read_history(drift_check.DirectorySource(store.path(prefix), prefix))
    for run in runs:
        run["report_path"] = run["report_path"] and store.path(run["report_path"])
    return runs


def _moment(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return drift_check.parse_time(value)
    except drift_check.DriftCheckError as err:
        raise MonitorError(str(err)) from None


def local_metrics_sink(
    store: LocalStore, uri: str, dimensions: list[dict], namespace: str = METRIC_NAMESPACE
) -> drift_check.MetricSink:
    """Keep the metrics CloudWatch would get as one JSON record in the local store."""
    def put(data: list[dict]) -> None:
        record = {"Namespace": namespace, "Dimensions": dimensions,
                  "Timestamp": datetime.now(UTC).isoformat(), "MetricData": data}
        store.put_bytes(uri, json.dumps(record, indent=2).encode())
    return put


def result_rows(result: drift_check.DriftResult) -> list[Row]:
    """One row per feature for the distribution comparison, one per other violation."""
    rows = [Row(f.name, "baseline_drift_check", f.distance, f.threshold, f.verdict)
            for f in result.features]
    rows += [Row(v["feature_name"], v["constraint_check_type"], None, None, "violation")
             for v in result.violations if v["constraint_check_type"] != "baseline_drift_check"]
    return rows


def run_local(
    stage: str,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    *,
    cfg: mlops_config.Config | None = None,
    store: LocalStore | None = None,
    registry: LocalRegistry | None = None,
) -> MonitorResult:
    """Check the traffic the stage's endpoint captured in [start, end) against its baseline."""
    cfg = cfg or mlops_config.load()
    store = store or LocalStore()
    registry = registry or LocalRegistry(region=cfg.local.get("region", "us-east-1"))
    try:
        endpoint = lifecycle.last_record(stage)  # a stopped endpoint's capture stays checkable
    except lifecycle.EndpointError as err:
        raise MonitorError(str(err)) from None
    info = endpoint.get("model_info") or {}
    if "ModelPackageArn" not in info or "ModelPackageVersion" not in info:
        raise MonitorError(f"the endpoint of stage {stage} records no model package version")
    if not endpoint.get("capture_uri"):
        raise MonitorError(f"the endpoint of stage {stage} has no data capture configured")
    statistics_uri, constraints_uri = baseline_uris(registry, info["ModelPackageArn"])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    prefix = monitoring_uri(cfg, stage)
    output_uri, metrics_uri = f"{prefix}/{stamp}", f"{prefix}/metrics/{stamp}.json"
    dimensions = [{"Name": "Endpoint", "Value": endpoint.get("endpoint_name")
                   or cfg.endpoint_name(stage)}]
    earlier = history(stage, cfg=cfg, store=store)
    try:
        source = drift_check.DirectorySource(store.path(endpoint["capture_uri"]),
                                             endpoint["capture_uri"])
        with tempfile.TemporaryDirectory() as scratch:
            checked = drift_check.run(
                source, store.path(statistics_uri), store.path(constraints_uri), Path(scratch),
                window=drift_check.Window(_moment(start), _moment(end)),
                model_version=int(info["ModelPackageVersion"]),
                metrics_sink=local_metrics_sink(store, metrics_uri, dimensions),
                max_refused_share=cfg.monitoring.max_refused_share, history=earlier,
            )
            store.upload_dir(Path(scratch), output_uri)
    except (drift_check.DriftCheckError, StoreError) as err:
        raise MonitorError(f"stage {stage}: {err}") from None
    return MonitorResult(
        stage=stage, model_package_arn=info["ModelPackageArn"],
        model_version=int(info["ModelPackageVersion"]), verdict=checked.verdict,
        rows=result_rows(checked), violations=checked.violations, counts=checked.counts,
        output_uri=output_uri, report_path=store.path(output_uri) / "report.html",
        metrics_uri=metrics_uri, window=checked.window, refusals=checked.refusals,
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(result: MonitorResult) -> str:
    """The result as the CLI prints it: a summary line, the checks table, where the report is."""
    table = Table(title=f"{result.stage}: model version {result.model_version}, "
                        f"{result.counts['rows_checked']} rows -> {result.verdict}")
    for column in ("feature", "check", "distance", "threshold", "verdict"):
        table.add_column(column, justify="right" if column in ("distance", "threshold") else "left")
    styles = {"drift": "bold red", "violation": "red", "inconclusive": "yellow", "ok": "green"}
    for row in result.rows:
        table.add_row(row.feature, row.check, _number(row.distance), _number(row.threshold),
                      f"[{styles.get(row.verdict, 'white')}]{row.verdict}[/]")
    buffer = io.StringIO()
    console = Console(file=buffer, width=110, force_terminal=False)
    console.print(table)
    counts = result.counts
    if counts["invalid_lines"] or counts["invalid_bodies"]:
        console.print(f"skipped {counts['invalid_lines']} invalid capture lines and "
                      f"{counts['invalid_bodies']} unreadable request bodies")
    if counts["refused_requests"]:
        console.print(f"refused: {counts['refused_requests']} requests with "
                      f"{counts['refused_rows']} rows; bad rows:")
        for line in result.refusals:
            console.print(f"  {line}", markup=False, highlight=False)
    if counts["probes"]:
        console.print(f"{counts['probes']} gate probes left out")
    return buffer.getvalue() + f"report: {result.report_path}\n"


def _key_numbers(run: dict) -> str:
    numbers = run["summary"]
    if run["kind"] == "data quality":
        return (f"{numbers['rows_checked']} rows checked, "
                f"{numbers['refused_share']:.1%} refused")
    return (f"{numbers['rows_compared']} rows, rmse {_number(numbers['rmse'])} (bound "
            f"{_number(numbers['rmse_threshold'])}), mae {_number(numbers['mae'])}, "
            f"r2 {_number(numbers['r2'])}")


def format_history(stage: str, runs: list[dict]) -> str:
    """`history` as the CLI prints it: one line per run, newest first, ending in its report
    (whole, to be copied or opened)."""
    if not runs:
        return f"no monitoring run of stage {stage} yet: run `mlops monitor run {stage}`\n"
    lines = [f"{stage}: {len(runs)} monitoring runs, newest first"]
    lines += [f"{run['time'][:19]}  {run['kind']:<13}  {run['verdict']:<12}  "
              f"{_key_numbers(run)}  {run['report_path'] or run['uri']}" for run in runs]
    return "\n".join(lines) + "\n"
