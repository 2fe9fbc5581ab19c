"""What each console page shows, read from the same local state the CLI reads: the registry,
the engine's execution records, the endpoint records and their capture, the gate's pass
record and the monitoring runs. Every function returns plain data for a template."""

from __future__ import annotations

import json
import re
import tarfile
from datetime import datetime
from pathlib import Path

from mlops_core.config import Config
from mlops_core.names import STAGES, VARIANT, stage_problem
from mlops_local import deploy, monitor, review
from mlops_local.endpoint import capture, lifecycle
from mlops_local.engine import records
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore, StoreError
from model_deploy.monitoring.drift_check import PROBE_PREFIX

EXECUTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9T._-]*")
COMPARISON_FILES = ("comparison.json", "comparison.png")
LOG_BYTES = 200_000


class NotFound(LookupError):
    """A page for something that is not there (a version, an execution, a stopped endpoint)."""

    def __init__(self, title: str, message: str):
        super().__init__(message)
        self.title = title


def _when(text: str | None) -> str:
    return (text or "")[:19].replace("T", " ")


def duration(start: str | None, end: str | None) -> str:
    if not start:
        return ""
    begin = datetime.fromisoformat(start)
    finish = datetime.fromisoformat(end) if end else datetime.now(begin.tzinfo)
    return f"{(finish - begin).total_seconds():.1f} s"


# registry ---------------------------------------------------------------------------------

def serving_versions() -> dict[str, int]:
    """stage -> the model package version its running endpoint serves."""
    return {stage: model.get("ModelPackageVersion")
            for stage, model in review.served_models().items()}


def _metrics(package: dict, store: LocalStore) -> dict[str, float]:
    report = review.evaluation(package, store) or {}
    return {name: item["value"] for name, item in report.get("regression_metrics", {}).items()}


def registry(cfg: Config) -> dict:
    reg, store = LocalRegistry(), LocalStore()
    serving = serving_versions()
    summaries = reg.list_model_packages(ModelPackageGroupName=cfg.model_package_group,
                                        SortOrder="Descending", MaxResults=1000)
    versions = []
    for summary in summaries["ModelPackageSummaryList"]:
        package = reg.describe_model_package(summary["ModelPackageArn"])
        version = package["ModelPackageVersion"]
        versions.append({
            "version": version, "status": package["ModelApprovalStatus"],
            "created": _when(package["CreationTime"]), "metrics": _metrics(package, store),
            "note": package.get("ApprovalDescription", ""),
            "stages": [stage for stage, served in serving.items() if served == version],
        })
    return {"group": cfg.model_package_group, "metric": cfg.metric, "versions": versions}


def package(cfg: Config, version: str) -> dict:
    """A version's registry record; NotFound for a version that is not a number or not there."""
    try:
        number = review.parse_version(version)
        return LocalRegistry().describe_model_package(f"{cfg.model_package_group}/{number}")
    except ValueError as err:
        raise NotFound("no such model version", str(err)) from None


def version_page(cfg: Config, version: str) -> dict:
    pkg = package(cfg, version)
    store = LocalStore()
    quality = pkg.get("ModelMetrics", {}).get("ModelDataQuality", {})
    return {
        "group": cfg.model_package_group, "metric": cfg.metric,
        "version": pkg["ModelPackageVersion"], "approval": pkg["ModelApprovalStatus"],
        "created": _when(pkg["CreationTime"]), "modified": _when(pkg.get("LastModifiedTime")),
        "description": pkg.get("ModelPackageDescription", ""),
        "note": pkg.get("ApprovalDescription", ""),
        "metrics": (review.evaluation(pkg, store) or {}).get("regression_metrics", {}),
        "has_plot": _plot_path(pkg, store) is not None,
        "comparison": _comparison(pkg, store),
        "baseline": _baseline(quality, store),
        "execution": _execution_of(pkg),
        "stages": [s for s, v in serving_versions().items() if v == pkg["ModelPackageVersion"]],
    }


def _plot_path(pkg: dict, store: LocalStore) -> Path | None:
    """Evaluate writes prediction_plot.png beside the evaluation.json the package registers."""
    uri = review.evaluation_uri(pkg)
    try:
        path = store.path(uri.rsplit("/", 1)[0] + "/prediction_plot.png")
    except (StoreError, AttributeError):
        return None
    return path if path.is_file() else None


