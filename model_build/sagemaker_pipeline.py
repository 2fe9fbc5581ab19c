"""The aws target of `mlops pipeline`: upsert the definition, start it, follow it to the end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

TERMINAL = {"Succeeded", "Failed", "Stopped"}
# How long `--wait` follows an execution: inside the model-build CodeBuild project's 120-minute
# timeout (cloudformation/project.yml), so the build ends with this message, not a kill.
WAIT_MINUTES = 100


class WaitTimeout(ValueError):
    """The execution did not end within the wait; it goes on running in SageMaker."""


def upsert(client, name: str, definition: dict, role_arn: str, description: str = "") -> str:
    """Create the pipeline, or update it when it exists; returns its ARN."""
    request = {"PipelineName": name, "PipelineDefinition": json.dumps(definition),
               "RoleArn": role_arn, "PipelineDescription": description}
    if exists(client, name):
        return client.update_pipeline(**request)["PipelineArn"]
    return client.create_pipeline(**request)["PipelineArn"]


def exists(client, name: str) -> bool:
    pages = client.get_paginator("list_pipelines").paginate(PipelineNamePrefix=name)
    return any(p["PipelineName"] == name for page in pages for p in page["PipelineSummaries"])


def start(client, name: str, parameters: dict | None = None) -> str:
    """Start an execution with parameter overrides; returns the execution ARN."""
    return client.start_pipeline_execution(
        PipelineName=name,
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in (parameters or {}).items()],
    )["PipelineExecutionArn"]


def steps(client, execution_arn: str) -> list[dict]:
    pages = client.get_paginator("list_pipeline_execution_steps").paginate(
        PipelineExecutionArn=execution_arn
    )
    return [step for page in pages for step in page.get("PipelineExecutionSteps", [])]


def wait(
    client,
    execution_arn: str,
    report: Callable[[str, list[dict]], None],
    poll_seconds: float = 30,
    minutes: float = WAIT_MINUTES,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Poll until the execution ends, reporting its status and steps each time they change;
    WaitTimeout after `minutes`."""
    seen, deadline = None, clock() + minutes * 60
    while True:
        execution = client.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        status = execution["PipelineExecutionStatus"]
        current = steps(client, execution_arn)
        snapshot = (status, [(s["StepName"], s.get("StepStatus")) for s in current])
        if snapshot != seen:
            report(status, current)
            seen = snapshot
        if status in TERMINAL:
            return execution
        if clock() + poll_seconds > deadline:
            raise WaitTimeout(
                f"pipeline execution {execution_arn} is still {status} after {minutes:g} "
                "minutes; it goes on in SageMaker: follow it in Studio, or stop it with `aws "
                f"sagemaker stop-pipeline-execution --pipeline-execution-arn {execution_arn}`")
        sleep(poll_seconds)
