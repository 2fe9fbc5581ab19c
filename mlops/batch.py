"""`mlops batch run`: score a CSV with the newest approved model through the batch pipeline.

The same definition the cloud schedule runs (`model_deploy/batch.py`), run by the local
engine: the input is put in the local store, the Transform step scores it with the
model's serving handlers, and the joined output (each input row followed by its
prediction) and the refused rows are copied next to each other under `--output`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mlops import targets
from mlops.config import ROOT, Config
from mlops.engine import runner
from mlops.registry import LocalRegistry
from mlops.store import LocalStore, content_hash
from model_build import definition
from model_deploy import build

OUTPUT_DIR = ROOT / "build" / "batch"
BATCH = definition.Kind(
    factory="model_deploy.batch:get_batch_pipeline",
    sources=(ROOT / "model_deploy" / "batch.py", definition.PIPELINE_SOURCES / "pipeline.py"),
    output=ROOT / "build" / "batch-definition.json",
)


class BatchError(ValueError):
    """A batch run that cannot start or did not score anything; the message says why."""


@dataclass
class BatchResult:
    package: dict
    execution: dict
    output: Path
    errors: Path | None  # the refused rows, one JSON object per line; None when there are none
    scored: int
    bad: int
    first_errors: list[dict]


def pipeline_name(config: Config) -> str:
    return f"{config.project}-batch"


def run(config: Config, input_file: Path, output: Path | None = None,
        registry: LocalRegistry | None = None) -> BatchResult:
    """Score `input_file` (CSV rows without header, features in schema order)."""
    input_file = Path(input_file)
    if not input_file.is_file():
        raise BatchError(f"input file not found: {input_file}")
    package = build.newest_approved_package(registry or LocalRegistry(),
                                            config.model_package_group)
    store = LocalStore()
    target = targets.local(config, store)
    input_uri = (f"s3://{target.bucket}/{config.project}/batch/input/"
                 f"{content_hash(input_file)}/{input_file.name}")
    store.put_file(input_file, input_uri)
    pipeline, _ = definition.load_or_build(config, target, kind=BATCH)
    execution = runner.run(
        pipeline, {"ModelPackageArn": package["ModelPackageArn"], "InputDataUrl": input_uri},
        pipeline_name=pipeline_name(config), region=target.region,
    )
    if execution["PipelineExecutionStatus"] != "Succeeded":
        raise BatchError(f"batch run {execution['ExecutionId']} failed: "
                         f"{execution.get('FailureReason', 'see its steps')}")
    step = next(s for s in execution["Steps"] if s.get("StepType") == "Transform")
    rows = step["Metadata"]["Rows"]
    scored_uri = f"{step['Outputs'][0]}/{input_file.name}"
    output = Path(output or OUTPUT_DIR / f"{input_file.name}.out")
    errors = output.with_name(f"{output.name}.errors.jsonl")
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store.path(f"{scored_uri}.out"), output)
    errors.unlink(missing_ok=True)  # an earlier run's refusals must not sit beside new output
    if rows["Bad"]:
        shutil.copyfile(store.path(f"{scored_uri}.errors.jsonl"), errors)
    return BatchResult(package, execution, output, errors if rows["Bad"] else None,
                       rows["Scored"], rows["Bad"], rows["FirstErrors"])


def summary(result: BatchResult) -> list[str]:
    """What the command prints: counts, the first refusals, the model, where the files are."""
    package = result.package
    lines = [
        f"scored {result.scored} rows with {package['ModelPackageGroupName']}/"
        f"{package['ModelPackageVersion']} (execution {result.execution['ExecutionId']})",
        f"output: {result.output} (each input row followed by its prediction)",
    ]
    if result.bad:
        lines.append(f"{result.bad} rows refused, listed in {result.errors}; first:")
        lines += [f"  line {e['line']}: {e['message']}" for e in result.first_errors]
    else:
        lines.append("no row refused")
    return lines


def build_definition(config: Config, target: targets.Target) -> str:
    """Build the batch definition for `target`; return the content-addressed key it is
    uploaded under (the batch stack's DefinitionKey)."""
    definition.load_or_build(config, target, force=True, kind=BATCH)
    return f"{config.project}/code/batch/{content_hash(BATCH.output)}/{BATCH.output.name}"


def upload_definition(target: targets.Target, key: str) -> None:
    target.upload(BATCH.output, f"s3://{target.bucket}/{key}")


def deploy_schedule(config: Config, *, sagemaker, cloudformation, s3_client=None,
                    echo=print, **parameters: str) -> dict[str, str]:
    """The aws target: upload the batch definition and create or update `<project>-batch`.

    The same parameters the deploy pipeline's batch action uses (`model_deploy/batch-config.json`
    with the newest approved package); extra keyword arguments override them
    (ScheduleExpression, TransformInstanceType, ...). The deploy pipeline redeploys the stack
    after each production deployment; this is for a project without it, or to change the
    schedule by hand.
    """
    from mlops import infra

    target = targets.aws(config, s3_client)
    package = build.newest_approved_package(sagemaker, config.model_package_group)
    names = build.Names(project=config.project, bucket=target.bucket, role_arn=target.role,
                        kms_key_arn=build.project_kms_key(target))
    key = build_definition(config, target)
    configuration = build.batch_configuration(
        build.read_stage_config(build.HERE / build.BATCH_CONFIG), package, names, key)
    upload_definition(target, key)
    echo(f"{pipeline_name(config)}: scoring with {package['ModelPackageArn']}")
    return infra.deploy(pipeline_name(config), {**configuration["Parameters"], **parameters},
                        cloudformation, template=build.BATCH_TEMPLATE, echo=echo)
