"""`mlops batch run`: score a CSV locally with the newest approved model, as the schedule does.

The same definition the cloud schedule runs (`model_deploy/batch.py`), run by the local
engine: the input is put in the local store, the Transform step scores it with the
model's serving handlers, and the joined output (each input row followed by its
prediction) and the refused rows are copied next to each other under `--output`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mlops_core import targets
from mlops_core.config import ROOT, Config
from mlops_core.files import content_hash
from mlops_local import warm
from mlops_local.engine import runner
from mlops_local.registry import LocalRegistry
from mlops_local.store import LocalStore
from model_build import definition
from model_deploy import build

OUTPUT_DIR = ROOT / "build" / "batch"


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


def run(config: Config, input_file: Path, output: Path | None = None,
        registry: LocalRegistry | None = None) -> BatchResult:
    """Score `input_file` (CSV rows without header, features in schema order)."""
    input_file = Path(input_file)
    if not input_file.is_file():
        raise BatchError(f"input file not found: {input_file}")
    package = build.newest_approved_package(registry or LocalRegistry(),
                                            config.model_package_group)
    # The transform's workers fork from the jobs' fork server: it imports the libraries on the
    # other core while this process builds or loads the definition.
    warm.prepare()
    store = LocalStore()
    target = targets.local(config, store)
    input_uri = (f"s3://{target.bucket}/{config.project}/batch/input/"
                 f"{content_hash(input_file)}/{input_file.name}")
    store.put_file(input_file, input_uri)
    pipeline, _ = definition.load_or_build(config, target, kind=build.BATCH)
    execution = runner.run(
        pipeline, {"ModelPackageArn": package["ModelPackageArn"], "InputDataUrl": input_uri},
        pipeline_name=config.batch_pipeline_name, region=target.region,
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

