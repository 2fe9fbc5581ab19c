"""Processing jobs: inputs from the local store, the entrypoint as a process, outputs uploaded."""

from __future__ import annotations

from mlops_local.engine.errors import StepFailure
from mlops_local.engine.job import Job
from mlops_local.store import StoreError


def _download_inputs(arguments: dict, job: Job) -> None:
    for item in arguments.get("ProcessingInputs", []) or []:
        name = item.get("InputName", "?")
        source = item.get("S3Input")
        if not source:
            raise StepFailure(f"input {name}: only S3Input inputs run locally")
        try:
            job.store.download(source["S3Uri"], job.container(source["LocalPath"]))
        except StoreError as err:
            raise StepFailure(f"input {name}: {err}") from None


def _outputs(arguments: dict) -> list[dict]:
    return (arguments.get("ProcessingOutputConfig") or {}).get("Outputs", []) or []


def run_processing(arguments: dict, job: Job) -> dict:
    """Run a resolved CreateProcessingJob request; its DescribeProcessingJob-shaped properties."""
    app = arguments.get("AppSpecification") or {}
    entrypoint = app.get("ContainerEntrypoint")
    if not entrypoint:
        raise StepFailure(
            f"AppSpecification has no ContainerEntrypoint; the local engine runs user code, "
            f"not the image {app.get('ImageUri', '?')}"
        )
    command = job.python_command(list(entrypoint) + list(app.get("ContainerArguments") or []))
    _download_inputs(arguments, job)
    for output in _outputs(arguments):
        job.container(output["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)
    (job.opt_ml / "output").mkdir(parents=True, exist_ok=True)
    environment = {k: job.map(v) for k, v in (arguments.get("Environment") or {}).items()}
    exit_code = job.run(command, environment)
    if exit_code != 0:
        raise StepFailure(job.failure_reason(exit_code, job.opt_ml / "output" / "message"))
    # Only a job that succeeded uploads; upload_dir stages each prefix, then renames it.
    for output in _outputs(arguments):
        target = output["S3Output"]
        job.store.upload_dir(job.container(target["LocalPath"]), target["S3Uri"])
    return {
        **arguments,
        "ProcessingJobName": job.name,
        "ProcessingJobArn": job.arn("processing-job"),
        "ProcessingJobStatus": "Completed",
        "ExitMessage": "",
    }
