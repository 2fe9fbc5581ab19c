"""The aws target of `mlops pipeline`: upsert and start against moto's SageMaker."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from mlops_core import config as project_config
from mlops_core import targets, templates
from mlops_core.config import ROOT
from model_build import definition, sagemaker_pipeline

ROLE = "arn:aws:iam::123456789012:role/abalone-sagemaker"


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # undone even when the set-up fails
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                            "MLOPS_BUCKET": "abalone-artifacts", "MLOPS_ROLE_ARN": ROLE,
                            "MLOPS_HOME": str(tmp_path_factory.mktemp("state"))}.items():
            patch.setenv(name, value)
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="abalone-artifacts")
            config = project_config.load()
            target = targets.aws(config, s3_client=s3)
            pipeline, _ = definition.load_or_build(config, target, force=True)
            yield config, target, pipeline, s3, boto3.client("sagemaker", region_name="us-east-1")


def test_aws_definition_uploads_code_to_the_artifact_bucket(aws):
    config, target, pipeline, s3, _ = aws
    text = json.dumps(pipeline)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="abalone-artifacts")["Contents"]}
    assert any(key.endswith("/preprocess.py") for key in keys)
    assert any(key.endswith(("/train.py", "/sourcedir.tar.gz")) for key in keys)
    for key in keys:
        assert key.startswith(f"{config.project}/code/"), key
    assert "s3://abalone-artifacts/" in text and "mlops-local" not in text
    assert ROLE in text


def test_upsert_creates_then_updates(aws):
    config, target, pipeline, _, sagemaker = aws
    arn = sagemaker_pipeline.upsert(sagemaker, config.pipeline_name, pipeline, target.role)
    described = sagemaker.describe_pipeline(PipelineName=config.pipeline_name)
    assert described["PipelineArn"] == arn
    assert json.loads(described["PipelineDefinition"]) == pipeline
    changed = {**pipeline, "Metadata": {"note": "second upsert"}}
    assert sagemaker_pipeline.upsert(sagemaker, config.pipeline_name, changed, target.role) == arn
    described = sagemaker.describe_pipeline(PipelineName=config.pipeline_name)
    assert json.loads(described["PipelineDefinition"])["Metadata"] == {"note": "second upsert"}


def test_start_passes_parameters(aws):
    config, target, pipeline, _, sagemaker = aws
    sagemaker_pipeline.upsert(sagemaker, config.pipeline_name, pipeline, target.role)
    execution_arn = sagemaker_pipeline.start(sagemaker, config.pipeline_name,
                                             {"MetricThreshold": 2.5})
    parameters = sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution_arn)["PipelineParameters"]
    assert {"Name": "MetricThreshold", "Value": "2.5"} in parameters


def test_wait_reports_until_the_execution_ends():
    """moto never ends an execution, so the client here scripts one that does."""
    class Client:
        def __init__(self):
            self.statuses = iter(["Executing", "Executing", "Failed"])

        def describe_pipeline_execution(self, PipelineExecutionArn):  # noqa: N803
            return {"PipelineExecutionStatus": next(self.statuses),
                    "FailureReason": "Test rmse 2.4 is above the threshold 2.2"}

        def get_paginator(self, name):
            class Pages:
                def paginate(self, **_):
                    return [{"PipelineExecutionSteps": [{"StepName": "Train",
                                                        "StepStatus": "Succeeded"}]}]
            return Pages()

    reports, sleeps = [], []
    execution = sagemaker_pipeline.wait(Client(), "arn", lambda s, steps: reports.append(s),
                                        sleep=sleeps.append)
    assert execution["PipelineExecutionStatus"] == "Failed"
    assert reports == ["Executing", "Failed"]  # unchanged polls are not reported again
    assert len(sleeps) == 2


def test_wait_gives_up_with_a_message_and_fits_the_codebuild_timeout():
    """An execution that never ends: the wait stops after its minutes, saying how to follow or
    stop it, before the model-build CodeBuild project's own timeout would kill the build."""
    class Client:
        def describe_pipeline_execution(self, PipelineExecutionArn):  # noqa: N803
            return {"PipelineExecutionStatus": "Executing"}

        def get_paginator(self, name):
            class Pages:
                def paginate(self, **_):
                    return [{"PipelineExecutionSteps": []}]
            return Pages()

    now = [0.0]
    with pytest.raises(sagemaker_pipeline.WaitTimeout, match="still Executing after 2 minutes"):
        sagemaker_pipeline.wait(Client(), "arn:exec", lambda s, steps: None, poll_seconds=30,
                                minutes=2, sleep=lambda s: now.__setitem__(0, now[0] + s),
                                clock=lambda: now[0])
    assert now[0] <= 120
    build = templates.load(ROOT / "cloudformation" / "project.yml")["Resources"][
        "ModelBuildProject"]["Properties"]
    assert sagemaker_pipeline.WAIT_MINUTES < build["TimeoutInMinutes"]
