"""`mlops pipeline run` on the local target: the definition JSON run by `mlops_local.engine`
(the project's, or any SageMaker pipeline definition file with `--definition`).

Shows a live step table while the engine works, then a summary: step durations, the
metric against its threshold, the registered version or the Fail message, and where the
artifacts are. `--profile aws` rehearses the definition CodeBuild builds (its Tune step and
trial budget) with this machine's names, saying which it swapped; `mlops pipeline diff`
shows member by member how two profiles' definitions differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from mlops_core import targets
from mlops_core.config import Config, state_dir
from mlops_local.engine import graph, records, runner
from mlops_local.store import LocalStore
from model_build import definition, rehearsal

STATUS_STYLE = {"Succeeded": "green", "Failed": "red", "Executing": "yellow",
                "Skipped": "dim", "Stopped": "red"}


@dataclass
class RunResult:
    execution: dict

    @property
    def succeeded(self) -> bool:
        return self.execution["PipelineExecutionStatus"] == "Succeeded"

    def step(self, name: str) -> dict:
        return next((s for s in self.execution["Steps"] if s["StepName"] == name), {})


class DataFileError(ValueError):
    """The configured data file cannot be used."""


def stage_data(config: Config, target: targets.Target, store: LocalStore) -> str:
    """Put the configured CSV where the pipeline's InputDataUrl points, if it changed."""
    if not config.data_file.is_file():
        raise DataFileError(f"data file not found: {config.data_file} (set [data] file in "
                            "mlops.toml)")
    uri = target.raw_data_uri(config)
    local = store.path(uri)
    data = config.data_file.read_bytes()
    if not local.is_file() or local.read_bytes() != data:
        store.put_bytes(uri, data)
    return uri


def run(config: Config, parameters: dict, console: Console | None = None,
        profile: str = "local") -> RunResult:
    """Run the definition of `profile` (the aws one: a rehearsal) on this machine."""
    console = console or Console()
    store = LocalStore()
    target = targets.local(config, store, profile)
    stage_data(config, target, store)
    with console.status("building the pipeline definition (imports the sagemaker SDK)..."):
        pipeline, reused = definition.load_or_build(config, target)
    console.print(f"definition {'reused' if reused else 'built'}: {definition.DEFINITION_FILE}")
    if target.rehearses:
        console.print(f"rehearsing the {profile} profile's definition on this machine; names "
                      f"swapped ({profile} -> local):", markup=False, soft_wrap=True)
        for swap in rehearsal.swaps(config, target):
            console.print(f"  {swap.line()}", markup=False, soft_wrap=True)
    result = _execute(pipeline, parameters, config.pipeline_name, target.region, console)
    console.print(summary(result, config))
    return result


def aws_offline_root() -> Path:
    """Where the diffs' offline aws builds upload: a local stand-in for the aws bucket."""
    return state_dir() / "aws-offline"


def diff(config: Config, profile: str, kind: definition.Kind) -> rehearsal.Comparison:
    """How the `profile` definition on the local target differs from the aws target's (built
    offline, with placeholder names where none is configured)."""
    store, aws_store = LocalStore(), LocalStore(aws_offline_root())
    return rehearsal.compare(
        config, (targets.local(config, store, profile), rehearsal.stored(store)),
        (targets.aws_offline(config, aws_store), rehearsal.stored(aws_store)), kind)


class DefinitionFileError(ValueError):
    """The --definition file cannot be read as a pipeline definition."""