def plot(cfg: Config, version: str) -> bytes:
    path = _plot_path(package(cfg, version), LocalStore())
    if path is None:
        raise NotFound("no evaluation plot", f"version {version} has no evaluation plot")
    return path.read_bytes()


def _model_member(pkg: dict, store: LocalStore, name: str) -> bytes | None:
    """A file of the package's model.tar.gz (Train writes the candidate comparison there)."""
    try:
        archive = store.path(pkg["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
        with tarfile.open(archive) as tar:
            member = tar.extractfile(name)
            return member.read() if member else None
    except (StoreError, KeyError, OSError, tarfile.TarError):
        return None


def _comparison(pkg: dict, store: LocalStore) -> dict | None:
    data = _model_member(pkg, store, "comparison.json")
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def comparison_plot(cfg: Config, version: str) -> bytes:
    data = _model_member(package(cfg, version), LocalStore(), "comparison.png")
    if data is None:
        raise NotFound("no comparison", f"version {version} was not chosen by a comparison")
    return data


def _baseline(quality: dict, store: LocalStore) -> list[dict]:
    """One row per feature of the data-quality baseline statistics."""
    try:
        statistics = json.loads(store.path(quality["Statistics"]["S3Uri"]).read_text())
    except (KeyError, StoreError, OSError, ValueError):
        return []
    rows = []
    for feature in statistics.get("features", []):
        numbers = feature.get("numerical_statistics")
        strings = feature.get("string_statistics")
        common = (numbers or strings or {}).get("common", {})
        if numbers:
            summary = (f"mean {numbers.get('mean', 0):.3f}, sd {numbers.get('std_dev', 0):.3f}, "
                       f"{numbers.get('min', 0):g} to {numbers.get('max', 0):g}")
        else:
            buckets = (strings or {}).get("distribution", {}).get("categorical", {}).get(
                "buckets", [])
            summary = ", ".join(f"{b['value']}: {b['count']:g}" for b in buckets)
        rows.append({"name": feature.get("name"), "type": feature.get("inferred_type"),
                     "present": common.get("num_present"), "missing": common.get("num_missing"),
                     "summary": summary})
    return rows


def _execution_of(pkg: dict) -> dict | None:
    """The execution whose RegisterModel step registered this package."""
    for execution in records.list_executions():
        try:
            steps = records.get_execution(execution["ExecutionId"])["steps"]
        except ValueError:
            continue
        for step in steps.values():
            if step.get("Properties", {}).get("ModelPackageArn") == pkg["ModelPackageArn"]:
                return {"id": execution["ExecutionId"], "started": _when(execution["StartTime"])}
    return None


# pipeline executions ----------------------------------------------------------------------

def executions(cfg: Config) -> dict:
    rows = [{
        "id": e["ExecutionId"], "status": e["PipelineExecutionStatus"],
        "started": _when(e.get("StartTime")), "duration": duration(e.get("StartTime"),
                                                                    e.get("EndTime")),
        "reason": (e.get("FailureReason") or "").split("\n")[0],
    } for e in records.list_executions(cfg.pipeline_name)]
    return {"pipeline": cfg.pipeline_name, "executions": rows,
            "running": any(r["status"] == "Executing" for r in rows)}


def _record(execution_id: str) -> dict:
    if not EXECUTION_ID.fullmatch(execution_id):
        raise NotFound("no such execution", f"{execution_id!r} is not an execution id")
    try:
        return records.get_execution(execution_id)
    except ValueError:
        raise NotFound("no such execution",
                       f"no execution {execution_id!r}: see the executions page") from None


def execution(execution_id: str) -> dict:
    record = _record(execution_id)
    run = record["execution"]
    steps = []
    for step in reversed(records.list_steps(execution_id)):  # run order
        fail = step.get("Metadata", {}).get("Fail", {}).get("ErrorMessage")
        cache = step.get("CacheHitResult") or {}
        steps.append({
            "name": step["StepName"], "type": step.get("StepType", ""),
            "status": step.get("StepStatus", ""), "started": _when(step.get("StartTime")),
            "duration": duration(step.get("StartTime"), step.get("EndTime")),
            "cached": cache.get("SourcePipelineExecutionArn", "").rsplit("/", 1)[-1]
            if cache else "",
            "reason": fail or step.get("FailureReason", ""),
            "has_log": bool(step.get("LogPath")),
        })
    return {"id": execution_id, "status": run["PipelineExecutionStatus"],
            "started": _when(run.get("StartTime")),
            "duration": duration(run.get("StartTime"), run.get("EndTime")),
            "reason": run.get("FailureReason", ""), "parameters": run.get("Parameters", []),
            "steps": steps, "running": run["PipelineExecutionStatus"] == "Executing"}


def step_log(execution_id: str, step_name: str) -> str:
    step = _record(execution_id)["steps"].get(step_name)
    if not step or not step.get("LogPath"):
        raise NotFound("no such log", f"execution {execution_id} has no log for {step_name!r}")
    try:
        with open(step["LogPath"], "rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - LOG_BYTES))
            return log.read().decode("utf-8", "replace")
    except OSError as err:
        raise NotFound("no such log", f"cannot read the log of {step_name}: {err}") from None


# deployments ------------------------------------------------------------------------------

# A probe's capture line as capture.py writes it (json.dumps), counted without parsing lines.
PROBE_MARK = json.dumps({"inferenceId": PROBE_PREFIX})[1:-2].encode()


def _count(folder: Path, mark: bytes = b"\n") -> int:
    return sum(path.read_bytes().count(mark) for path in folder.rglob("*.jsonl")) \
        if folder.is_dir() else 0


def traffic(cfg: Config, record: dict, store: LocalStore) -> dict:
    """Requests captured (users' and the staging gate's probes) and refused, counted from the
    endpoint's capture records."""
    if not record.get("capture_uri"):
        return {"requests": None, "probes": None, "refused": None}
    base = store.path(record["capture_uri"]) / (record.get("endpoint_name")
                                                 or cfg.endpoint_name(record["stage"]))
    answered = base / VARIANT
    probes = _count(answered, PROBE_MARK)
    return {"requests": _count(answered) - probes, "probes": probes,
            "refused": _count(base / capture.REFUSED)}


def _gate_result(document: dict | None, at: str) -> dict | None:
    if not document:
        return None
    return {"version": document["ModelPackageVersion"], "time": _when(document[at]),
            "passed": document.get("Passed", True), "checks": document.get("Checks", [])}


def gates() -> dict:
    """The staging gate's last result and its last pass (what promotion takes)."""
    return {"last": _gate_result(deploy.last_gate("staging"), "At"),
            "passed": _gate_result(deploy.passed_gate("staging"), "PassedAt")}


def _latency(gate: dict | None, version) -> str:
    if not gate or gate["version"] != version:
        return ""
    return next((c.get("detail", "") for c in gate["checks"] if c.get("name") == "p95 latency"),
                "")


def endpoint(cfg: Config, stage: str, store: LocalStore | None = None) -> dict:
    store = store or LocalStore()
    gate = gates()["last"]
    try:
        record = lifecycle.status(stage)
    except ValueError as err:
        return {"stage": stage, "status": "stopped", "note": str(err)}
    version = record.get("model_info", {}).get("ModelPackageVersion")
    return {"stage": stage, "status": "InService", "version": version, "url": record["url"],
            "started": _when(record.get("started")), "pid": record["pid"],
            "workers": record.get("workers"), **traffic(cfg, record, store),
            "latency": _latency(gate, version)}


def deployments(cfg: Config) -> dict:
    store = LocalStore()
    return {"endpoints": [endpoint(cfg, stage, store) for stage in STAGES], "gate": gates()}


def running_endpoint(cfg: Config, stage: str) -> dict:
    if problem := stage_problem(stage):
        raise NotFound("no such stage", problem)
    page = endpoint(cfg, stage)
    if page["status"] == "stopped":
        how = "Deploy staging" if stage == "staging" else "Promote to prod"
        raise NotFound(f"the {stage} endpoint is stopped",
                       f"the {stage} endpoint is stopped ({page['note']}). Start it with "
                       f"“{how}” on the deployments page or `mlops deploy {stage}`.")
    return page


# monitoring -------------------------------------------------------------------------------

def monitoring(cfg: Config) -> dict:
    store = LocalStore()
    return {"stages": [{"stage": stage, "runs": monitor.history(stage, cfg=cfg, store=store)}
                       for stage in STAGES]}


def monitoring_file(cfg: Config, stage: str, relative: str) -> Path:
    """A file a monitoring run wrote under the stage's prefix; nothing outside it."""
    if problem := stage_problem(stage):
        raise NotFound("no such stage", problem)
    root = LocalStore().path(monitor.monitoring_uri(cfg, stage)).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound("no such report", f"no monitoring file {relative!r} for {stage}")
    return path
