"""Names, layouts and limits that more than one part of the project uses, stated once."""

from __future__ import annotations

# Where a run goes: this machine, or the AWS account (mlops_core.targets).
TARGETS = ("local", "aws")
# The deployment stages, in promotion order: each is one stack of cloudformation/endpoint.yml.
STAGES = ("staging", "prod")


def stage_problem(stage: str) -> str | None:
    """Why `stage` is not one of STAGES, or None when it is."""
    if stage in STAGES:
        return None
    return f"there is no stage {stage!r}; the stages are {', '.join(STAGES)}"


# SageMaker real-time endpoints refuse request payloads larger than this (InvokeEndpoint).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# InvokeEndpoint's InferenceId header: the endpoint captures it and answers it.
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
# The SageMaker scikit-learn image every job, the endpoint and batch transform run in,
# unless [aws] sklearn_framework_version says otherwise.
SKLEARN_FRAMEWORK_VERSION = "1.4-2"
# The production variant of every endpoint, and its folder in data capture.
VARIANT = "AllTraffic"


def capture_uri(bucket: str, project: str, stage: str, model_version: int | str) -> str:
    """Where a stage's endpoint captures traffic for one model version, as the endpoint
    template sets its DestinationS3Uri (docs/contracts.md)."""
    return f"s3://{bucket}/{project}/datacapture/{stage}/v{model_version}"