def run_definition(path: Path, parameters: dict, config: Config,
                   console: Console | None = None) -> RunResult:
    """Run a SageMaker pipeline definition file (checked as a built one is) as pipeline
    `<file name>`."""
    console = console or Console()
    try:
        pipeline = json.loads(Path(path).read_text())
    except OSError as err:
        raise DefinitionFileError(f"cannot read the definition {path}: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DefinitionFileError(f"{path} is not a JSON pipeline definition: {err}") from None
    graph.build(pipeline)  # the engine's own checks first: the service model's assume a graph
    definition.check(pipeline, str(path))
    region = targets.local(config, LocalStore()).region
    result = _execute(pipeline, parameters, Path(path).stem, region, console)
    console.print(summary(result))
    return result


def _execute(pipeline: dict, parameters: dict, pipeline_name: str, region: str,
             console: Console) -> RunResult:
    """Run the definition with the engine, showing a live step table."""
    steps: dict[str, dict] = {}
    with Live(_progress(steps), console=console, refresh_per_second=8,
              transient=not console.is_terminal) as live:

        def on_step_event(name: str, status: str, record: dict) -> None:
            steps[name] = record
            live.update(_progress(steps))

        execution = runner.run(pipeline, parameters, pipeline_name=pipeline_name,
                               on_step_event=on_step_event, region=region)
    return RunResult(execution)


def _duration(step: dict) -> str:
    if not step.get("StartTime"):
        return ""
    end = datetime.fromisoformat(step["EndTime"]) if step.get("EndTime") else None
    seconds = ((end or datetime.now(datetime.fromisoformat(step["StartTime"]).tzinfo))
               - datetime.fromisoformat(step["StartTime"])).total_seconds()
    return f"{seconds:.1f}s"


def _progress(steps: dict[str, dict]) -> Table:
    table = Table(title="pipeline steps", title_justify="left")
    for column in ("step", "type", "status", "time", "note"):
        table.add_column(column)
    for step in steps.values():
        status = step.get("StepStatus", "")
        note = "cached" if step.get("CacheHitResult") else step.get("FailureReason", "")
        if step.get("StepType") == "Tuning" and status == "Succeeded":
            note = f"{_tuning_note(step['Properties'])}{', cached' if note else ''}"
        table.add_row(step["StepName"], step.get("StepType", ""),
                      f"[{STATUS_STYLE.get(status, '')}]{status}[/]", _duration(step),
                      note.splitlines()[0] if note else "")
    return table


def _tuning_note(properties: dict) -> str:
    best = properties["BestTrainingJob"]
    metric = best["FinalHyperParameterTuningJobObjectiveMetric"]
    counts = properties["TrainingJobStatusCounters"]
    return (f"{counts['Completed']} trials ok, {counts['NonRetryableError']} failed; best "
            f"{metric['MetricName']}={metric['Value']:.4g} {best['TunedHyperParameters']}")


def _metric(result: RunResult, config: Config) -> str | None:
    """The evaluation metric against the threshold the execution used."""
    evaluate = result.step("Evaluate")
    outputs = evaluate.get("Outputs") or []
    if evaluate.get("StepStatus") != "Succeeded" or not outputs:
        return None
    report = json.loads(LocalStore().path(f"{outputs[0]}/evaluation.json").read_text())
    value = report["regression_metrics"][config.metric]["value"]
    threshold = next(float(p["Value"]) for p in result.execution["Parameters"]
                     if p["Name"] == "MetricThreshold")
    verdict = "meets" if value <= threshold else "does not meet"
    return f"test {config.metric} {value:.4f} {verdict} the threshold {threshold:g}"


def summary(result: RunResult, config: Config | None = None) -> Group:
    """The run's steps and outcome; with the project's `config`, its metric too."""
    execution = result.execution
    status = execution["PipelineExecutionStatus"]
    lines = [_progress({s["StepName"]: s for s in execution["Steps"]}),
             f"execution {execution['ExecutionId']}: "
             f"[{STATUS_STYLE.get(status, '')}]{status}[/]"]
    metric = _metric(result, config) if config else None
    if metric:
        lines.append(metric)
    register = result.step("RegisterModel")
    if register.get("StepStatus") == "Succeeded":
        arn = register["Properties"]["ModelPackageArn"]
        lines.append(f"registered {arn.split('/', 1)[1]} as "
                     f"{_approval(execution)} - approve it with "
                     f"`mlops registry approve {arn.rsplit('/', 1)[1]}`")
    if execution.get("FailureReason"):
        lines.append(f"[red]{execution['FailureReason']}[/red]")
        failed = next((s for s in execution["Steps"]
                       if s.get("StepStatus") in ("Failed", "Stopped")), {})
        if failed.get("LogPath"):
            lines.append(f"log: {failed['LogPath']}")
    lines.append(f"artifacts: {state_dir() / 's3'} (local store), job directories: "
                 f"{execution.get('JobsDir', '')}")
    return Group(*lines)


def _approval(execution: dict) -> str:
    return next((p["Value"] for p in execution["Parameters"]
                 if p["Name"] == "ModelApprovalStatus"), "PendingManualApproval")


def executions_table(config: Config) -> Table:
    table = Table(title=f"executions of {config.pipeline_name}", title_justify="left")
    for column in ("execution", "status", "started (UTC)", "reason"):
        table.add_column(column)
    for execution in records.list_executions(config.pipeline_name):
        status = execution["PipelineExecutionStatus"]
        reason = (execution.get("FailureReason") or "").splitlines()
        table.add_row(execution["ExecutionId"], f"[{STATUS_STYLE.get(status, '')}]{status}[/]",
                      execution["StartTime"][:19].replace("T", " "), reason[0] if reason else "")
    return table


def steps_table(execution_id: str) -> Table:
    return _progress({s["StepName"]: s for s in records.list_steps(execution_id)})
